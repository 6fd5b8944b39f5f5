"""The ablation report's statistics: absolute AUCs beside the deltas, 95% intervals, raw and Holm-adjusted p-values
with significance on the adjusted one, and the oracle AUC of generated data; from hand-made run results."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ctr.ablation.grid import parse_ablation, plan_ablation
from ctr.ablation.report import oracle_lines, write_report
from ctr.ablation.runner import cells_frame
from ctr.ablation.stats import holm, summarize
from ctr.data.generate import generate_criteo, oracle_auc

SEEDS = [1, 2, 3, 4]
BASE = [0.770, 0.772, 0.771, 0.769]
DELTAS = {  # raw p 5e-6, 0.043 and 0.96: with 3 tests Holm multiplies the middle one by 2
    "bn": [0.0050, 0.0052, 0.0049, 0.0051],
    "ln": [0.0010, 0.0030, 0.0008, 0.0022],
    "rms": [0.0010, -0.0010, 0.0005, -0.0004],
}


def _plan(data: Path, overrides: tuple[str, ...] = ()):
    spec = parse_ablation(
        {
            "model": {"name": "dnn", "hidden": [8]},
            "train": {"epochs": 1},
            "stage_norms": {"stages": ["mlp"], "norms": list(DELTAS)},
            "seeds": SEEDS,
        }
    )
    return plan_ablation(spec, data, overrides)


def _runs(plan) -> pd.DataFrame:
    rows = []
    for run in plan.runs:
        i = SEEDS.index(run.seed)
        auc = BASE[i] + (0.0 if run.cell.is_baseline else DELTAS[run.cell.norm][i])
        rows.append(
            {
                "run": run.name,
                "cell": run.cell.label,
                "cell_id": run.cell.id,
                "baseline_id": run.cell.baseline_id,
                "seed": run.seed,
                "status": "ok",
                "test_auc": auc,
                "test_logloss": 0.5 - auc / 10,
                "valid_auc": auc,
                "valid_logloss": 0.5,
                "epochs": 1,
                "seconds": 1.0,
                "samples_per_sec": 1e4,
            }
        )
    return pd.DataFrame(rows)


def _p_text(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def _row(report: str, label: str) -> list[str]:
    line = next(li for li in report.splitlines() if li.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_shows_absolute_aucs_intervals_and_holm_adjusted_significance(tmp_path: Path) -> None:
    """Per cell: its AUC ± 95% half-width, the baseline's AUC on the paired seeds, Δ ± its 95% half-width, the raw
    p and the Holm p (over the study's three tests) with ``*`` only on the adjusted one below alpha; a cell whose raw
    p is below 0.05 and Holm p is not gets no star; the oracle AUC of the generated data is stated."""
    data = generate_criteo(tmp_path / "raw.txt", 3000, seed=7)
    plan = _plan(data)
    summary = summarize(_runs(plan), cells_frame(plan), plan.spec.alpha)
    out = tmp_path / "out"
    out.mkdir()
    report = write_report(out, plan, _runs(plan), summary).read_text()
    raw = {n: scipy_stats.ttest_rel(np.add(BASE, d), BASE).pvalue for n, d in DELTAS.items()}
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    assert raw["ln"] < 0.05 < adjusted["ln"] and adjusted["bn"] < 0.05
    header = _row(report, "cell")
    for norm, d in DELTAS.items():
        cells = dict(zip(header, _row(report, f"mlp={norm}")))
        auc = np.add(BASE, d)
        half = scipy_stats.t.ppf(0.975, 3) * auc.std(ddof=1) / 2
        assert cells["test AUC"] == f"{auc.mean():.4f} ± {half:.4f}"
        assert cells["baseline AUC"] == f"{np.mean(BASE):.4f}"
        ci = scipy_stats.ttest_rel(auc, BASE).confidence_interval(0.95)
        assert cells["Δ AUC"] == f"{np.mean(auc - BASE):+.4f} ± {(ci.high - ci.low) / 2:.4f}"
        assert cells["p"] == _p_text(raw[norm])  # no star: the raw p decides nothing
        assert cells["p (Holm)"] == _p_text(adjusted[norm]) + ("*" if adjusted[norm] < 0.05 else "")
    assert "over the 3 tested non-baseline cells" in report
    value = oracle_auc(data, plan.cells[0].config.data.split_seed, plan.cells[0].config.data.split)
    assert value is not None and f"oracle test AUC of `{data}`: {value:.4f}" in report


def test_no_oracle_line_for_data_without_one(tmp_path: Path) -> None:
    """No sidecar, or a split other than by line number (its test rows are not the oracle's): no oracle line."""
    data = generate_criteo(tmp_path / "raw.txt", 500, seed=7, oracle=False)
    assert oracle_lines(_plan(data)) == []
    generate_criteo(data, 500, seed=7)
    assert oracle_lines(_plan(data, ("data.split_by_time=I1",))) == []
    (line,) = oracle_lines(_plan(data))
    assert re.search(r"oracle test AUC of `.*raw.txt`: 0\.\d{4} ", line)
    assert float(line.split(": ")[1].split(" ")[0]) == pytest.approx(oracle_auc(data, 2018, [0.8, 0.1, 0.1]), abs=5e-5)


def test_loss_at_budgets_counts_only_runs_that_reached_each_budget(tmp_path: Path) -> None:
    import json

    from ctr.ablation.report import loss_at_budgets

    def run(name: str, steps: range) -> Path:
        d = tmp_path / name
        d.mkdir()
        lines = [json.dumps({"epoch": 1, "step": s, "train_loss": 1.0 / s, "lr": 0.1}) for s in steps]
        (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return d

    cells = pd.DataFrame({"cell": ["post", "pre"], "cell_id": ["a", "b"]})
    dirs = {"a": [run("a1", range(10, 91, 10)), run("a2", range(10, 41, 10))], "b": [run("b1", range(10, 91, 10))]}
    text = loss_at_budgets(cells, dirs)
    assert "| cell | loss at step 30 | loss at step 60 | loss at step 90 |" in text
    # a1 and a2 both reach step 30 (1/30 each); only a1 reaches 60 and 90 (a2 stopped at 40, e.g. diverged)
    assert "| post | 0.0333 (2/2) | 0.0167 (1/2) | 0.0111 (1/2) |" in text
    assert "| pre | 0.0333 (1/1) | 0.0167 (1/1) | 0.0111 (1/1) |" in text
