"""Splits, train-only fitting, prepared Parquet + schema, cache, atomic writes, re-encoding raw files."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from _tiny import config_section
from conftest import CRITEO_ROWS, write_rows

from ctr.config import DataConfig
from ctr.data import encoders
from ctr.data.criteo import COLUMNS, KeyCodec
from ctr.data.encoders import FIRST_ID, MISSING_ID, OOV_ID, KeyIndex, ValueCounter, log2_bucket
from ctr.data.loader import load_split
from ctr.data.prepare import PreparedData, encode_raw, encode_source_split, prepare_data
from ctr.data.split import assign_splits, find_split_files
from ctr.errors import DataError
from ctr.types import Schema


def config(path: Path, cache: Path, **kw) -> DataConfig:
    return config_section("data", path=str(path), cache_dir=str(cache), **kw)


def raw_frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, names=COLUMNS, dtype=str, keep_default_na=False)


def train_mask(n: int, cfg: DataConfig) -> np.ndarray:
    return assign_splits(np.arange(1, n + 1), cfg.split_seed, cfg.split) == 0


@pytest.fixture(scope="module")
def prepared(criteo_file: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return prepare_data(config(criteo_file, tmp_path_factory.mktemp("cache")), progress=False)


# ------------------------------------------------------------------------------------------------------ splits


def test_split_is_stable_seeded_and_roughly_811() -> None:
    lines = np.arange(1, 200_001)
    a = assign_splits(lines, 2018, [0.8, 0.1, 0.1])
    np.testing.assert_array_equal(a, assign_splits(lines, 2018, [0.8, 0.1, 0.1]))
    np.testing.assert_array_equal(a[1000:2000], assign_splits(lines[1000:2000], 2018, [0.8, 0.1, 0.1]))
    assert (a != assign_splits(lines, 7, [0.8, 0.1, 0.1])).mean() > 0.2
    np.testing.assert_allclose(np.bincount(a) / len(a), [0.8, 0.1, 0.1], atol=0.005)
    np.testing.assert_allclose(np.bincount(assign_splits(lines, 1, [2, 1, 1])) / len(a), [0.5, 0.25, 0.25], atol=0.005)


def test_prepared_splits_do_not_depend_on_block_size(criteo_file: Path, tmp_path: Path, prepared: PreparedData) -> None:
    small = prepare_data(config(criteo_file, tmp_path, block_size=4096), progress=False)
    assert small.schema.rows == prepared.schema.rows
    assert sum(prepared.schema.rows.values()) == CRITEO_ROWS
    for split in ("train", "valid", "test"):
        assert pq.read_table(small.path(split)).equals(pq.read_table(prepared.path(split)))


def test_split_directory(tmp_path: Path, criteo_lines: list[str]) -> None:
    d = tmp_path / "data"
    d.mkdir()
    write_rows(d / "train.txt", criteo_lines[:2000])
    write_rows(d / "valid.tsv", criteo_lines[2000:2500])
    (d / "test.txt.gz").write_bytes(gzip.compress("".join(line + "\n" for line in criteo_lines[2500:]).encode()))
    assert sorted(p.name for p in find_split_files(d).values()) == ["test.txt.gz", "train.txt", "valid.tsv"]
    got = prepare_data(config(d, tmp_path / "cache"), progress=False)
    assert got.schema.rows == {"train": 2000, "valid": 500, "test": 500}
    assert got.schema.source["kind"] == "directory"
    test = encode_source_split(got.schema, "test")
    assert torch.equal(test.ids, load_split(got, "test").ids)
    (d / "valid.tsv").unlink()
    with pytest.raises(DataError, match="missing valid"):
        find_split_files(d)


# ----------------------------------------------------------------------------------------------------- fitting


def test_vocab_is_fitted_on_train_rows_only(criteo_file: Path, prepared: PreparedData) -> None:
    cfg = config_section("data")
    df = raw_frame(criteo_file)
    train = df[train_mask(len(df), cfg)]
    for name in ("C2", "C8", "C13"):
        counts = train[name][train[name] != ""].value_counts()
        field = next(f for f in prepared.schema.fields if f.name == name)
        vocab = field.stats["vocab"]
        assert set(vocab) == set(counts[counts >= cfg.min_count].index)
        assert list(counts[vocab]) == sorted(counts[vocab], reverse=True)  # ids by decreasing frequency
        assert field.vocab_size == FIRST_ID + len(vocab)
        assert field.source == "categorical" and field.encoding == "id"
    assert [f.name for f in prepared.schema.fields] == COLUMNS[1:]
    i5 = next(f for f in prepared.schema.fields if f.name == "I5")
    assert (i5.source, i5.encoding, i5.transform) == ("numeric", "id", "log2_bucket")
    buckets = log2_bucket(train["I5"][train["I5"] != ""].astype(np.int64).to_numpy())
    values, n = np.unique(buckets, return_counts=True)
    assert sorted(i5.stats["vocab"]) == sorted(values[n >= cfg.min_count].tolist())


def test_value_only_in_test_maps_to_oov(criteo_lines: list[str], tmp_path: Path) -> None:
    cfg = config_section("data")
    split = assign_splits(np.arange(1, len(criteo_lines) + 1), cfg.split_seed, cfg.split)
    test_rows = np.flatnonzero(split == 2)[:30]
    lines = list(criteo_lines)
    for i in test_rows:
        cells = lines[i].split("\t")
        cells[COLUMNS.index("C1")] = "deadbeef"
        lines[i] = "\t".join(cells)
    got = prepare_data(config(write_rows(tmp_path / "raw.txt", lines), tmp_path / "cache"), progress=False)
    assert "deadbeef" not in got.schema.fields[13].stats["vocab"]
    test_ids = pq.read_table(got.path("test")).column("C1").to_numpy()
    position = {line_index: k for k, line_index in enumerate(np.flatnonzero(split == 2))}
    assert all(test_ids[position[i]] == OOV_ID for i in test_rows)


def test_log_standard_stats_from_train_only(criteo_file: Path, tmp_path: Path) -> None:
    cfg = config(criteo_file, tmp_path, numeric_transform="log_standard")
    got = prepare_data(cfg, progress=False)
    df = raw_frame(criteo_file)
    train = df[train_mask(len(df), cfg)]
    assert len(got.schema.dense_fields) == 13 and len(got.schema.id_fields) == 26
    for field in got.schema.dense_fields:
        x = train[field.name][train[field.name] != ""].astype(np.int64).clip(lower=0)
        v = np.log1p(x.to_numpy(np.float64))
        assert field.encoding == "dense" and field.transform == "log_standard"
        assert math.isclose(field.stats["mean"], v.mean(), rel_tol=1e-9)
        assert math.isclose(field.stats["std"], v.std(), rel_tol=1e-9)
    t = pq.read_table(got.path("valid"))
    assert t.schema.field("I1").type == "float" and t.schema.field("I1__missing").type == "bool"
    valid = load_split(got, "valid")
    assert valid.dense.dtype == torch.float32 and valid.dense.shape[1] == 13
    assert torch.all(valid.dense[valid.dense_missing] == 0)


def test_quantile_bucket_edges(criteo_file: Path, tmp_path: Path) -> None:
    cfg = config(criteo_file, tmp_path, numeric_transform="quantile_bucket", quantile_buckets=8)
    got = prepare_data(cfg, progress=False)
    df = raw_frame(criteo_file)
    train = df[train_mask(len(df), cfg)]
    for field in got.schema.fields[:13]:
        x = train[field.name][train[field.name] != ""].astype(np.int64).to_numpy()
        edges = np.unique(np.quantile(x.astype(np.float64), np.arange(1, 8) / 8))
        np.testing.assert_allclose(field.stats["edges"], edges)
        assert field.vocab_size == FIRST_ID + len(edges) + 1
    ids = load_split(got, "train").ids[:, :13]
    assert ids.min() >= MISSING_ID and int(ids.max()) < max(f.vocab_size for f in got.schema.fields[:13])


def test_quantile_sample_is_bounded_and_uniform() -> None:
    enc = encoders.QuantileBucketEncoder("I1", buckets=4, sample_size=1000)
    x = np.arange(100_000, dtype=np.int64)
    for part in np.array_split(x, 37):
        enc.partial_fit(part, np.zeros(len(part), bool))
    assert len(enc._sample) == 1000
    field = enc.finish()
    np.testing.assert_allclose(field.stats["edges"], [25_000, 50_000, 75_000], rtol=0.1)
    enc.transform(np.array([-5, 10**9]), np.array([False, False]))


def test_log2_bucket_formula() -> None:
    x = np.array([-3, -1, 0, 1, 2, 3, 10, 1000, 65535, 65536, 10**7])
    want = [v if v <= 2 else math.floor(math.log(v) ** 2) for v in x.tolist()]
    assert log2_bucket(x).tolist() == want
    assert want[5:8] == [1, 5, 47]


@pytest.mark.parametrize("train_min", [0, -3, -(10**6)])
def test_log2_encoder_lookup_table_matches_bucket_then_vocabulary(train_min: int) -> None:
    """The per-raw-value table (and its fallback outside the table) gives the ids of bucketing then the vocabulary."""
    rng = np.random.default_rng(1)
    train = np.concatenate([rng.integers(train_min, 100, 3000), rng.integers(0, 10**6, 3000), [train_min] * 20])
    enc = encoders.Log2BucketEncoder("I1", min_count=5)
    enc.partial_fit(train, np.zeros(len(train), bool))
    enc.finish()
    x = np.concatenate(
        [
            np.arange(-70_000, 70_000, 7),
            rng.integers(-(2**62), 2**62, 1000),
            [train_min, train_min - 1, 2**63 - 1, -(2**63), 65_535, 65_536],
        ]
    ).astype(np.int64)
    missing = rng.random(len(x)) < 0.1
    want = encoders.VocabEncoder.transform(enc, x, missing)
    got = enc.transform(x, missing)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int32 and {OOV_ID, MISSING_ID} <= set(got.tolist()) and got.max() >= FIRST_ID
    again = encoders.Log2BucketEncoder.from_field(enc.field, KeyCodec())
    np.testing.assert_array_equal(again.transform(x, missing), want)


def test_value_counter_merges_exactly() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(-(2**40), 2**40, 5000) % 3000 * 7919 for _ in range(50)]
    counter = ValueCounter()
    for p in parts:
        counter.add(p)
        counter._merge()  # force many merges
    keys, counts = counter.result()
    order = np.argsort(keys)
    want_keys, want_counts = np.unique(np.concatenate(parts), return_counts=True)
    np.testing.assert_array_equal(keys[order], want_keys)
    np.testing.assert_array_equal(counts[order], want_counts)


def test_value_counter_counts_stay_exact_when_large() -> None:
    counter = ValueCounter()
    big = (1 << 40) + 1  # not representable in float32: a lossy merge would round it
    for _ in range(3):
        counter.add_counts(np.array([7, 2**62], dtype=np.int64), np.array([big, 1], dtype=np.int64))
        counter._merge()
    keys, counts = counter.result()
    assert dict(zip(keys.tolist(), counts.tolist())) == {7: 3 * big, 2**62: 3}


def test_key_index_lookup() -> None:
    for keys in (np.array([5, -2, 9]), np.array([2**60, -(2**61), 17])):  # a direct table, a hash index
        index = KeyIndex(keys)
        assert index.lookup(keys).tolist() == [0, 1, 2]
        assert index.lookup(np.array([123456, -(2**63), 2**63 - 1, 4])).tolist() == [-1, -1, -1, -1]


# ------------------------------------------------------------------------------------------- schema and files


def test_prepared_layout_and_schema_round_trip(prepared: PreparedData) -> None:
    schema = prepared.schema
    assert Schema.from_json(prepared.dir / "schema.json") == schema
    text = (prepared.dir / "schema.json").read_text()
    raw = json.loads(text)
    assert len(text.splitlines()) == len(schema.fields) + len(raw) + 3  # a line per field and per other key
    assert set(raw) >= {"fields", "config", "source", "rows", "bad_rows"}
    assert raw["config"]["min_count"] == 10 and raw["config"]["split"] == [0.8, 0.1, 0.1]
    assert raw["source"]["files"]["all"]["size"] > 0 and len(raw["source"]["files"]["all"]["head_tail_sha256"]) == 64
    assert raw["bad_rows"] == {"count": 0, "examples": []}
    table = pq.read_table(prepared.path("train"))
    assert table.column_names == [f.name for f in schema.fields] + ["label"]
    assert all(table.schema.field(f.name).type == "int32" for f in schema.fields)
    assert table.schema.field("label").type == "int8"
    for f in schema.fields:
        col = table.column(f.name).to_numpy()
        assert col.min() >= 0 and col.max() < f.vocab_size
    assert PreparedData.open(prepared.dir).schema == schema


def test_skipped_rows_are_reported_in_schema(criteo_lines: list[str], tmp_path: Path) -> None:
    lines = list(criteo_lines)
    lines[41] = lines[41].replace("\t", "\tx", 1)
    lines[99] = "1\t2"
    raw = write_rows(tmp_path / "raw.txt", lines)
    with pytest.raises(DataError, match="raw.txt line 42, column I1"):
        prepare_data(config(raw, tmp_path / "cache"), progress=False)
    assert not list((tmp_path / "cache").glob("*"))  # nothing left behind
    got = prepare_data(config(raw, tmp_path / "cache", on_bad_rows="skip"), progress=False)
    assert got.schema.bad_rows["count"] == 2
    assert [e["line"] for e in got.schema.bad_rows["examples"]] == [42, 100]
    assert sum(got.schema.rows.values()) == CRITEO_ROWS - 2


# -------------------------------------------------------------------------------------------------- caching


def test_cache_is_reused_and_keyed_by_options(
    criteo_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prepare_data(config(criteo_file, tmp_path), progress=False)
    stamp = (first.dir / "schema.json").stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("cache not reused")

    monkeypatch.setattr("ctr.data.prepare.write_prepared", fail)
    again = prepare_data(config(criteo_file, tmp_path, block_size=1 << 16, shuffle_buffer=10), progress=False)
    assert again.dir == first.dir and (first.dir / "schema.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    other = prepare_data(config(criteo_file, tmp_path, min_count=3), progress=False)
    assert other.dir != first.dir
    assert other.schema.fields[13].vocab_size > first.schema.fields[13].vocab_size
    assert prepare_data(config(criteo_file, tmp_path, split_seed=1), progress=False).dir not in (first.dir, other.dir)


def test_cache_root_defaults_beside_the_raw_file(criteo_lines: list[str], tmp_path: Path) -> None:
    raw = write_rows(tmp_path / "raw.txt", criteo_lines[:500])
    got = prepare_data(config_section("data", path=str(raw)), progress=False)
    assert got.dir.parent == tmp_path / ".ctr_cache"


def test_interrupted_prepare_leaves_no_final_directory(
    criteo_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = encoders.TableEncoder.transform_factorized

    def boom(self, batch):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # e.g. Ctrl-C during pass 2
        return original(self, batch)

    monkeypatch.setattr(encoders.TableEncoder, "transform_factorized", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(config(criteo_file, tmp_path), progress=False)
    assert list(tmp_path.iterdir()) == []  # neither a final nor a temporary directory
    monkeypatch.undo()
    assert prepare_data(config(criteo_file, tmp_path), progress=False).schema.rows["train"] > 0


# --------------------------------------------------------------------------------------------- re-encoding


def test_encode_raw_rebuilds_the_test_split(criteo_file: Path, prepared: PreparedData) -> None:
    cfg = config_section("data")
    want = load_split(prepared, "test")
    got = encode_raw(criteo_file, prepared.schema, "test", cfg.split_seed, cfg.split)
    for name in ("ids", "dense", "dense_missing", "label"):
        assert torch.equal(getattr(got, name), getattr(want, name))
    assert torch.equal(encode_source_split(prepared.schema, "test").ids, want.ids)
    assert len(encode_raw(criteo_file, prepared.schema)) == CRITEO_ROWS


def test_encode_raw_maps_unseen_values_to_oov(criteo_lines: list[str], prepared: PreparedData, tmp_path: Path) -> None:
    cells = criteo_lines[0].split("\t")
    cells[14:] = ["zzzzzzzz"] * 13 + [""] * 13
    cells[1:14] = ["123456789"] + [""] * 12
    t = encode_raw(write_rows(tmp_path / "new.txt", ["\t".join(cells)]), prepared.schema)
    assert t.ids.dtype == torch.int64 and t.ids.shape == (1, 39)
    assert t.ids[0, 13:26].tolist() == [OOV_ID] * 13 and t.ids[0, 26:].tolist() == [MISSING_ID] * 13
    assert t.ids[0, 1:13].tolist() == [MISSING_ID] * 12


def test_encode_raw_rejects_a_different_layout(criteo_lines: list[str], prepared: PreparedData, tmp_path: Path) -> None:
    path = write_rows(tmp_path / "kaggle_test.txt", ["\t".join(line.split("\t")[1:]) for line in criteo_lines[:50]])
    with pytest.raises(DataError, match="kaggle_test.txt line 1: expected 40 tab-separated columns, got 39"):
        encode_raw(path, prepared.schema)
    with pytest.raises(DataError, match="no row has the raw Criteo layout"):
        encode_raw(path, prepared.schema, on_bad_rows="skip")
