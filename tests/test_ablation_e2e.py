"""A tiny ablation end to end on a generated file: outputs, reuse of finished runs, resume, failed runs, workers.

One serial ablation runs once per module (fixture ``ablation``) and is only read; a test that reruns or deletes
runs works on its own copy of that output in ``tmp_path``, so every test stands alone and in any order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from ctr.ablation.__main__ import main
from ctr.ablation.runner import run_ablation
from ctr.cli import run_cli

# Noise that differs between two identical runs; everything else in results.json must match exactly.
TIMING = ("seconds", "samples_per_sec")


@dataclass(frozen=True)
class Ablation:
    config: Path  # the grid with a failing cell: 4 cells x 2 seeds, 6 ok and 2 failed runs
    ok_config: Path  # the same grid without the failing cell (same run names: cells are hashed by config)
    raw: Path
    out: Path  # the serial run's output; read only


def _spec(root: Path, failing: bool) -> dict:
    spec = {
        "model": {"name": "dnn", "embed_dim": 4, "hidden": [8]},
        "data": {"min_count": 2, "numeric_transform": "log_standard", "cache_dir": str(root / "cache")},
        # one thread per run whatever --workers is, so serial and parallel runs compute bit for bit the same
        "train": {"epochs": 1, "batch_size": 256, "log_every": 2, "threads": 1},
        "diagnostics": {"every": 3, "landscape": True, "landscape_steps": [0.1, 0.4]},
        "stage_norms": {"stages": ["numeric", "mlp"], "norms": ["bn"]},
        "seeds": [1, 2],
    }
    if failing:
        spec["cells"] = [{"train.batch_size": 100000}]  # more than the train rows: these runs fail, the grid goes on
    return spec


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory, criteo_file: Path) -> Ablation:
    """The tiny ablation, trained serially in this process once for the module (torch's thread count restored)."""
    root = tmp_path_factory.mktemp("ablation")
    config, ok_config = root / "tiny.yaml", root / "tiny_ok.yaml"
    config.write_text(yaml.safe_dump(_spec(root, failing=True)))
    ok_config.write_text(yaml.safe_dump(_spec(root, failing=False)))
    threads = torch.get_num_threads()
    try:
        out = run_ablation(config, root / "out", workers=1, data=criteo_file)
    finally:
        torch.set_num_threads(threads)
    return Ablation(config, ok_config, criteo_file, out)


def _copy(ablation: Ablation, tmp_path: Path) -> Path:
    """A private copy of the serial output (file times kept), to rerun or damage."""
    out = tmp_path / "out"
    shutil.copytree(ablation.out, out)
    return out


def _mtimes(out: Path, name: str) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob(f"*/{name}")}


def _results(run_dir: Path) -> dict:
    """results.json without its timing fields."""
    r = json.loads((run_dir / "results.json").read_text())
    r["train"] = {k: v for k, v in r["train"].items() if k not in TIMING}
    return r


def _assert_same_run(a: Path, b: Path) -> None:
    """Two run directories computed the same run: metrics, best weights and diagnostics bit for bit."""
    assert _results(a) == _results(b)
    wa, wb = torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "diagnostics.jsonl").read_text() == (b / "diagnostics.jsonl").read_text()


@pytest.mark.slow
def test_outputs(ablation: Ablation) -> None:
    """runs.csv has one row per (cell, seed) with the results of its run directory; failed runs are reported with
    their error; summary.csv has a row per cell; report.md embeds every plot."""
    out = ablation.out
    runs = pd.read_csv(out / "runs.csv")
    # cells: numeric=bn, mlp=bn, batch_size=100000 (its own baseline: no norm), baseline; 2 seeds each
    assert len(runs) == 8 and sorted(runs["seed"]) == [1, 1, 1, 1, 2, 2, 2, 2]
    ok, failed = runs[runs["status"] == "ok"], runs[runs["status"] == "failed"]
    assert len(ok) == 6 and len(failed) == 2
    assert failed["error"].str.contains("batch_size").all()
    assert set(failed["train.batch_size"]) == {100000}
    for _, row in ok.iterrows():  # each row is its run's results.json
        r = json.loads((out / "runs" / row["run"] / "results.json").read_text())
        assert row["test_auc"] == pytest.approx(r["test"]["auc"]) and row["valid_logloss"] == pytest.approx(
            r["valid"]["logloss"]
        )
        assert 0 < row["test_auc"] < 1 and row["epochs"] == 1
        assert (out / "runs" / row["run"] / "diagnostics.jsonl").stat().st_size > 0
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


