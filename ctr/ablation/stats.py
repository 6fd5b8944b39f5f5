"""Statistics over seeds: mean, std and a paired t-test of a cell against its baseline (same seeds paired)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired t-test of ``a - b``.

    Attributes:
        n: number of pairs.
        mean: mean difference (NaN when ``n == 0``).
        std: sample std of the differences, ddof=1 (NaN when ``n < 2``).
        t: the t statistic (NaN when ``n < 2``; +-inf when every difference is the same non-zero value).
        p: two-sided p-value (NaN when ``n < 2`` or every difference is 0).
    """

    n: int
    mean: float
    std: float
    t: float
    p: float


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for fewer than 2 values) and count of the finite ``values``."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided paired t-test of ``a`` against ``b`` (equal length, pairs in order), as ``scipy.stats.ttest_rel``."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs equal lengths, got {len(a)} and {len(b)}")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return PairedTest(n, mean, math.nan, math.nan, math.nan)
    std = float(d.std(ddof=1))
    if std == 0.0 or std <= 1e-14 * abs(mean):  # all differences equal: exact, no variance to test against
        if mean == 0.0:
            return PairedTest(n, mean, std, math.nan, math.nan)
        return PairedTest(n, mean, std, math.copysign(math.inf, mean), 0.0)
    t = mean / (std / math.sqrt(n))
    return PairedTest(n, mean, std, t, t_two_sided_p(t, n - 1))


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    return float(2.0 * stats.t.sf(abs(t), df))


# ------------------------------------------------------------------------------------------------------ per cell

METRICS = ("test_auc", "test_logloss", "valid_auc", "valid_logloss")
COMPARED = ("test_auc", "test_logloss")  # metrics with a delta vs baseline and a paired test


def summarize(runs: pd.DataFrame, cells: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per cell: mean/std/n of each metric over its finished seeds, and the paired comparison with its baseline.

    Args:
        runs: one row per run with ``cell_id``, ``seed``, ``status`` (``ok`` counts) and the ``METRICS`` columns.
        cells: one row per cell with ``cell_id`` and ``baseline_id`` (plus any descriptive columns, kept in front).
        alpha: significance level of the two-sided paired t-test.

    Returns:
        ``cells`` plus ``n``, ``failed``, ``<metric>_mean`` / ``_std``, ``delta_<m>`` (mean of the paired
        differences cell - baseline over seeds both finished), ``delta_<m>_std``, ``pairs``, ``t_<m>``, ``p_<m>``,
        ``significant`` (test AUC, ``p < alpha``), ``samples_per_sec``, ``seconds`` and a ``note``.
    """
    import pandas as pd

    ok = runs[runs["status"] == "ok"]
    rows = []
    for cell in cells.to_dict("records"):
        mine = ok[ok["cell_id"] == cell["cell_id"]]
        base = ok[ok["cell_id"] == cell["baseline_id"]]
        row = dict(cell)
        row["n"] = len(mine)
        row["failed"] = int(((runs["cell_id"] == cell["cell_id"]) & (runs["status"] == "failed")).sum())
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std(mine[m].tolist())
        paired = mine.merge(base, on="seed", suffixes=("", "_base"))
        is_base = cell["cell_id"] == cell["baseline_id"]
        for m in COMPARED:
            test = paired_ttest(paired[m].tolist(), paired[f"{m}_base"].tolist())
            row[f"delta_{m}"] = test.mean  # 0 for a baseline (paired with itself)
            row[f"delta_{m}_std"], row[f"t_{m}"], row[f"p_{m}"] = (
                (math.nan,) * 3 if is_base else (test.std, test.t, test.p)
            )
        row["pairs"] = len(paired)
        p = row["p_test_auc"]
        row["significant"] = bool(not math.isnan(p) and p < alpha)
        row["samples_per_sec"] = float(mine["samples_per_sec"].mean()) if len(mine) else math.nan
        row["seconds"] = float(mine["seconds"].mean()) if len(mine) else math.nan
        row["note"] = _note(row, is_base)
        rows.append(row)
    return pd.DataFrame(rows)


def _note(row: dict, is_base: bool) -> str:
    notes = []
    if row["n"] == 0:
        notes.append("no finished run")
    elif row["n"] == 1:
        notes.append("n=1: std and p-value are NaN (need >= 2 seeds)")
    if is_base:
        notes.append("baseline")
    elif row["pairs"] == 1 and row["n"] > 1:
        notes.append("1 seed paired with the baseline: p-value is NaN")
    elif row["pairs"] == 0 and row["n"] > 0:
        notes.append("no baseline run with the same seed")
    if row["failed"]:
        notes.append(f"{row['failed']} failed")
    return "; ".join(notes)
