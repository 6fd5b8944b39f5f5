"""Paired statistics over seeds: against scipy and a hand-checked example; per-cell summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ctr.ablation.stats import paired_ttest, summarize


def test_hand_checked_example():
    # d = [0.5, 0.8]: mean 0.65, sd 0.3 / sqrt(2), t = 0.65 / (sd / sqrt 2) = 0.65 / 0.15 = 4.333...;
    # with 1 degree of freedom (Cauchy) the two-sided p is 1 - (2 / pi) * atan(|t|)
    r = paired_ttest([1.0, 2.0], [0.5, 1.2])
    assert r.n == 2 and r.mean == pytest.approx(0.65) and r.std == pytest.approx(0.3 / math.sqrt(2))
    assert r.t == pytest.approx(0.65 / 0.15)
    assert r.p == pytest.approx(1 - 2 / math.pi * math.atan(0.65 / 0.15), rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_paired_ttest_matches_scipy(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        b = rng.normal(0.78, 0.01, n)
        a = b + rng.normal(rng.normal(0, 0.002), 0.003, n)
        ours, ref = paired_ttest(a, b), scipy_stats.ttest_rel(a, b)
        assert ours.t == pytest.approx(ref.statistic, rel=1e-9)
        assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)


def test_degenerate_cases():
    one = paired_ttest([0.8], [0.7])
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.std) and math.isnan(one.p)
    same = paired_ttest([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])  # every difference 1: scipy gives t = inf, p = 0
    assert same.t == math.inf and same.p == 0.0
    zero = paired_ttest([1.0, 2.0], [1.0, 2.0])
    assert math.isnan(zero.t) and math.isnan(zero.p)
    with pytest.raises(ValueError):
        paired_ttest([1.0], [1.0, 2.0])


def test_summarize_pairs_seeds_with_the_baseline():
    seeds = [1, 2, 3]
    base = [0.770, 0.772, 0.771]
    cell = [0.775, 0.776, 0.774]
    rows = [
        {
            "cell_id": "b",
            "seed": s,
            "status": "ok",
            "test_auc": v,
            "test_logloss": 0.5,
            "valid_auc": v,
            "valid_logloss": 0.5,
            "samples_per_sec": 1e4,
            "seconds": 2.0,
        }
        for s, v in zip(seeds, base)
    ]
    rows += [
        {
            "cell_id": "c",
            "seed": s,
            "status": "ok",
            "test_auc": v,
            "test_logloss": 0.49,
            "valid_auc": v,
            "valid_logloss": 0.49,
            "samples_per_sec": 1e4,
            "seconds": 2.0,
        }
        for s, v in zip(seeds, cell)
    ]
    rows += [
        {
            "cell_id": "d",
            "seed": 1,
            "status": "ok",
            "test_auc": 0.78,
            "test_logloss": 0.48,
            "valid_auc": 0.78,
            "valid_logloss": 0.48,
            "samples_per_sec": 1e4,
            "seconds": 2.0,
        },
        {
            "cell_id": "d",
            "seed": 2,
            "status": "failed",
            "test_auc": float("nan"),
            "test_logloss": float("nan"),
            "valid_auc": float("nan"),
            "valid_logloss": float("nan"),
            "samples_per_sec": float("nan"),
            "seconds": float("nan"),
        },
    ]
    cells = pd.DataFrame({"cell": ["base", "cell", "one"], "cell_id": ["b", "c", "d"], "baseline_id": ["b", "b", "b"]})
    s = summarize(pd.DataFrame(rows), cells, alpha=0.05).set_index("cell_id")
    ref = scipy_stats.ttest_rel(cell, base)
    assert s.loc["c", "n"] == 3 and s.loc["c", "pairs"] == 3
    assert s.loc["c", "test_auc_mean"] == pytest.approx(np.mean(cell))
    assert s.loc["c", "test_auc_std"] == pytest.approx(np.std(cell, ddof=1))
    assert s.loc["c", "delta_test_auc"] == pytest.approx(np.mean(np.subtract(cell, base)))
    assert s.loc["c", "p_test_auc"] == pytest.approx(ref.pvalue)
    assert bool(s.loc["c", "significant"]) == (ref.pvalue < 0.05)
    assert s.loc["b", "delta_test_auc"] == 0 and math.isnan(s.loc["b", "p_test_auc"])
    assert s.loc["d", "n"] == 1 and s.loc["d", "failed"] == 1 and math.isnan(s.loc["d", "test_auc_std"])
    assert math.isnan(s.loc["d", "p_test_auc"]) and "n=1" in s.loc["d", "note"]
    assert s.loc["d", "delta_test_auc"] == pytest.approx(0.78 - 0.770)