@pytest.mark.slow
def test_rerun_reuses_finished_runs_retries_failed_ones_and_resumes_a_missing_one(
    ablation: Ablation, tmp_path: Path
) -> None:
    """A second invocation retrains nothing that finished (results.json untouched), retries the failed runs (new
    error.json), and after a run's results.json is lost retrains exactly that run, to the same results."""
    out = _copy(ablation, tmp_path)
    before, errors = _mtimes(out, "results.json"), _mtimes(out, "error.json")
    assert len(before) == 6 and len(errors) == 2
    run_ablation(ablation.config, out, workers=1, data=ablation.raw)
    assert _mtimes(out, "results.json") == before  # nothing retrained
    retried = _mtimes(out, "error.json")
    assert retried.keys() == errors.keys() and all(retried[k] != errors[k] for k in errors)
    victim = sorted(before)[0]
    (out / "runs" / victim / "results.json").unlink()  # as if killed before this run finished
    run_ablation(ablation.config, out, workers=1, data=ablation.raw)
    after = _mtimes(out, "results.json")
    assert set(after) == set(before) and after[victim] != before[victim]
    assert {k: v for k, v in after.items() if k != victim} == {k: v for k, v in before.items() if k != victim}
    _assert_same_run(out / "runs" / victim, ablation.out / "runs" / victim)


@pytest.mark.slow
def test_two_workers_train_runs_at_once_with_the_serial_results(
    ablation: Ablation, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``--workers 2`` with two runs left: both are trained at the same time (the run directories' first file,
    config.yaml, of each is written before the other's last file, results.json: their lifetimes overlap, which a
    one-at-a-time execution cannot produce) and each ends bit-identical to the serial run of the same seed."""
    out = _copy(ablation, tmp_path)
    runs = pd.read_csv(out / "runs.csv")
    victims = sorted(runs[(runs["status"] == "ok") & (runs["norm.mlp"] == "bn")]["run"])  # one cell, seeds 1 and 2
    assert len(victims) == 2
    for v in victims:
        shutil.rmtree(out / "runs" / v)  # every file in these directories will come from the parallel run
    capfd.readouterr()
    assert main([str(ablation.ok_config), "--out", str(out), "--workers", "2", "--data", str(ablation.raw)]) == 0
    assert "2 runs, 2 at a time" in capfd.readouterr().err
    for v in victims:
        _assert_same_run(out / "runs" / v, ablation.out / "runs" / v)
    starts = [(out / "runs" / v / "config.yaml").stat().st_mtime_ns for v in victims]
    ends = [(out / "runs" / v / "results.json").stat().st_mtime_ns for v in victims]
    assert max(starts) < min(ends), "the two runs did not overlap: they were not trained in parallel"
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and (runs["status"] == "ok").all()  # the ok grid: no failing cell


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad key in an ablation config is one ``error:`` line naming the cell and the key, no traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"grid": {"train.lrr": [0.1]}}))
    assert run_cli(main, [str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cell 'lrr=0.1': unknown config key 'train.lrr'") and "\n" not in err


@pytest.mark.slow
def test_tune_reports_each_arm_at_its_best_learning_rate(tmp_path: Path, criteo_file: Path) -> None:
    """``tune: train.lr``: summary_tuned.csv keeps, per arm, the learning rate with the best mean valid AUC (checked
    against runs.csv) and report.md gains the section."""
    spec = {
        "model": {"name": "dnn", "embed_dim": 4, "hidden": [8]},
        "data": {"min_count": 2, "cache_dir": str(tmp_path / "cache")},
        "train": {"epochs": 1, "batch_size": 256, "threads": 1},
        "grid": {"train.lr": [0.0003, 0.01]},
        "stage_norms": {"stages": ["mlp"], "norms": ["bn"]},
        "seeds": [1, 2],
        "tune": "train.lr",
    }
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(spec))
    threads = torch.get_num_threads()
    try:
        out = run_ablation(config, tmp_path / "out", workers=1, data=criteo_file)
    finally:
        torch.set_num_threads(threads)
    runs, tuned = pd.read_csv(out / "runs.csv"), pd.read_csv(out / "summary_tuned.csv")
    means = runs.groupby(["norm.mlp", "train.lr"])["valid_auc"].mean()
    for arm, row in tuned.set_index("norm.mlp").iterrows():
        assert row["train.lr"] == means.loc[arm].idxmax()
    assert len(tuned) == 2 and "## Each arm at its best train.lr" in (out / "report.md").read_text()
    first = runs.iloc[0]  # calibration from each run's results.json; no groups declared, so no gAUC
    results = json.loads((out / "runs" / first["run"] / "results.json").read_text())
    assert first["test_calibration"] == pytest.approx(results["test"]["calibration"]) and runs["test_gauc"].isna().all()
    assert "| calibration | gAUC |" in (out / "report.md").read_text()
