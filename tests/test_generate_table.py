"""The declared-table generator: every kind reads back cleanly, determinism and chunk-size independence, each
cell's planted effect, the oracle against the preparation's test rows, a learnable but not saturated signal, time
order, the CLI."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ctr.config import load_config
from ctr.data.generate import oracle_auc, oracle_path, read_oracle
from ctr.data.generate_table import (
    DAYS,
    START_TIME,
    build_table_model,
    file_columns,
    generate_table,
    main,
    planted_logit,
    value_text,
)
from ctr.data.prepare import prepare_data, table_spec
from ctr.data.split import assign_splits
from ctr.data.table import KINDS, TableSpec, parse_table_spec, read_table

MULTI = "multi_valued" in KINDS  # the reader may not read multi-valued columns yet: then they are left out
SPLIT = [0.8, 0.1, 0.1]
SPLIT_SEED = 2018


def preset(name: str, *overrides: str) -> TableSpec:
    return table_spec(load_config(overrides=[f"data.dataset={name}", *overrides]).data)


def every_kind(fmt: str = "csv", **data: object) -> dict:
    """A data: block with a column of every kind, a label with two negative values and an undeclared group."""
    columns: dict = {
        "row_id": "ignore",
        "count": {"kind": "numeric", "transform": "log2_bucket"},
        "amount": "numeric",
        "site": "categorical",
        "ad": "categorical",
        "device": "categorical",
        "when": {"kind": "datetime", "format": "%Y-%m-%d %H:%M:%S"},
        "epoch": {"kind": "datetime", "format": "unix", "derive": ["hour"]},
    }
    if MULTI:
        columns["history"] = {"kind": "multi_valued", "separator": "|", "max_len": 5}
    label = {"name": "y", "positive": ["yes"], "negative": ["no", "maybe"]}
    return {"format": fmt, "label": label, "columns": columns, "group": "user", "min_count": 1, **data}


def parse(data: dict) -> TableSpec:
    return parse_table_spec(data, min_count=1, numeric_transform="log_standard", quantile_buckets=8)


def cells(path: Path, spec: TableSpec) -> dict[str, np.ndarray]:
    """Every column of a generated file as text ("" where missing), read with pyarrow alone."""
    if spec.format == "parquet":
        table = pq.read_table(path)
    else:
        names = list(spec.column_names) or None
        convert = pacsv.ConvertOptions(column_types={n: pa.string() for n in file_columns(spec)})
        table = pacsv.read_csv(
            str(path),
            pacsv.ReadOptions(column_names=names),
            pacsv.ParseOptions(delimiter=spec.delimiter),
            convert,
        )
    assert table.column_names == file_columns(spec)
    return {
        n: pc.fill_null(pc.cast(table.column(n), pa.string()), "").to_numpy(zero_copy_only=False)
        for n in table.column_names
    }


def read_back(path: Path, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """(labels, lines) of the reader, which raises on any bad row; every batch has each multi-valued column."""
    batches = list(read_table(path, spec, min_rows=1000, block_size=1 << 16))
    n_multi = sum(c.kind == "multi_valued" for c in spec.columns)
    assert all(len(b.multi) == n_multi for b in batches)
    return np.concatenate([b.label for b in batches]), np.concatenate([b.lines for b in batches])


def ranks(texts, key: int, vocab: int) -> np.ndarray:
    """The ranks whose value text is each of ``texts`` (-1 for ""; KeyError for a value outside the vocabulary)."""
    lookup = {t.decode(): r for r, t in enumerate(value_text(key, np.arange(vocab)))}
    return np.array([lookup[t] if t else -1 for t in texts], dtype=np.int64)


# ------------------------------------------------------------------------------------------ reading back cleanly


@pytest.mark.parametrize("name", ["avazu", "frappe", "taobao_ad"])
def test_presets_read_back_without_a_bad_row(tmp_path: Path, name: str) -> None:
    """Every declared column is in the file; the reader takes every row (it raises on a bad one) with the labels
    the oracle holds, written as the first positive and first negative value, at lines 2.. after the header."""
    spec = preset(name)
    path = generate_table(tmp_path / f"{name}.csv", spec, 3000, seed=4)
    labels, lines = read_back(path, spec)
    np.testing.assert_array_equal(lines, np.arange(2, 3002))
    np.testing.assert_array_equal(labels, read_oracle(path)[0])
    assert set(cells(path, spec)[spec.label]) == {spec.positive[0], spec.negative[0]}
    assert 0.2 < labels.mean() < 0.3  # the intercept is calibrated to a 25% click rate


@pytest.mark.parametrize(
    "name, data",
    [
        ("t.csv", {}),
        ("t.tsv.gz", {"delimiter": "\t"}),
        ("t.txt", {"header": False, "extra_columns": "ignore"}),
        ("t.parquet", {"format": "parquet"}),
    ],
)
def test_every_kind_reads_back_and_holds_what_its_column_model_says(tmp_path: Path, name: str, data: dict) -> None:
    """A column of every kind, as CSV, gzipped TSV, headerless CSV (with an undeclared column, left empty) and
    Parquet: no bad row; the row id counts rows; numeric and categorical cells are missing at their model's rate;
    numbers are heavy-tailed; categorical values come from their vocabulary, most often the first ranks; both
    datetime columns hold the same event time, in order within the generated days; multi-valued cells hold
    0..max_len values of their vocabulary."""
    raw = every_kind(**data)
    if data.get("header") is False:
        raw["column_names"] = ["y", "user", "spare", *raw["columns"]]
    spec = parse(raw)
    path = generate_table(tmp_path / name, spec, 4000, seed=9, chunk_rows=1500)
    assert len(read_back(path, spec)[0]) == 4000
    text = cells(path, spec)
    model = build_table_model(spec, 9)
    n = 4000
    np.testing.assert_array_equal(text["row_id"].astype(np.int64), np.arange(1, n + 1))
    if "spare" in text:
        assert (text["spare"] == "").all()
    rates = []
    for c in model.columns:
        if c.kind in ("numeric", "categorical", "group"):
            missing = (text[c.name] == "").mean()
            assert abs(missing - c.missing_rate) < 4 * np.sqrt(c.missing_rate * (1 - c.missing_rate) / n) + 1e-9
            rates.append(c.missing_rate)
        if c.kind == "numeric":
            x = text[c.name][text[c.name] != ""].astype(np.float64)
            assert x.min() >= 0 and x.max() > 10 * np.median(x) > 0
        if c.kind in ("categorical", "group"):
            r = ranks(text[c.name], c.key, c.vocab)
            present = r[r >= 0]
            assert np.mean(present < max(c.vocab // 10, 1)) > 0.5  # Zipf: the first tenth of the values dominates
    assert any(rate > 0 for rate in rates)  # this seed exercises missing cells
    epoch = text["epoch"].astype(np.int64)
    when = [calendar.timegm(time.strptime(t, "%Y-%m-%d %H:%M:%S")) for t in text["when"]]
    np.testing.assert_array_equal(epoch, when)
    assert START_TIME <= epoch.min() and epoch.max() < START_TIME + DAYS * 86400
    assert np.all(np.diff(epoch) >= 0)
    if MULTI:
        history = model.column("history")
        lengths = []
        for cell in text["history"]:
            values = cell.split("|") if cell else []
            lengths.append(len(values))
            ranks(values, history.key, history.vocab)
        assert min(lengths) == 0 and max(lengths) == history.max_len == 5


# ------------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_seed_same_bytes_whatever_chunk_size_other_seed_other_bytes(tmp_path: Path, fmt: str) -> None:
    """Over two generation blocks: the file and its sidecar do not depend on the chunk size; another seed gives
    another file."""
    spec = parse(every_kind(fmt))
    rows = 20_000
    paths = [generate_table(tmp_path / f"{c}.{fmt}", spec, rows, seed=3, chunk_rows=c) for c in (rows, 4099, 16385)]
    other = generate_table(tmp_path / f"other.{fmt}", spec, rows, seed=4)
    for p in paths[1:]:
        assert p.read_bytes() == paths[0].read_bytes()
        assert oracle_path(p).read_bytes() == oracle_path(paths[0]).read_bytes()
    assert other.read_bytes() != paths[0].read_bytes()
    assert not np.array_equal(read_oracle(other)[1], read_oracle(paths[0])[1])


# ----------------------------------------------------------------------------------------- the planted effects


def test_the_oracle_probability_is_the_planted_model_of_the_written_cells(tmp_path: Path) -> None:
    """Parsing the file's text back into values and scoring them with the planted model gives each row's oracle
    probability exactly: the cells written are the values the labels were drawn from (rounded decimals, value
    texts, missing cells, times, value lists)."""
    spec = parse(every_kind())
    path = generate_table(tmp_path / "t.csv", spec, 3000, seed=21)
    model = build_table_model(spec, 21)
    text = cells(path, spec)
    rows: dict = {"row": text["row_id"].astype(np.int64) - 1, "time": text["epoch"].astype(np.int64)}
    for c in model.columns:
        if c.kind == "numeric":
            rows[c.name, "missing"] = text[c.name] == ""
            rows[c.name, "value"] = np.where(text[c.name] == "", "0", text[c.name]).astype(np.float64)
        elif c.kind in ("categorical", "group"):
            r = ranks(text[c.name], c.key, c.vocab)
            rows[c.name, "missing"], rows[c.name, "rank"] = r < 0, np.maximum(r, 0)
        elif c.kind == "multi_valued":
            lists = [cell.split(c.separator) if cell else [] for cell in text[c.name]]
            rows[c.name, "len"] = np.array([len(v) for v in lists])
            padded = [v for values in lists for v in values + [""] * (c.max_len - len(values))]
            rows[c.name, "rank"] = np.maximum(ranks(padded, c.key, c.vocab), 0).reshape(len(lists), c.max_len)
    probs = read_oracle(path)[1]
    np.testing.assert_allclose(1 / (1 + np.exp(-planted_logit(model, rows))), probs, rtol=1e-12)
    assert 0.05 < probs.std()  # the rows differ: the model has signal


def test_a_datetime_column_plants_an_hour_of_day_and_a_weekend_effect(tmp_path: Path) -> None:
    """A table with a datetime column only: each row's probability is the calibrated intercept plus the daily
    cosine of its hour plus the weekend effect on Saturdays and Sundays, recomputed from the written text."""
    spec = parse({"format": "csv", "label": "click", "columns": {"hour": {"kind": "datetime", "format": "%y%m%d%H"}}})
    path = generate_table(tmp_path / "t.csv", spec, 2000, seed=5, time_order="shuffled")
    model = build_table_model(spec, 5)
    c = model.column("hour")
    stamps = [time.strptime(t, "%y%m%d%H") for t in cells(path, spec)["hour"]]
    hour = np.array([s.tm_hour for s in stamps])
    weekend = np.array([s.tm_wday >= 5 for s in stamps])
    logit = model.bias + c.hour_amp * np.cos(2 * np.pi * (hour - c.hour_peak) / 24) + c.weekend * weekend
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), read_oracle(path)[1], rtol=1e-12)
    assert len(set(hour)) == 24 and weekend.any() and not weekend.all()
    assert c.hour_amp >= 0.3  # the daily cycle moves the logit by at least 0.6 from trough to peak


@pytest.mark.skipif(not MULTI, reason="the reader has no multi_valued kind")
def test_a_multi_valued_column_plants_the_mean_effect_of_its_values(tmp_path: Path) -> None:
    """A table with a multi-valued column only: each row's probability is the intercept plus the mean effect of
    the values its cell lists (the empty-list effect for an empty cell)."""
    columns = {"seq": {"kind": "multi_valued", "separator": "^", "max_len": 4}}
    spec = parse({"format": "csv", "label": "click", "columns": columns})
    path = generate_table(tmp_path / "t.csv", spec, 2000, seed=6)
    model = build_table_model(spec, 6)
    c = model.column("seq")
    logit = []
    for cell in cells(path, spec)["seq"]:
        values = cell.split("^") if cell else []
        r = ranks(values, c.key, c.vocab)
        logit.append(model.bias + (c.main[r % len(c.main)].mean() if len(r) else c.missing_effect))
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(logit))), read_oracle(path)[1], rtol=1e-12)


# --------------------------------------------------------------------------------- preparation and the oracle


def one_hot(prepared, split: str) -> tuple[sparse.csr_matrix, np.ndarray]:
    """One-hot id fields and dense fields (value and missing flag) of a prepared split, and its labels."""
    table = pq.read_table(prepared.path(split))
    n = table.num_rows
    blocks = []
    for f in prepared.schema.fields:
        if f.encoding == "id":
            ids = table.column(f.name).to_numpy()
            blocks.append(sparse.csr_matrix((np.ones(n), (np.arange(n), ids)), shape=(n, f.vocab_size)))
        elif f.encoding == "dense":
            x = table.column(f.name).to_numpy(), table.column(f"{f.name}__missing").to_numpy()
            blocks.append(sparse.csr_matrix(np.stack(x, axis=1).astype(np.float64)))
    return sparse.hstack(blocks).tocsr(), table.column("label").to_numpy()


@pytest.mark.parametrize("name, fmt", [("avazu", "csv"), ("taobao_ad", "parquet")])
def test_prepared_test_rows_are_the_oracles_and_the_signal_is_learnable(tmp_path: Path, name: str, fmt: str) -> None:
    """The preparation's test split holds the oracle's test rows (by the line numbers the reader gives them), so
    the oracle AUC is the planted probabilities' AUC on them; it is well above chance, and a logistic regression
    on one-hot fields learns part of the signal: its test AUC is above chance and below the oracle's (the
    pairwise interactions are beyond it)."""
    suffix = ".csv" if fmt == "csv" else ".parquet"
    overrides = [f"data.format={fmt}"]
    spec = preset(name, *overrides)
    path = generate_table(tmp_path / f"raw{suffix}", spec, 8000, seed=12)
    cfg = load_config(
        overrides=[f"data.dataset={name}", *overrides, f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}"]
    ).data
    prepared = prepare_data(cfg, progress=False)
    labels, probs = read_oracle(path)
    first = 2 if fmt == "csv" else 1
    test = assign_splits(np.arange(first, first + len(labels)), cfg.split_seed, cfg.split) == 2
    x_train, y_train = one_hot(prepared, "train")
    x_test, y_test = one_hot(prepared, "test")
    np.testing.assert_array_equal(y_test, labels[test])
    oracle = oracle_auc(path, cfg.split_seed, cfg.split)
    assert oracle == pytest.approx(roc_auc_score(labels[test], probs[test]), rel=1e-12)
    lr = LogisticRegression(C=0.3, max_iter=2000).fit(x_train, y_train)
    lr_auc = roc_auc_score(y_test, lr.predict_proba(x_test)[:, 1])
    assert oracle > 0.75
    assert 0.55 < lr_auc < oracle - 0.03


def test_no_oracle_for_a_table_file_with_other_labels(tmp_path: Path) -> None:
    """A table's sidecar is ignored beside rows it does not describe, and regenerating without it removes it."""
    spec = preset("frappe")
    path = generate_table(tmp_path / "a.csv", spec, 500, seed=1)
    other = generate_table(tmp_path / "b.csv", spec, 500, seed=2, oracle=False)
    assert read_oracle(path) is not None and read_oracle(other) is None
    oracle_path(other).write_bytes(oracle_path(path).read_bytes())
    assert read_oracle(other) is None and oracle_auc(other, SPLIT_SEED, SPLIT) is None
    generate_table(path, spec, 500, seed=1, oracle=False)
    assert not oracle_path(path).exists()


