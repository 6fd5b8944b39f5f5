"""A tiny ablation end to end on a generated file: outputs, reuse of finished runs, resume, failed runs, workers."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctr.ablation.__main__ import main
from ctr.ablation.runner import run_ablation
from ctr.cli import run_cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory, criteo_file):
    root = tmp_path_factory.mktemp("ablation")
    raw = criteo_file  # 3000 generated rows (conftest.py)
    ablation = {
        "model": {"name": "dnn", "embed_dim": 4, "hidden": [8]},
        "data": {"min_count": 2, "numeric_transform": "log_standard", "cache_dir": str(root / "cache")},
        "train": {"epochs": 1, "batch_size": 256, "log_every": 2},
        "diagnostics": {"every": 3, "landscape": True, "landscape_steps": [0.1, 0.4]},
        "stage_norms": {"stages": ["numeric", "mlp"], "norms": ["bn"]},
        "cells": [{"train.batch_size": 100000}],  # more than the train rows: these runs fail, the grid goes on
        "seeds": [1, 2],
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(ablation))
    out = root / "out"
    run_ablation(path, out, workers=1, data=raw)
    return path, raw, out


def _results(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/results.json")}


def test_outputs(setup):
    _, _, out = setup
    runs = pd.read_csv(out / "runs.csv")
    # cells: numeric=bn, mlp=bn, batch_size=100000 (its own baseline: no norm), baseline; 2 seeds each
    assert len(runs) == 8 and set(runs["seed"]) == {1, 2}
    ok, failed = runs[runs["status"] == "ok"], runs[runs["status"] == "failed"]
    assert len(ok) == 6 and len(failed) == 2
    assert failed["error"].str.contains("batch_size").all()
    assert ok["test_auc"].between(0, 1).all() and (ok["samples_per_sec"] > 0).all()
    assert {"norm.numeric", "norm.mlp", "train.batch_size", "valid_logloss", "epochs", "seconds"} <= set(runs.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and {"delta_test_auc", "p_test_auc", "test_auc_std", "n"} <= set(summary.columns)
    report = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    for prefix in ("heatmap", "deltas", "curves", "diagnostics", "grad_norms"):  # curves-<group>.png etc.
        assert any(p.startswith(prefix) for p in pngs), prefix
    for png in pngs:
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report, png
    assert "## Failed runs" in report
    for run in ok["run"]:
        assert (out / "runs" / run / "diagnostics.jsonl").stat().st_size > 0


def test_rerun_reuses_finished_runs_and_resumes_a_missing_one(setup):
    path, raw, out = setup
    before = _results(out)
    run_ablation(path, out, workers=1, data=raw)
    assert _results(out) == before  # nothing retrained
    victim = sorted(before)[0]
    (out / "runs" / victim / "results.json").unlink()  # as if killed before this run finished
    run_ablation(path, out, workers=1, data=raw)
    after = _results(out)
    assert set(after) == set(before) and after[victim] != before[victim]
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}


def test_workers_run_in_parallel_processes(setup):
    path, raw, out = setup
    before = _results(out)
    victims = sorted(before)[-2:]
    for v in victims:
        (out / "runs" / v / "results.json").unlink()
    run_ablation(path, out, workers=2, data=raw)
    after = _results(out)
    assert set(after) == set(before) and all(after[v] != before[v] for v in victims)
    assert (pd.read_csv(out / "runs.csv")["status"] == "ok").sum() == 6


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grid": {"train.lrr": [0.1]}}))
    assert run_cli(main, [str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cell 'lrr=0.1': unknown config key 'train.lrr'") and "\n" not in err
