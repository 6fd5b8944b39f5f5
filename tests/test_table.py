"""Declared tables (CSV/TSV/Parquet): what the reader returns column by column, bad input, preparation round trips."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _tiny import config_section

from ctr.data.criteo import BadRowReport, KeyCodec
from ctr.data.encoders import FIRST_ID, MISSING_ID, OOV_ID, HashEncoder
from ctr.data.loader import load_split
from ctr.data.prepare import encode_raw, prepare_data
from ctr.data.table import parse_table_spec, read_table
from ctr.errors import DataError

HEADER = "id,click,when,price,site,device"
ROWS = [
    "1,0,14102100,3.5,a,phone",
    "2,1,14102113,,bb,tablet",  # price missing
    "3,0,14102523,-2,,phone",  # site missing; 2014-10-25 is a Saturday
    "4,1,,100,a,desktop-with-a-long-name",  # when missing
]
COLUMNS = {
    "id": "ignore",
    "when": {"kind": "datetime", "format": "%y%m%d%H"},
    "price": {"kind": "numeric", "transform": "log_standard"},
    "site": "categorical",
    "device": {"kind": "categorical", "buckets": 5},
}


def csv_data(**changes: object):
    """The default data config declaring a CSV table (``COLUMNS``, label ``click``, min count 1), with changes."""
    data = config_section("data", format="csv", label={"name": "click"}, columns=COLUMNS, min_count=1)
    return dataclasses.replace(data, **changes)


def spec(**changes: object):
    data = csv_data(**changes)
    return parse_table_spec(
        data, min_count=data.min_count, numeric_transform=data.numeric_transform, quantile_buckets=data.quantile_buckets
    )


def write(path: Path, lines: list[str], header: str | None = HEADER) -> Path:
    text = "\n".join(([header] if header else []) + lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def read_all(path: Path, table, **kw) -> list:
    return list(read_table(path, table, codec=kw.pop("codec", KeyCodec()), **kw))


def test_csv_columns_read_as_declared(tmp_path: Path) -> None:
    codec = KeyCodec()
    (batch,) = read_all(write(tmp_path / "t.csv", ROWS), spec(), codec=codec)
    assert batch.lines.tolist() == [2, 3, 4, 5]  # the header is line 1
    assert batch.label.tolist() == [0, 1, 0, 1]
    assert batch.ints.tolist() == [[3.5, 0.0, -2.0, 100.0]]
    assert batch.int_missing.tolist() == [[False, True, False, False]]
    # categorical rows: when_hour, when_weekday, when_weekend, site, device
    texts = [[codec.text_of(k) for k in row] for row in batch.cats]
    assert texts == [
        ["0", "13", "23", ""],
        ["1", "1", "5", ""],  # Tuesday, Tuesday, Saturday (Monday = 0)
        ["0", "0", "1", ""],
        ["a", "bb", "", "a"],
        ["phone", "tablet", "phone", "desktop-with-a-long-name"],
    ]
    assert (batch.cats[:, 3][:3] == 0).all() and batch.cats[3, 2] == 0  # empty cells are key 0 (missing)


def test_tsv_gz_without_header_and_parquet_read_the_same(tmp_path: Path) -> None:
    names = HEADER.split(",")
    tsv = write(tmp_path / "t.tsv.gz", [r.replace(",", "\t") for r in ROWS], header=None)
    a = read_all(tsv, spec(delimiter="\t", header=False, column_names=names))[0]
    table = pa.table(
        {
            "id": [1, 2, 3, 4],
            "click": [0, 1, 0, 1],
            "when": ["14102100", "14102113", "14102523", None],
            "price": pa.array([3.5, None, -2.0, 100.0]),
            "site": ["a", "bb", None, "a"],
            "device": ["phone", "tablet", "phone", "desktop-with-a-long-name"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    b = read_all(tmp_path / "t.parquet", spec(format="parquet"))[0]
    assert a.lines.tolist() == [1, 2, 3, 4] and b.lines.tolist() == [1, 2, 3, 4]
    for x, y in zip((a.label, a.ints, a.int_missing, a.cats), (b.label, b.ints, b.int_missing, b.cats)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["1,0,14102100,3.5,a"], "t.csv line 2: expected 6 columns, got 5"),
        (["1,0,14102100,abc,a,phone"], "t.csv line 2, column price: 'abc' is not a number"),
        (
            ["1,0,14102100,1,a,phone", "2,yes,14102100,1,a,phone"],
            r"t.csv line 3, column click: label 'yes' is not one of \['1', '0'\]",
        ),
        (["1,0,2014-10-21,1,a,phone"], "t.csv line 2, column when: '2014-10-21' does not match format '%y%m%d%H'"),
    ],
)
def test_bad_cells_name_file_line_and_column(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_all(write(tmp_path / "t.csv", lines), spec())


def test_skip_counts_bad_rows_and_keeps_exact_lines(tmp_path: Path) -> None:
    lines = ["1,0,14102100,abc,a,phone", ROWS[1], "3,0,14102100,1,a", ROWS[3]]
    report = BadRowReport()
    (batch,) = read_all(write(tmp_path / "t.csv", lines), spec(), on_bad_rows="skip", report=report)
    assert batch.lines.tolist() == [3, 5]
    assert report.count == 2 and [e["line"] for e in report.to_dict()["examples"]] == [2, 4]


def test_header_must_hold_every_declared_column_and_only_those(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no column 'device' .* the file has: id, click, when, price, site"):
        read_all(write(tmp_path / "a.csv", ["1,0,14102100,1,a"], header="id,click,when,price,site"), spec())
    extra = write(tmp_path / "b.csv", [r + ",x" for r in ROWS], header=HEADER + ",note")
    with pytest.raises(DataError, match="columns not declared in data.columns: note"):
        read_all(extra, spec())
    assert len(read_all(extra, spec(extra_columns="ignore"))[0]) == 4


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"x": "text"}, "data.columns.x: expected a kind"),
        ({"x": {"kind": "numeric", "transform": "sqrt"}}, "transform 'sqrt' is not one of"),
        ({"x": {"kind": "categorical", "format": "%H"}}, "unknown option 'format' for kind categorical"),
        ({"x": {"kind": "datetime"}}, "a datetime column needs a format"),
        ({"x": {"kind": "datetime", "format": "unix", "derive": ["minute"]}}, "derive"),
        ({"click": "categorical"}, "'click' is the label column"),
        ({"x": "ignore"}, "every column is ignored"),
    ],
)
def test_declaration_errors_name_the_key(columns: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        spec(columns=columns)


def test_hash_ids_are_stable_across_codecs_and_value_lengths() -> None:
    values = ["a", "bb", "exactly8", "a much longer value than eight bytes"]
    ids = []
    for order in (values, values[::-1]):
        codec = KeyCodec()
        enc = HashEncoder("x", "categorical", 7, codec)
        enc.finish()
        keys = codec.encode(pa.array([v.encode() for v in order] + [b""], pa.binary()))
        out = enc.transform(keys, keys == 0)
        assert out[-1] == MISSING_ID and ((out[:-1] >= FIRST_ID) & (out[:-1] < FIRST_ID + 7)).all()
        ids.append(dict(zip(order, out[:-1].tolist())))
    assert ids[0] == ids[1]


def test_prepared_table_round_trips_through_encode_raw(tmp_path: Path) -> None:
    """Preparing a directory of CSV splits, then re-encoding its test file with the saved schema, gives the same
    tensors; a new file's unseen values map to OOV and hashed values still get ids."""
    d = tmp_path / "splits"
    d.mkdir()
    write(d / "train.csv", ROWS * 3)
    write(d / "valid.csv", ROWS[:2])
    write(d / "test.csv", ROWS[1:])
    data = csv_data(path=str(d), cache_dir=str(tmp_path / "cache"))
    prepared = prepare_data(data, progress=False)
    fields = prepared.schema.fields
    assert [f.name for f in fields] == ["price", "when_hour", "when_weekday", "when_weekend", "site", "device"]
    assert [f.transform for f in fields] == ["log_standard", "vocab", "vocab", "vocab", "vocab", "hash"]
    assert fields[-1].vocab_size == FIRST_ID + 5
    test = load_split(prepared, "test")
    again = encode_raw(d / "test.csv", prepared.schema)
    for k in ("ids", "dense", "dense_missing", "label"):
        assert getattr(test, k).equal(getattr(again, k)), k
    new = encode_raw(write(tmp_path / "new.csv", ["9,1,14102100,1,zzz,phone"]), prepared.schema)
    site = [f.name for f in prepared.schema.id_fields].index("site")
    assert new.ids[0, site] == OOV_ID and new.label.tolist() == [1.0]


