"""Offline metrics over a whole split, in float64. Never averaged over batches."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _as_arrays(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score).ravel()
    if s.dtype.kind not in "fiub":
        raise ValueError(f"y_score must be numeric, got dtype {s.dtype}")
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if s.dtype.kind == "f" and not np.isfinite(s).all():
        raise ValueError("y_score holds NaN or infinite values")
    return y, s


def auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Exact ROC AUC with ties counted as half (the Mann-Whitney U statistic), O(n log n).

    Sorts the scores of positives and of negatives separately (in their own dtype, so ties are exact) and counts,
    for every positive, the negatives below it and tied with it by binary search; equal to
    ``sklearn.metrics.roc_auc_score`` (``benchmarks/evaluate.py`` compares both).

    Args:
        y_true: (N,) labels in {0, 1}.
        y_score: (N,) scores; any monotone transform (logits or probabilities) gives the same AUC.

    Returns:
        P(score of a random positive > score of a random negative) + 0.5 * P(tie).

    Raises:
        ValueError: when only one class is present (AUC is undefined), or on malformed input.
    """
    y, s = _as_arrays(y_true, y_score)
    is_pos = y.astype(bool)
    pos, neg = np.sort(s[is_pos]), np.sort(s[~is_pos])
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC is undefined: only one class present in y_true")
    below = np.searchsorted(neg, pos, side="left")  # (N_pos,) negatives strictly below each positive
    upto = np.searchsorted(neg, pos, side="right")  # (N_pos,) negatives below or tied
    wins = int(below.sum()) + 0.5 * int((upto - below).sum())  # integer sums: exact
    return wins / (float(pos.size) * float(neg.size))


def logloss(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean binary cross-entropy; probabilities are clipped to [eps, 1 - eps] with float64 eps (as scikit-learn).

    Args:
        y_true: (N,) labels in {0, 1}.
        y_prob: (N,) predicted probabilities of class 1.
    """
    y, p = _as_arrays(y_true, y_prob)
    y, p = y.astype(np.float64), p.astype(np.float64)
    if y.size == 0:
        raise ValueError("logloss of an empty split is undefined")
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be probabilities in [0, 1]")
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def group_auc(y_true: ArrayLike, y_score: ArrayLike, groups: ArrayLike) -> float:
    """Impression-weighted mean of the per-group AUC over the groups that hold both classes (the group AUC of
    Zhou et al. 2018, "Deep Interest Network", arXiv 1706.06978; FuxiCTR's gAUC), exact and tie-aware.

    Each group's AUC is its Mann-Whitney statistic from average ranks within the group, computed for all groups at
    once by one sort on (group, score).

    Args:
        y_true: (N,) labels in {0, 1}.
        y_score: (N,) scores.
        groups: (N,) group keys (e.g. user ids).

    Raises:
        ValueError: no group holds both classes.
    """
    y, s = _as_arrays(y_true, y_score)
    g = np.asarray(groups).ravel()
    if g.shape != y.shape:
        raise ValueError(f"groups has {g.size} values but y_true has {y.size}")
    order = np.lexsort((s, g))
    g, s, y = g[order], s[order], y[order].astype(np.int64)
    n = len(y)
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_tie = new_group | np.r_[True, s[1:] != s[:-1]]
    group_id = np.cumsum(new_group) - 1  # (N,) 0..G-1
    tie_id = np.cumsum(new_tie) - 1
    pos = np.arange(n, dtype=np.float64)
    tie_first = pos[new_tie]
    tie_last = np.r_[tie_first[1:] - 1, n - 1]
    group_start = pos[new_group][group_id]
    rank = (tie_first + tie_last)[tie_id] / 2 - group_start + 1  # (N,) average 1-based rank within the group
    n_pos = np.bincount(group_id, weights=y).astype(np.int64)
    size = np.bincount(group_id).astype(np.int64)
    n_neg = size - n_pos
    rank_sum = np.bincount(group_id, weights=rank * y)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        raise ValueError("group AUC is undefined: no group holds both classes")
    aucs = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2) / (n_pos[both] * n_neg[both])
    return float(np.sum(aucs * size[both]) / np.sum(size[both]))


def calibration(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean predicted probability over the observed click rate (1 = calibrated on average)."""
    y, p = _as_arrays(y_true, y_prob)
    rate = float(np.mean(y))
    if rate == 0:
        raise ValueError("calibration is undefined without positives")
    return float(np.mean(p)) / rate
