"""The synthetic Criteo generator: format, determinism, chunk-size independence, realism, the oracle."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

import ctr.data.generate as generate
from ctr.config import load_config
from ctr.data.criteo import NUM_COLUMNS, read_criteo
from ctr.data.generate import (
    INT_SPECS,
    _concat_blocks,
    generate_criteo,
    iterate_rows,
    main,
    oracle_auc,
    oracle_path,
    read_oracle,
)
from ctr.data.prepare import prepare_data
from ctr.data.split import assign_splits


def test_same_seed_same_bytes_whatever_chunk_size(tmp_path: Path) -> None:
    a = generate_criteo(tmp_path / "a.txt", 5000, seed=3).read_bytes()
    b = generate_criteo(tmp_path / "b.txt", 5000, seed=3, chunk_rows=777).read_bytes()
    c = generate_criteo(tmp_path / "c.txt", 5000, seed=4).read_bytes()
    assert a == b
    assert a != c
    head = generate_criteo(tmp_path / "d.txt", 1234, seed=3, chunk_rows=100).read_bytes()
    assert a.startswith(head)  # a prefix of rows is the same rows


def test_format_is_raw_criteo(criteo_lines: list[str]) -> None:
    for line in criteo_lines[:200]:
        cells = line.split("\t")
        assert len(cells) == NUM_COLUMNS
        assert cells[0] in ("0", "1")
        assert all(c == "" or c.lstrip("-").isdigit() for c in cells[1:14])
        assert all(c == "" or (len(c) == 8 and int(c, 16) >= 0) for c in cells[14:])


def test_gzip_output(tmp_path: Path) -> None:
    plain = generate_criteo(tmp_path / "x.txt", 300, seed=1).read_bytes()
    assert gzip.decompress(generate_criteo(tmp_path / "x.txt.gz", 300, seed=1).read_bytes()) == plain


def test_cli(tmp_path: Path) -> None:
    main([str(tmp_path / "cli.txt"), "--rows", "50", "--seed", "2", "--quiet"])
    assert (tmp_path / "cli.txt").read_bytes() == generate_criteo(tmp_path / "api.txt", 50, seed=2).read_bytes()


def test_realistic_marginals_and_planted_signal() -> None:
    block = _concat_blocks(list(iterate_rows(40_000, seed=0)))
    assert 0.22 < block.label.mean() < 0.28  # Criteo Kaggle-like click rate
    want = np.array([s[0] for s in INT_SPECS])
    np.testing.assert_allclose(block.int_missing.mean(axis=0), want, atol=0.015)
    i2 = block.ints[~block.int_missing[:, 1], 1]
    assert (i2 == -1).mean() > 0.02 and i2.min() < 0 < i2.max()
    assert block.ints[:, 4].max() > 100_000  # heavy tail
    distinct = [len(np.unique(block.hashes[:, f])) for f in range(26)]
    assert min(distinct) <= 4 and max(distinct) > 10_000
    assert roc_auc_score(block.label, block.logit) > 0.8


def test_generated_file_reads_cleanly(criteo_file: Path) -> None:
    assert sum(len(b) for b in read_criteo(criteo_file)) == 3000


def test_rejects_negative_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_criteo(tmp_path / "x.txt", -1)


# ------------------------------------------------------------------------------------------------------ the oracle


def _labels(path: Path) -> np.ndarray:
    return np.concatenate([b.label for b in read_criteo(path)]).astype(np.int8)


def test_oracle_sidecar_holds_each_rows_label_and_planted_probability(tmp_path: Path) -> None:
    """The sidecar lists, in file order, each row's label (as the reader parses the file) and the sigmoid of its
    planted logit; it does not depend on the chunk size; it is hidden, so a split directory's ``train.txt`` does
    not gain a second ``train.*`` file."""
    path = generate_criteo(tmp_path / "train.txt", 5000, seed=3, chunk_rows=777)
    side = oracle_path(path)
    assert side.name == ".train.txt.oracle.npz" and side.is_file()
    block = _concat_blocks(list(iterate_rows(5000, seed=3)))
    labels, probs = read_oracle(path)
    np.testing.assert_array_equal(labels, _labels(path))
    np.testing.assert_array_equal(probs, 1 / (1 + np.exp(-block.logit)))
    again = generate_criteo(tmp_path / "again.txt", 5000, seed=3)
    np.testing.assert_array_equal(read_oracle(again)[1], probs)
    assert abs(labels.mean() - probs.mean()) < 0.02  # labels are draws from these probabilities


def test_oracle_auc_is_the_auc_of_the_planted_probabilities_on_the_prepared_test_rows(tmp_path: Path) -> None:
    """The oracle's test rows are the preparation's: the labels of the rows it scores are the prepared test split's
    labels, in order; its value is scikit-learn's AUC of the planted probabilities on them, above what a model
    reaches (the planted signal is strong) and below 1 (labels are random draws)."""
    path = generate_criteo(tmp_path / "raw.txt", 4000, seed=5)
    cfg = load_config(overrides=[f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}"]).data
    prepared = prepare_data(cfg, progress=False)
    test_labels = pq.read_table(prepared.path("test"), columns=["label"]).column("label").to_numpy()
    labels, probs = read_oracle(path)
    rows = assign_splits(np.arange(1, len(labels) + 1), cfg.split_seed, cfg.split) == 2
    np.testing.assert_array_equal(labels[rows], test_labels)
    value = oracle_auc(path, cfg.split_seed, cfg.split)
    assert value == pytest.approx(roc_auc_score(labels[rows], probs[rows]), rel=1e-12)
    assert 0.8 < value < 1.0


def test_no_oracle_for_other_files_stale_sidecars_or_when_not_written(tmp_path: Path) -> None:
    """A file the generator did not write has no oracle; a sidecar whose labels are not the file's is ignored;
    regenerating without the oracle removes the old sidecar."""
    path = generate_criteo(tmp_path / "x.txt", 300, seed=1)
    assert read_oracle(path) is not None
    other = tmp_path / "y.txt"
    other.write_bytes(generate_criteo(tmp_path / "z.txt", 300, seed=2, oracle=False).read_bytes())
    assert read_oracle(other) is None and not oracle_path(tmp_path / "z.txt").exists()
    oracle_path(other).write_bytes(oracle_path(path).read_bytes())  # seed 1's labels beside seed 2's rows
    assert read_oracle(other) is None and oracle_auc(other, 2018, [0.8, 0.1, 0.1]) is None
    generate_criteo(path, 300, seed=1, oracle=False)
    assert not oracle_path(path).exists() and read_oracle(path) is None
    main([str(tmp_path / "cli.txt"), "--rows", "50", "--quiet", "--no-oracle"])
    assert not oracle_path(tmp_path / "cli.txt").exists()


def test_the_bundled_sample_without_a_sidecar_is_recomputed_from_its_seed(tmp_path: Path, monkeypatch) -> None:
    """The bundled sample may predate the sidecar: its oracle is recomputed from its row count and seed, checked
    against the file's labels and cached; a bundled file that is not the generator's output has none."""
    monkeypatch.setattr(generate, "DEFAULT_ROWS", 2000)
    monkeypatch.setattr(generate, "DEFAULT_SEED", 11)
    sample = generate_criteo(tmp_path / "criteo_sample.txt", 2000, seed=11, oracle=False)
    monkeypatch.setattr(generate, "_bundled_path", lambda: sample.resolve())
    expected = _concat_blocks(list(iterate_rows(2000, seed=11)))
    labels, probs = read_oracle(sample)
    np.testing.assert_array_equal(labels, expected.label)
    np.testing.assert_array_equal(probs, 1 / (1 + np.exp(-expected.logit)))
    assert oracle_path(sample).is_file()
    oracle_path(sample).unlink()
    generate_criteo(sample, 2000, seed=12, oracle=False)  # other rows under the bundled name
    assert read_oracle(sample) is None and not oracle_path(sample).exists()
