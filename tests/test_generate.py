"""The synthetic Criteo generator: format, determinism, chunk-size independence, realism."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctr.data.criteo import NUM_COLUMNS, read_criteo
from ctr.data.generate import INT_SPECS, _concat_blocks, generate_criteo, iterate_rows, main


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