def test_group_column_flows_to_batches_and_results(tmp_path: Path) -> None:
    """``data.group`` keys reach the prepared splits, the batches and ``results.json``'s group AUC, which equals the
    metric recomputed from the run's own predictions; the group column may also be a feature."""
    from ctr.config import load_config
    from ctr.metrics import group_auc
    from ctr.train.run import train_run

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3000):
        user, item = rng.integers(0, 30), rng.integers(0, 20)
        click = int(rng.random() < 0.15 + 0.5 * (item < 5))
        lines.append(f"{i},{click},{user},{item}")
    raw = write(tmp_path / "clicks.csv", lines, header="id,click,user,item")
    data = [
        f"data.path={raw}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.format=csv",
        "data.label={name: click}",
        "data.columns={id: ignore, user: categorical, item: categorical}",
        "data.group=user",
        "data.min_count=1",
    ]
    cfg = load_config([], [*data, "model.name=lr", "train.epochs=1", "train.batch_size=256", "train.progress=false"])
    prepared = prepare_data(cfg.data, progress=False)
    test = load_split(prepared, "test")
    user_ids = test.ids[:, [f.name for f in prepared.schema.id_fields].index("user")]
    assert test.group is not None and len(test.group) == len(test)
    # same user <=> same group key
    assert len(set(zip(test.group.tolist(), user_ids.tolist()))) == len(set(test.group.tolist()))
    results = train_run(cfg, tmp_path / "run", prepared=prepared)
    assert 0.5 < results["test"]["gauc"] <= 1.0 and "calibration" in results["test"]
    from ctr.train.saved_run import evaluate_run

    metrics, prob = evaluate_run(tmp_path / "run")
    assert metrics["gauc"] == pytest.approx(group_auc(test.label.numpy(), prob, test.group.numpy()), rel=1e-12)
    assert metrics["gauc"] == pytest.approx(results["test"]["gauc"], rel=1e-9)


