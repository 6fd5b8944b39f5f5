"""Statistics over seeds: mean and 95% confidence interval per cell, and paired t-tests of each cell against its
baseline (same seeds paired) with Holm's correction over all the cells of a study.

A study compares many cells with their baselines; with m uncorrected tests at level alpha the chance of at least
one false finding grows to about ``1 - (1 - alpha)^m``. Holm's step-down procedure (Holm 1979, "A Simple
Sequentially Rejective Multiple Test Procedure", Scandinavian Journal of Statistics 6(2): 65-70) keeps that
family-wise error rate at alpha under any dependence between the tests, and rejects at least what Bonferroni does.
"""

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
        ci: half-width of the 95% confidence interval of the mean difference, Student t with ``n - 1`` degrees of
            freedom (NaN when ``n < 2``; 0 when every difference is the same).
    """

    n: int
    mean: float
    std: float
    t: float
    p: float
    ci: float = math.nan


CONFIDENCE = 0.95  # level of every confidence interval


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for fewer than 2 values) and count of the finite ``values``."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width ``t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)`` of the Student-t confidence interval of a
    mean of ``n`` values with sample std ``std`` (NaN for ``n < 2``)."""
    if n < 2 or math.isnan(std):
        return math.nan
    return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, int]:
    """Mean, half-width of its Student-t confidence interval (NaN for fewer than 2 values) and count of the finite
    ``values``: the interval is ``mean +- half-width``."""
    mean, std, n = mean_std(values)
    return mean, t_half_width(std, n, confidence), n


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given (Holm 1979).

    With the m finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of the i-th is
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where it is below alpha is Holm's procedure at level
    alpha. NaN entries (no test: one seed, a baseline) stay NaN and do not count in m.
    """
    p = [float(v) if v is not None else math.nan for v in pvalues]
    tested = sorted((i for i, v in enumerate(p) if not math.isnan(v)), key=lambda i: p[i])
    m, running, out = len(tested), 0.0, [math.nan] * len(p)
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


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
            return PairedTest(n, mean, std, math.nan, math.nan, 0.0)
        return PairedTest(n, mean, std, math.copysign(math.inf, mean), 0.0, 0.0)
    t = mean / (std / math.sqrt(n))
    return PairedTest(n, mean, std, t, t_two_sided_p(t, n - 1), t_half_width(std, n))


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom."""
    return float(2.0 * stats.t.sf(abs(t), df))


# ------------------------------------------------------------------------------------------------------ per cell

METRICS = ("test_auc", "test_logloss", "valid_auc", "valid_logloss", "test_calibration", "test_gauc")
COMPARED = ("test_auc", "test_logloss")  # metrics with a delta vs baseline and a paired test


def select_tuned(runs: pd.DataFrame, cells: pd.DataFrame, key: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each arm at its best value of ``key``: the runs and cells of that value only, baselines re-paired.

    An arm is the set of cells that differ only in ``key`` (a column of ``cells``, e.g. ``train.lr``); its best
    value is the one with the highest mean validation AUC over finished seeds (ties: the first in cell order). A
    kept cell is compared with its baseline's arm at that arm's own best value, so every arm, the baseline
    included, is tuned on validation the same way before the test-set comparison.
    """
    others = [c for c in cells.columns if c not in (key, "cell", "cell_id", "baseline_id", "context", "stage", "norm")]
    others = [c for c in others if c != "is_baseline"] + ["is_baseline"]
    ok = runs[runs["status"] == "ok"]
    valid = ok.groupby("cell_id")["valid_auc"].mean()
    arm_of = {r["cell_id"]: tuple(str(r[c]) for c in others) for r in cells.to_dict("records")}
    best: dict[tuple, str] = {}
    for cell_id in cells["cell_id"]:
        arm = arm_of[cell_id]
        if cell_id in valid.index and (arm not in best or valid[cell_id] > valid.get(best[arm], -1.0)):
            best[arm] = cell_id
    kept = cells[cells["cell_id"].isin(best.values())].copy()
    kept["baseline_id"] = [best.get(arm_of[b], b) for b in kept["baseline_id"]]
    return runs[runs["cell_id"].isin(best.values())], kept


def summarize(runs: pd.DataFrame, cells: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """One row per cell: mean/std/n of each metric over its finished seeds, and the paired comparison with its baseline.

    Args:
        runs: one row per run with ``cell_id``, ``seed``, ``status`` (``ok`` counts) and the ``METRICS`` columns.
        cells: one row per cell with ``cell_id`` and ``baseline_id`` (plus any descriptive columns, kept in front).
            All of them are one study: Holm's correction runs over all its non-baseline cells.
        alpha: family-wise significance level (Holm over the paired t-tests of the study).

    Returns:
        ``cells`` plus ``n``, ``failed``, ``diverged`` (runs stopped by the divergence guard), ``<metric>_mean`` / ``_std`` / ``_ci95`` (half-width of the 95% Student-t
        interval of the mean), ``delta_<m>`` (mean of the paired differences cell - baseline over seeds both
        finished), ``delta_<m>_std``, ``delta_<m>_ci95``, ``baseline_<m>_mean`` (the baseline's mean over those
        seeds: ``delta_<m>`` is the cell's mean minus it there), ``pairs``, ``t_<m>``, ``p_<m>`` (raw),
        ``p_<m>_holm`` (Holm-adjusted over the study's non-baseline cells), ``significant`` (test AUC,
        ``p_test_auc_holm < alpha``), ``samples_per_sec``, ``seconds`` and a ``note``.
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
        row["diverged"] = int(((runs["cell_id"] == cell["cell_id"]) & (runs["status"] == "diverged")).sum())
        for m in METRICS:  # calibration and gAUC are absent from runs recorded without them
            values = mine[m].tolist() if m in mine else []
            row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std(values)
            row[f"{m}_ci95"] = mean_ci(values)[1]
        paired = mine.merge(base, on="seed", suffixes=("", "_base"))
        is_base = cell["cell_id"] == cell["baseline_id"]
        for m in COMPARED:
            test = paired_ttest(paired[m].tolist(), paired[f"{m}_base"].tolist())
            row[f"baseline_{m}_mean"] = mean_std(paired[f"{m}_base"].tolist())[0]
            row[f"delta_{m}"] = test.mean  # 0 for a baseline (paired with itself)
            row[f"delta_{m}_std"], row[f"delta_{m}_ci95"], row[f"t_{m}"], row[f"p_{m}"] = (
                (math.nan,) * 4 if is_base else (test.std, test.ci, test.t, test.p)
            )
        row["pairs"] = len(paired)
        row["samples_per_sec"] = float(mine["samples_per_sec"].mean()) if len(mine) else math.nan
        row["seconds"] = float(mine["seconds"].mean()) if len(mine) else math.nan
        row["_is_base"] = is_base
        rows.append(row)
    for m in COMPARED:  # one family per metric: every non-baseline cell of the study (baselines have p NaN)
        for row, adjusted in zip(rows, holm([r[f"p_{m}"] for r in rows])):
            row[f"p_{m}_holm"] = adjusted
    for row in rows:
        p = row["p_test_auc_holm"]
        row["significant"] = bool(not math.isnan(p) and p < alpha)
        row["note"] = _note(row, row.pop("_is_base"))
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
    if row.get("diverged"):
        notes.append(f"{row['diverged']} diverged (not averaged in)")
    return "; ".join(notes)
