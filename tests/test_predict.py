"""Scoring new data: ``predict.py`` / :func:`ctr.predict.predict_file` on raw files with or without their label
column, and ``ctr.load_run(DIR).predict(frame)``, against ``evaluate.py``'s probabilities on the labelled rows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_rows

import ctr
from ctr.config import load_config
from ctr.data.criteo import CAT_COLUMNS, FEATURE_COLUMNS, KeyCodec
from ctr.data.generate import generate_criteo
from ctr.data.generate_table import generate_table
from ctr.data.prepare import table_spec
from ctr.data.table import read_table
from ctr.errors import CTRError, DataError
from ctr.predict import predict_file
from ctr.train.run import train_run
from ctr.train.saved_run import evaluate_run, load_run

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "model.name=dnn",
    "model.embed_dim=4",
    "model.hidden=[16]",
    "train.epochs=2",
    "train.lr=0.01",
    "train.batch_size=256",
    "train.progress=false",
    "data.min_count=2",
]
TABLE = [
    "data.label={name: click}",
    "data.columns={id: ignore, user: categorical, price: {kind: numeric, transform: log_standard}, "
    "hist: {kind: multi_valued, max_len: 3}}",
]


def train(tmp: Path, data: Path, overrides: list[str]) -> Path:
    cfg = load_config([], [f"data.path={data}", f"data.cache_dir={tmp / 'cache'}", *TINY, *overrides])
    train_run(cfg, tmp / "run")
    return tmp / "run"


def read_out(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pq.read_table(path).to_pandas()


@pytest.fixture(scope="module")
def criteo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A run trained on generated Criteo rows; new labelled rows (another seed: mostly unseen categories) and
    the same rows without their label column."""
    tmp = tmp_path_factory.mktemp("criteo")
    run = train(tmp, generate_criteo(tmp / "train.txt", 3000, seed=3), [])
    new = generate_criteo(tmp / "new.txt", 300, seed=99)
    unlabelled = write_rows(tmp / "unlabelled.txt", [ln.split("\t", 1)[1] for ln in new.read_text().splitlines()])
    return run, new, unlabelled


def table_run(tmp: Path, fmt: str) -> tuple[Path, Path, Path]:
    """A run on a generated declared table (CSV or Parquet) with a multi-valued field; new labelled rows, and the
    same rows without the label column."""
    overrides = [f"data.format={fmt}", *TABLE]
    spec = table_spec(load_config([], overrides).data)
    suffix = ".csv" if fmt == "csv" else ".parquet"
    run = train(tmp, generate_table(tmp / f"train{suffix}", spec, 3000, seed=1), overrides)
    new = generate_table(tmp / f"new{suffix}", spec, 300, seed=2)
    unlabelled = tmp / f"unlabelled{suffix}"
    if fmt == "parquet":
        pq.write_table(pq.read_table(new).drop_columns(["click"]), unlabelled)
    else:
        lines = [ln.split(",") for ln in new.read_text().splitlines()]
        drop = lines[0].index("click")
        write_rows(unlabelled, [",".join(cells[:drop] + cells[drop + 1 :]) for cells in lines])
    return run, new, unlabelled


@pytest.fixture(scope="module")
def csv_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return table_run(tmp_path_factory.mktemp("csv"), "csv")


@pytest.fixture(scope="module")
def parquet_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return table_run(tmp_path_factory.mktemp("parquet"), "parquet")


def test_criteo_rows_without_label_score_as_evaluate_scores_them_with_it(criteo, tmp_path: Path) -> None:
    """39-column rows (no label) and 40-column rows give evaluate's probabilities, with 0-based row numbers; a
    DataFrame and a pyarrow Table of the raw columns give the same."""
    run_dir, new, unlabelled = criteo
    _, expected = evaluate_run(run_dir, new)
    run = load_run(run_dir)
    for data in (unlabelled, new):
        assert predict_file(run, data, tmp_path / "p.parquet", progress=False) == 300
        out = read_out(tmp_path / "p.parquet")
        assert out.columns.tolist() == ["row", "probability"]
        assert out["row"].tolist() == list(range(300))
        np.testing.assert_allclose(out["probability"], expected, rtol=0, atol=1e-12)
    assert expected.std() > 1e-3  # the rows get different probabilities: a shifted row would show
    frame = pd.read_csv(unlabelled, sep="\t", header=None, names=FEATURE_COLUMNS, dtype=dict.fromkeys(CAT_COLUMNS, str))
    assert frame["I1"].isna().any() and frame["I1"].dtype == np.float64  # missing integers: NaN in a float column
    np.testing.assert_allclose(ctr.load_run(run_dir).predict(frame), expected, rtol=0, atol=1e-12)
    labelled = pa.Table.from_pandas(frame.assign(label=0, request_id="x"))  # a label and other columns: ignored
    np.testing.assert_allclose(run.predict(labelled), expected, rtol=0, atol=1e-12)


