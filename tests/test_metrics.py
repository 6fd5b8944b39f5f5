import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ctr.metrics import auc, logloss


def brute_force_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_and_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 7, 300) / 3.0  # many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)


def test_auc_float32_scores_and_large_n():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200_000)
    s = (rng.normal(size=y.size) + y * 0.5).astype(np.float32)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_auc_perfect_inverse_and_constant():
    y = np.array([0, 0, 1, 1])
    assert auc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_one_class_is_an_error():
    with pytest.raises(ValueError, match="only one class"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class"):
        auc([0, 0], [0.1, 0.2])


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="only 0 and 1"):
        auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="values but"):
        auc([0, 1, 1], [0.1, 0.2])


def test_logloss_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    p = rng.random(1000)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def test_logloss_clips_extremes_and_rejects_non_probabilities():
    assert np.isfinite(logloss([1, 0], [0.0, 1.0]))
    with pytest.raises(ValueError, match="probabilities"):
        logloss([1, 0], [1.5, 0.2])


def test_group_auc_is_the_size_weighted_mean_of_per_group_aucs_with_ties():
    from ctr.metrics import calibration, group_auc

    rng = np.random.default_rng(3)
    n = 3000
    groups = rng.integers(0, 40, n)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # rounded: many ties inside groups
    groups[groups == 7] = 7
    y[groups == 5] = 1  # a one-class group is left out
    total = weight = 0.0
    for g in np.unique(groups):
        m = groups == g
        if 0 < y[m].sum() < m.sum():
            total += roc_auc_score(y[m], s[m]) * m.sum()
            weight += m.sum()
    assert group_auc(y, s, groups) == pytest.approx(total / weight, rel=1e-12)
    assert group_auc(y, s, np.zeros(n)) == pytest.approx(roc_auc_score(y, s), rel=1e-12)  # one group: plain AUC
    with pytest.raises(ValueError, match="no group holds both classes"):
        group_auc([0, 1], [0.1, 0.2], [1, 2])
    assert calibration([0, 1, 1, 0], [0.25, 0.5, 0.5, 0.75]) == pytest.approx(1.0)
    assert calibration([0, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
