"""AUC over N scores: ``ctr.metrics.auc`` vs ``sklearn.metrics.roc_auc_score`` (time and equality).

    python benchmarks/evaluate.py [--n 10000000] [--repeats 3]

Scores are float32 with ties (rounded to 1e-4 steps) and labels at a 25% positive rate; times are the best of
``--repeats``. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ctr.metrics import auc


def best_time(fn, repeats: int) -> tuple[float, float]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    y = (rng.random(args.n) < 0.25).astype(np.int8)
    s = np.round(rng.normal(size=args.n) + 0.8 * y, 4).astype(np.float32)
    t_ours, a_ours = best_time(lambda: auc(y, s), args.repeats)
    t_sk, a_sk = best_time(lambda: roc_auc_score(y, s), args.repeats)
    res = {
        "n": args.n,
        "ctr_seconds": t_ours,
        "sklearn_seconds": t_sk,
        "speedup": t_sk / t_ours,
        "ctr_auc": a_ours,
        "sklearn_auc": a_sk,
        "abs_diff": abs(a_ours - a_sk),
    }
    print(f"{'':8} {'seconds':>8} {'AUC':>20}")
    print(f"{'ctr':8} {t_ours:8.3f} {a_ours:20.15f}")
    print(f"{'sklearn':8} {t_sk:8.3f} {a_sk:20.15f}")
    print(f"speed-up {res['speedup']:.2f}x, |difference| {res['abs_diff']:.2e}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