def test_unseen_categorical_values_score_as_the_out_of_vocabulary_id(criteo) -> None:
    """Two different values never seen in training (8 characters, and longer) give the same probability."""
    run_dir, _, unlabelled = criteo
    cells = unlabelled.read_text().splitlines()[0].split("\t")
    rows = []
    for value in ("zzzzzzzz", "a-value-never-seen-in-training"):
        rows.append(cells[:13] + [value] + cells[14:])  # C1
    frame = pd.DataFrame(rows, columns=FEATURE_COLUMNS)
    prob = ctr.load_run(run_dir).predict(frame)
    assert np.isfinite(prob).all() and prob[0] == prob[1]


@pytest.mark.parametrize("name", ["csv_table", "parquet_table"])
def test_declared_table_rows_without_label_score_as_evaluate_and_carry_columns(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A declared CSV or Parquet table with a multi-valued field, without its label column: evaluate's
    probabilities, the carried id (as text from CSV, as stored from Parquet) and a carried feature; a frame of the
    same rows agrees."""
    run_dir, new, unlabelled = request.getfixturevalue(name)
    _, expected = evaluate_run(run_dir, new)
    out = tmp_path / "p.parquet"
    assert predict_file(load_run(run_dir), unlabelled, out, carry=["id", "user"], progress=False) == 300
    got = read_out(out)
    assert got.columns.tolist() == ["row", "probability", "id", "user"]
    assert got["row"].tolist() == list(range(300))
    np.testing.assert_allclose(got["probability"], expected, rtol=0, atol=1e-12)
    ids = list(range(1, 301))
    assert got["id"].tolist() == ([str(i) for i in ids] if name == "csv_table" else ids)
    if name == "csv_table":
        assert got["user"].tolist() == [ln.split(",")[1] for ln in unlabelled.read_text().splitlines()[1:]]
        frame = pd.read_csv(unlabelled, dtype={"user": str, "hist": str})
        assert frame["hist"].isna().any()  # empty multi-valued cells: NaN
    else:
        frame = pq.read_table(unlabelled)
        assert pq.read_table(out).column("user").to_pylist() == frame.column("user").to_pylist()  # nulls kept
    np.testing.assert_allclose(ctr.load_run(run_dir).predict(frame), expected, rtol=0, atol=1e-12)


def test_csv_output_by_suffix(criteo, tmp_path: Path) -> None:
    run_dir, _, unlabelled = criteo
    run = load_run(run_dir)
    predict_file(run, unlabelled, tmp_path / "p.parquet", carry=["C1"], progress=False)
    predict_file(run, unlabelled, tmp_path / "p.csv", carry=["C1"], progress=False)
    parquet, csv = read_out(tmp_path / "p.parquet"), read_out(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == '"row","probability","C1"'
    assert csv["row"].tolist() == parquet["row"].tolist() and csv["C1"].tolist() == parquet["C1"].tolist()
    np.testing.assert_allclose(csv["probability"], parquet["probability"], rtol=0, atol=1e-15)


def test_tiny_chunks_give_the_result_of_one_chunk(criteo, csv_table, parquet_table, tmp_path: Path) -> None:
    """Files read, encoded and scored about 7 rows at a time (text read in blocks of a few lines), in forward passes
    of 5 rows, and frames in chunks of 7 rows, give the probabilities of one chunk (to float32 rounding)."""
    from ctr.predict import predict_frame

    for (run_dir, _, unlabelled), block in ((criteo, 2048), (csv_table, 256), (parquet_table, None)):
        run = load_run(run_dir)
        whole, small = tmp_path / "whole.parquet", tmp_path / "small.parquet"
        predict_file(run, unlabelled, whole, progress=False)
        predict_file(run, unlabelled, small, chunk_rows=7, block_size=block, batch_size=5, progress=False)
        assert pq.ParquetFile(small).metadata.num_row_groups >= 300 // 10  # written chunk by chunk
        a, b = read_out(whole), read_out(small)
        assert a["row"].tolist() == b["row"].tolist() == list(range(300))
        np.testing.assert_allclose(b["probability"], a["probability"], rtol=0, atol=1e-6)
    frame = pd.read_csv(criteo[2], sep="\t", header=None, names=FEATURE_COLUMNS, dtype=dict.fromkeys(CAT_COLUMNS, str))
    run = load_run(criteo[0])
    np.testing.assert_allclose(predict_frame(run, frame, chunk_rows=7), run.predict(frame), rtol=0, atol=1e-6)


def test_a_malformed_row_names_its_line_and_column(criteo, tmp_path: Path) -> None:
    """Error mode: the line and column (file) or 0-based row and column (frame); skip mode: the row is left out
    (file) or NaN (frame), the other rows keep their numbers; a file of neither Criteo layout says both counts."""
    run_dir, _, unlabelled = criteo
    lines = unlabelled.read_text().splitlines()[:5]
    cells = lines[2].split("\t")
    bad = write_rows(tmp_path / "bad.txt", lines[:2] + ["\t".join(cells[:1] + ["abc"] + cells[2:])] + lines[3:])
    run = load_run(run_dir)
    with pytest.raises(DataError, match=re.escape(f"{bad} line 3, column I2: 'abc' is not an integer")):
        predict_file(run, bad, tmp_path / "p.parquet", progress=False)
    assert not (tmp_path / "p.parquet").exists()  # nothing half-written
    frame = pd.read_csv(unlabelled, sep="\t", header=None, names=FEATURE_COLUMNS, dtype=dict.fromkeys(CAT_COLUMNS, str))
    frame = frame.head(5).astype({"I2": np.float64})
    frame.loc[2, "I2"] = 1.5
    with pytest.raises(DataError, match=re.escape("frame row 2, column I2: '1.5' is not an integer")):
        run.predict(frame)
    wrong = write_rows(tmp_path / "wrong.txt", ["\t".join(cells[:30])] + lines)
    with pytest.raises(
        DataError, match=re.escape("line 1: expected 40 tab-separated columns (with the label) or 39 (without), got 30")
    ):
        predict_file(run, wrong, tmp_path / "p.parquet", progress=False)
    mixed = write_rows(tmp_path / "mixed.txt", [lines[0], "1\t" + lines[1]])
    with pytest.raises(DataError, match=re.escape("line 2: expected 39 tab-separated columns, got 40")):
        predict_file(run, mixed, tmp_path / "p.parquet", progress=False)

    run.config.data.on_bad_rows = "skip"
    predict_file(run, bad, tmp_path / "p.parquet", progress=False)
    good = load_run(run_dir).predict(frame.drop(index=2))
    out = read_out(tmp_path / "p.parquet")
    assert out["row"].tolist() == [0, 1, 3, 4]
    np.testing.assert_allclose(out["probability"], good, rtol=0, atol=1e-12)
    prob = run.predict(frame)
    assert np.isnan(prob[2]) and np.allclose(np.delete(prob, 2), good, rtol=0, atol=1e-12)


def test_unknown_columns_are_errors_listing_the_columns(csv_table, criteo, tmp_path: Path) -> None:
    run_dir, _, unlabelled = csv_table
    run = load_run(run_dir)
    with pytest.raises(
        DataError, match=re.escape(f"{unlabelled}: no column 'nosuch' to carry; the file has: id, user, price, hist")
    ):
        predict_file(run, unlabelled, tmp_path / "p.parquet", carry=["nosuch"], progress=False)
    with pytest.raises(CTRError, match="--carry probability: the output has its own 'probability' column"):
        predict_file(run, unlabelled, tmp_path / "p.parquet", carry=["probability"], progress=False)
    with pytest.raises(DataError, match=re.escape("frame: no column 'user' (declared in data.columns/data.label)")):
        run.predict(pd.DataFrame({"id": [1], "price": [2.0], "hist": ["a"]}))
    with pytest.raises(DataError, match=re.escape("frame: no column 'I2' of the Criteo format; the frame has: I1, C1")):
        load_run(criteo[0]).predict(pd.DataFrame({"I1": [1], "C1": ["a"]}))


def test_a_headerless_csv_may_lack_its_label_column(tmp_path: Path) -> None:
    """Without a header, a file with one column fewer than ``data.column_names`` has no label (rows to score)."""
    data = ["data.format=csv", "data.header=false", "data.column_names=[click, site, n]", *TABLE[:1]]
    spec = table_spec(load_config([], [*data, "data.columns={site: categorical, n: numeric}"]).data)
    labelled = write_rows(tmp_path / "l.csv", ["1,a,3", "0,b,"])
    unlabelled = write_rows(tmp_path / "u.csv", ["a,3", "b,"])
    codec = KeyCodec()
    [a] = read_table(labelled, spec, codec=codec, require_label=False)
    [b] = read_table(unlabelled, spec, codec=codec, require_label=False)
    assert a.label.tolist() == [1, 0] and b.label.tolist() == [0, 0]
    assert np.array_equal(a.cats, b.cats) and np.array_equal(a.ints, b.ints) and b.int_missing.tolist() == [[0, 1]]
    with pytest.raises(DataError, match="u.csv line 1: expected 3 columns, got 2"):
        list(read_table(unlabelled, spec, codec=codec))


def run_script(script: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_predict_script_matches_evaluate_predictions(criteo, tmp_path: Path) -> None:
    run_dir, new, unlabelled = criteo
    r = run_script("evaluate.py", "--run", run_dir, "--data", new, "--predictions", tmp_path / "e.csv")
    assert r.returncode == 0, r.stderr
    r = run_script("predict.py", "--run", run_dir, "--data", unlabelled, "--out", tmp_path / "p.csv", "--carry", "C1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"predictions: {tmp_path / 'p.csv'}  rows 300"
    got, expected = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(tmp_path / "e.csv")
    assert got.columns.tolist() == ["row", "probability", "C1"]
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_predict_script_errors_are_one_line(criteo, tmp_path: Path) -> None:
    run_dir, _, unlabelled = criteo
    r = run_script("predict.py", "--run", run_dir, "--data", unlabelled, "--out", tmp_path / "p.csv", "--carry", "id")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip() == f"error: {unlabelled}: no column 'id' to carry; the file has: {', '.join(FEATURE_COLUMNS)}"
    )
