"""Statistics over seeds: paired t-tests, confidence intervals and Holm's correction against scipy and hand-worked
examples; per-cell summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ctr.ablation.stats import holm, mean_ci, paired_ttest, summarize


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


def test_holm_hand_worked_example():
    # p = 0.01, NaN (no test), 0.04, 0.03, 0.005: m = 4 tests. Sorted: 0.005, 0.01, 0.03, 0.04, multiplied by
    # 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04; running maximum: 0.02, 0.03, 0.06, 0.06. At 0.05 Holm rejects the two
    # smallest, where the raw p-values would reject all four.
    adjusted = holm([0.01, math.nan, 0.04, 0.03, 0.005])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.06) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[4] == pytest.approx(0.02)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2 * 0.5 = 1.0, capped at 1; the larger keeps the running maximum
    assert holm([0.02]) == [0.02]  # one test: no correction
    assert holm([]) == []


def test_mean_ci_hand_worked_and_against_scipy():
    # [1, 2, 3]: mean 2, s = 1, n = 3. Student t with 2 degrees of freedom has CDF 1/2 + t / (2 sqrt(2 + t^2)), so
    # its 0.975 quantile solves t / sqrt(2 + t^2) = 0.95: t = sqrt(2 * 0.95^2 / (1 - 0.95^2)) = 4.3027; the
    # half-width is t * s / sqrt(n)
    t = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(t / math.sqrt(3), rel=1e-12)
    rng = np.random.default_rng(1)
    for n in (2, 5, 12):
        x = rng.normal(0.78, 0.01, n)
        lo, hi = scipy_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
        mean, half, _ = mean_ci(x.tolist())
        assert mean - half == pytest.approx(lo, rel=1e-12) and mean + half == pytest.approx(hi, rel=1e-12)
    one = mean_ci([0.8, float("nan")])
    assert one[0] == 0.8 and math.isnan(one[1]) and one[2] == 1


def test_paired_interval_matches_scipy():
    rng = np.random.default_rng(3)
    for n in (2, 3, 7):
        b = rng.normal(0.78, 0.01, n)
        a = b + rng.normal(0.001, 0.002, n)
        ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
        r = paired_ttest(a, b)
        assert r.mean - r.ci == pytest.approx(ci.low, rel=1e-9) and r.mean + r.ci == pytest.approx(ci.high, rel=1e-9)
    assert paired_ttest([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]).ci == 0.0  # every difference 1: an exact interval


def _run(cell: str, seed: int, auc: float, logloss: float = 0.5) -> dict:
    return {
        "cell_id": cell,
        "seed": seed,
        "status": "ok",
        "test_auc": auc,
        "test_logloss": logloss,
        "valid_auc": auc,
        "valid_logloss": logloss,
        "samples_per_sec": 1e4,
        "seconds": 2.0,
    }


def test_summarize_corrects_across_the_study_and_decides_on_the_adjusted_p():
    """Three cells against one baseline (one study): the Holm-adjusted p of each is Holm over the three raw paired
    p-values; a cell whose raw p is below 0.05 but whose adjusted p is not is not significant. Absolute AUCs: the
    cell's mean with its 95% interval, and the baseline's mean over the paired seeds, with Δ their difference."""
    seeds = [1, 2, 3, 4]
    base = [0.770, 0.772, 0.771, 0.769]
    deltas = {
        "strong": [0.0050, 0.0052, 0.0049, 0.0051],  # p 5e-6
        "weak": [0.0010, 0.0030, 0.0008, 0.0022],  # raw p 0.043: significant alone, not after Holm
        "none": [0.0010, -0.0010, 0.0005, -0.0004],  # p 0.96
    }
    rows = [_run("b", s, v) for s, v in zip(seeds, base)]
    for cid, d in deltas.items():
        rows += [_run(cid, s, v + dv) for s, v, dv in zip(seeds, base, d)]
    rows += [_run("late", 3, 0.775)]  # one seed: no test, not counted in the correction
    ids = ["b", *deltas, "late"]
    cells = pd.DataFrame({"cell": ids, "cell_id": ids, "baseline_id": ["b"] * len(ids)})
    s = summarize(pd.DataFrame(rows), cells, alpha=0.05).set_index("cell_id")
    raw = {cid: scipy_stats.ttest_rel(np.add(base, d), base).pvalue for cid, d in deltas.items()}
    assert 0.02 < raw["weak"] < 0.05 and raw["strong"] < 1e-4 and raw["none"] > 0.5
    expected = dict(zip(raw, holm(list(raw.values()))))
    for cid in deltas:
        assert s.loc[cid, "p_test_auc"] == pytest.approx(raw[cid], rel=1e-9)
        assert s.loc[cid, "p_test_auc_holm"] == pytest.approx(expected[cid], rel=1e-9)
        assert bool(s.loc[cid, "significant"]) == (expected[cid] < 0.05)
    assert expected["weak"] > 0.05 and not s.loc["weak", "significant"] and s.loc["strong", "significant"]
    assert math.isnan(s.loc["late", "p_test_auc_holm"]) and math.isnan(s.loc["b", "p_test_auc_holm"])
    cell = np.add(base, deltas["strong"])
    half = scipy_stats.t.ppf(0.975, 3) * np.std(cell, ddof=1) / 2
    assert s.loc["strong", "test_auc_ci95"] == pytest.approx(half, rel=1e-9)
    assert s.loc["strong", "baseline_test_auc_mean"] == pytest.approx(np.mean(base), rel=1e-12)
    ci = scipy_stats.ttest_rel(cell, base).confidence_interval(0.95)
    assert s.loc["strong", "delta_test_auc_ci95"] == pytest.approx((ci.high - ci.low) / 2, rel=1e-9)
    assert s.loc["late", "baseline_test_auc_mean"] == pytest.approx(base[2])  # the baseline on the paired seed
    assert s.loc["late", "delta_test_auc"] == pytest.approx(0.775 - base[2])


def test_select_tuned_keeps_each_arms_best_value_and_pairs_it_with_the_baselines_best():
    """Arms differ only in train.lr; the baseline is best at 0.01 on validation, the BN cell at 0.001: the kept BN
    cell is compared with the baseline at 0.01, whatever the test AUCs say."""
    from ctr.ablation.stats import select_tuned

    cells = pd.DataFrame(
        [
            {
                "cell": f"{n}, lr={lr}",
                "cell_id": f"{n}{lr}",
                "baseline_id": f"base{lr}",
                "is_baseline": n == "base",
                "context": "",
                "stage": "",
                "norm": "",
                "norm.mlp": n,
                "train.lr": lr,
            }
            for n in ("base", "bn")
            for lr in (0.001, 0.01)
        ]
    )
    valid = {"base0.001": 0.70, "base0.01": 0.72, "bn0.001": 0.75, "bn0.01": 0.74}
    test = {"base0.001": 0.80, "base0.01": 0.71, "bn0.001": 0.73, "bn0.01": 0.90}
    runs = pd.DataFrame(
        [
            {
                "cell_id": c,
                "seed": s,
                "status": "ok",
                "valid_auc": valid[c] + 0.001 * s,
                "test_auc": test[c] + 0.001 * s,
                "valid_logloss": 0.5,
                "test_logloss": 0.5,
                "samples_per_sec": 1.0,
                "seconds": 1.0,
                "epochs": 1,
            }
            for c in valid
            for s in (1, 2, 3)
        ]
    )
    kept_runs, kept = select_tuned(runs, cells, "train.lr")
    assert sorted(kept["cell_id"]) == ["base0.01", "bn0.001"]
    assert kept.set_index("cell_id").loc["bn0.001", "baseline_id"] == "base0.01"
    assert set(kept_runs["cell_id"]) == {"base0.01", "bn0.001"}
    summary = summarize(kept_runs, kept).set_index("cell_id")
    assert summary.loc["bn0.001", "delta_test_auc"] == pytest.approx(0.73 - 0.71)
