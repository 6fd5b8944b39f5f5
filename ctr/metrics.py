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