# ----------------------------------------------------------------------------------------------- time order


def test_sorted_rows_split_by_time_put_the_last_rows_in_test_shuffled_rows_are_not_in_order(tmp_path: Path) -> None:
    """With rows in time order a temporal split's test rows are the file's last rows; shuffled rows draw their
    times independently, so they are not in order."""
    data = every_kind(split_by_time="when")
    spec = parse(data)
    path = generate_table(tmp_path / "sorted.csv", spec, 3000, seed=8)
    cfg = load_config(extra_layers=[{"data": {**data, "path": str(path), "cache_dir": str(tmp_path / "cache")}}]).data
    prepared = prepare_data(cfg, progress=False)
    test_labels = pq.read_table(prepared.path("test"), columns=["label"]).column("label").to_numpy()
    assert 200 < len(test_labels) < 400
    np.testing.assert_array_equal(test_labels, read_oracle(path)[0][-len(test_labels) :])
    shuffled = generate_table(tmp_path / "shuffled.csv", spec, 3000, seed=8, time_order="shuffled")
    epoch = cells(shuffled, spec)["epoch"].astype(np.int64)
    assert np.any(np.diff(epoch) < 0)
    assert START_TIME <= epoch.min() and epoch.max() < START_TIME + DAYS * 86400


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_preset_or_a_configs_table(tmp_path: Path) -> None:
    """``--dataset`` resolves the preset's declaration; ``--config`` a file's data: block; Criteo's format is
    not a declared table; bad arguments are errors."""
    main([str(tmp_path / "cli.csv"), "--dataset", "frappe", "--rows", "300", "--seed", "3", "--quiet"])
    direct = generate_table(tmp_path / "direct.csv", preset("frappe"), 300, seed=3)
    assert (tmp_path / "cli.csv").read_bytes() == direct.read_bytes()
    config = tmp_path / "data.yaml"
    config.write_text(
        "data:\n  format: parquet\n  label: {name: clicked, positive: ['t'], negative: ['f']}\n"
        "  columns: {page: categorical, price: numeric, ts: {kind: datetime, format: unix}}\n"
    )
    out = tmp_path / "cli.parquet"
    main([str(out), "--config", str(config), "--rows", "200", "--quiet", "--time-order", "shuffled"])
    spec = table_spec(load_config([config]).data)
    assert len(read_back(out, spec)[0]) == 200 and pq.ParquetFile(out).schema_arrow.names == file_columns(spec)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.txt"), "--dataset", "criteo", "--quiet"])
    with pytest.raises(ValueError):
        generate_table(tmp_path / "x.csv", spec, -1)
    with pytest.raises(ValueError):
        generate_table(tmp_path / "x.csv", spec, 10, time_order="random")
