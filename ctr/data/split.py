"""Train/valid/test splits: a seeded per-line hash for one file, or a directory of split files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ctr.errors import DataError

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """Vectorised splitmix64 finaliser: a well-mixed uint64 hash of each value of ``x`` (taken mod 2**64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_hash(seed: int, values: np.ndarray) -> np.ndarray:
    """(N,) float64 in [0, 1) that depends only on (seed, value): hash(hash(seed) xor value) / 2**64."""
    key = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) ^ np.asarray(values).astype(np.uint64)
    return (splitmix64(key) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def assign_splits(lines: np.ndarray, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Split of each row of a single file, from its line number only (stable across runs and block sizes).

    Args:
        lines: (N,) int64 1-based line numbers.
        seed: ``data.split_seed``.
        fractions: (3,) positive train/valid/test weights (normalised here).

    Returns:
        (N,) int8: 0 train, 1 valid, 2 test.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or np.any(frac <= 0):
        raise DataError(f"split fractions must be three positive numbers, got {list(fractions)}")
    bounds = np.cumsum(frac)[:2] / frac.sum()
    return np.searchsorted(bounds, uniform_hash(seed, lines), side="right").astype(np.int8)


def find_split_files(directory: str | Path) -> dict[str, Path]:
    """The train/valid/test files of a directory: names like ``train``, ``train.txt``, ``valid.tsv.gz``.

    Raises:
        DataError: a split is missing or has two candidate files.
    """
    directory = Path(directory)
    found: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for p in sorted(directory.iterdir()):
        split = SPLIT_ALIASES.get(p.name.split(".")[0].lower())
        if split and p.is_file():
            found[split].append(p)
    missing = [s for s in SPLITS if not found[s]]
    if missing:
        have = ", ".join(p.name for p in sorted(directory.iterdir()) if not p.name.startswith(".")) or "nothing"
        raise DataError(
            f"{directory}: a data directory needs train, valid and test files (e.g. train.txt, valid.txt, "
            f"test.txt); missing {', '.join(missing)}; found: {have}"
        )
    for s, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{directory}: several {s} files: {', '.join(p.name for p in paths)}")
    return {s: found[s][0] for s in SPLITS}