def test_temporal_split_puts_the_latest_rows_in_test_and_is_rebuilt_by_evaluate(tmp_path: Path) -> None:
    """``data.split_by_time``: train holds the earliest rows, test the latest, cut at the time values where the
    cumulative share reaches 0.8 and 0.9; rows are shuffled in the file, so the line order plays no part; the
    run's test split is rebuilt from the raw file by the same rule."""
    rng = np.random.default_rng(1)
    hours = rng.permutation(np.repeat(np.arange(100), 20))  # 100 distinct hours x 20 rows, shuffled
    lines = [
        f"{i},{int(rng.random() < 0.3)},{1_400_000_000 + 3600 * h},{rng.integers(0, 9)}" for i, h in enumerate(hours)
    ]
    raw = write(tmp_path / "log.csv", lines, header="id,click,ts,item")
    data = csv_data(
        path=str(raw),
        cache_dir=str(tmp_path / "cache"),
        columns={"id": "ignore", "ts": {"kind": "datetime", "format": "unix"}, "item": "categorical"},
        split_by_time="ts",
    )
    prepared = prepare_data(data, progress=False)
    assert prepared.schema.rows == {"train": 1600, "valid": 200, "test": 200}
    t1, t2 = prepared.schema.config["time_thresholds"]
    assert (t1, t2) == (1_400_000_000 + 3600 * 79, 1_400_000_000 + 3600 * 89)
    from ctr.data.prepare import encode_source_split

    test = encode_source_split(prepared.schema, "test")
    assert test.label.equal(load_split(prepared, "test").label) and len(test) == 200
    with pytest.raises(DataError, match="must name a datetime or numeric column"):
        spec(split_by_time="site")


def test_multi_valued_cells_become_padded_ids_with_their_own_vocabulary(tmp_path: Path) -> None:
    """A ``^``-joined cell becomes up to ``max_len`` ids in order (-1 after the last value, an empty cell one
    missing id); a longer cell is an error naming its line, or truncated with ``truncate: true``; the prepared
    split and a re-encoded raw file agree."""
    d = tmp_path / "mv"
    d.mkdir()
    rows = ["1,u1,a^b", "0,u2,", "1,u1,b^c^d", "0,u3,a", "1,u2,c^a", "0,u1,zz"]
    for split in ("train", "valid", "test"):
        write(d / f"{split}.csv", rows, header="click,user,hist")
    columns = {"user": "categorical", "hist": {"kind": "multi_valued", "max_len": 2, "truncate": True}}
    data = csv_data(path=str(d), cache_dir=str(tmp_path / "c"), columns=columns)
    prepared = prepare_data(data, progress=False)
    hist = prepared.schema.multi_fields[0]
    assert (hist.name, hist.encoding, hist.stats["vocab"], hist.stats["max_len"]) == (
        "hist",
        "multi",
        ["a", "b", "c", "zz"],  # "d" is cut by max_len 2: never seen
        2,
    )
    vocab = {v: FIRST_ID + i for i, v in enumerate(hist.stats["vocab"])}
    got = load_split(prepared, "test").multi[:, 0].tolist()
    assert got == [
        [vocab["a"], vocab["b"]],
        [MISSING_ID, -1],
        [vocab["b"], vocab["c"]],
        [vocab["a"], -1],
        [vocab["c"], vocab["a"]],
        [vocab["zz"], -1],
    ]
    assert encode_raw(d / "test.csv", prepared.schema).multi.equal(load_split(prepared, "test").multi)
    strict = spec(
        columns={"hist": {"kind": "multi_valued", "max_len": 2}}, label={"name": "click"}, extra_columns="ignore"
    )
    with pytest.raises(DataError, match="test.csv line 4, column hist: more than max_len=2 values"):
        read_all(d / "test.csv", strict)


def test_weight_column_reaches_batches_and_weights_the_training_loss(tmp_path: Path) -> None:
    """``data.weight``: each row's weight is in the prepared splits and the batches; a weight of 2 counts a row
    twice in the training loss; a negative or missing weight is a bad row naming the column."""
    import torch

    from ctr.train.epoch import weighted_bce

    d = tmp_path / "w"
    d.mkdir()
    rows = ["1,a,2", "0,b,1", "1,a,0.5", "0,c,1"]
    for split in ("train", "valid", "test"):
        write(d / f"{split}.csv", rows, header="click,item,w")
    data = csv_data(path=str(d), cache_dir=str(tmp_path / "c"), columns={"item": "categorical"}, weight="w")
    batch = load_split(prepare_data(data, progress=False), "test")
    assert batch.weight.tolist() == [2.0, 1.0, 0.5, 1.0]
    logits, label = torch.tensor([0.3, -1.0]), torch.tensor([1.0, 0.0])
    doubled = weighted_bce(torch.tensor([0.3, 0.3, -1.0]), torch.tensor([1.0, 1.0, 0.0]), None)
    torch.testing.assert_close(weighted_bce(logits, label, torch.tensor([2.0, 1.0])), doubled)
    bad = spec(columns={"item": "categorical"}, label={"name": "click"}, weight="w")
    with pytest.raises(DataError, match="t.csv line 3, column w: a weight must be a number >= 0"):
        read_all(write(tmp_path / "t.csv", ["1,a,2", "0,b,-1"], header="click,item,w"), bad)
