"""Run an ablation: plan it, train the runs not yet finished (N at a time), then write the CSVs and the report.

Layout of the output directory::

    runs/<model>-<hash8>-s<seed>/   one run directory each (config.yaml, metrics.jsonl, results.json, ...)
    runs.csv                        one row per run
    summary.csv                     one row per cell: mean, std, 95% interval over seeds, delta vs baseline with its
                                    interval, paired t-test p raw and Holm-adjusted across the study
    report.md, *.png                tables and plots

A run whose ``results.json`` exists is reused, so re-running finishes at once and an interrupted grid resumes
(a run killed mid-way continues from its last checkpoint); a run that diverged has a ``diverged.json`` and is
reported as diverged (with its step), not retried and not averaged in; a run that raised has an ``error.json``
and is retried next time; neither stops the grid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from ctr.ablation.grid import Plan, Run, config_value, format_value, plan_ablation, read_ablation
from ctr.ablation.stats import select_tuned, summarize
from ctr.config import RunConfig
from ctr.train import io
from ctr.train.checkpoint import CHECKPOINT
from ctr.train.guard import Diverged

RUNS = "runs"
ERROR = "error.json"
RUN_COLUMNS = (
    "valid_auc",
    "valid_logloss",
    "test_auc",
    "test_logloss",
    "test_calibration",
    "test_gauc",
    "epochs",
    "seconds",
    "samples_per_sec",
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_ablation(
    config: str | Path,
    out: str | Path | None = None,
    workers: int = 1,
    data: str | Path | None = None,
    dry_run: bool = False,
    overrides: Sequence[str] = (),
) -> Path:
    """Run (or resume) the ablation in ``config`` and write its outputs to ``out``; returns ``out``.

    Args:
        config: the ablation YAML (format: :mod:`ctr.ablation.grid`).
        out: output directory (default ``runs/ablations/<config name>``).
        workers: runs trained at once, each with ``max(1, cores // workers)`` torch threads.
        data: raw data for every run (sets ``data.path``).
        dry_run: print the plan and stop.
        overrides: ``KEY=VALUE`` settings for every run (e.g. ``train.epochs=1``).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    plan = plan_ablation(read_ablation(config), data, overrides)
    out = Path(out) if out is not None else Path("runs") / "ablations" / Path(config).stem
    for label, reason in plan.invalid:
        log(f"dropped invalid cell '{label}': {reason}")
    pending = [r for r in plan.runs if not finished(out / RUNS / r.name)]
    log(
        f"{len(plan.cells)} cells x {len(plan.spec.seeds)} seeds = {len(plan.runs)} runs: "
        f"{len(plan.runs) - len(pending)} done, {len(pending)} to run; output {out}"
    )
    if dry_run:
        for cell in plan.cells:
            base = " (baseline)" if cell.is_baseline else ""
            print(f"{cell.config.model.name}-{cell.id}  {cell.label}{base}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    if pending:
        execute(pending, out, workers)
    runs = collect_runs(plan, out)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarize(runs, cells_frame(plan), plan.spec.alpha)
    summary.to_csv(out / "summary.csv", index=False)
    from ctr.ablation.report import tuned_markdown, write_report  # matplotlib only when reporting

    report = write_report(out, plan, runs, summary)
    if plan.spec.tune:
        key = plan.spec.tune
        tuned = summarize(*select_tuned(runs, cells_frame(plan), key), plan.spec.alpha)
        tuned.to_csv(out / "summary_tuned.csv", index=False)
        text = report.read_text() + tuned_markdown(tuned, key, plan.spec.alpha)
        io.atomic_write(report, lambda tmp: Path(tmp).write_text(text))
    failed = int((runs["status"] == "failed").sum())
    log(
        f"wrote {out / 'report.md'}, runs.csv, summary.csv"
        + (f"; {failed} runs failed (see runs.csv)" if failed else "")
    )
    return out


def execute(pending: list[Run], out: Path, workers: int) -> None:
    """Train ``pending`` runs, ``workers`` at a time (in this process when 1), sharing one prepared dataset."""
    from ctr.data.prepare import prepare_data

    workers = min(workers, len(pending))
    threads = max(1, available_cores() // workers)
    prepared: dict[str, Any] = {}
    jobs = []
    for run in pending:
        cfg = _for_worker(run.config, threads)
        key = json.dumps(dataclasses.asdict(cfg.data), sort_keys=True)
        if key not in prepared:
            log(f"preparing data ({cfg.data.path or 'bundled sample'})")
            prepared[key] = prepare_data(cfg.data)
        jobs.append((run, cfg, prepared[key]))
    log(f"training {len(jobs)} runs, {workers} at a time, {threads} threads each")
    t0, done = time.perf_counter(), 0

    def report(run: Run, status: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        head = f"[{done}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {run.name} ({run.cell.label})"
        if status["status"] == "diverged":
            log(f"{head}: DIVERGED: {status['error']}")
        elif status["status"] == "ok":
            r = status["results"]
            log(
                f"{head}: test AUC {r['test']['auc']:.5f}  logloss {r['test']['logloss']:.5f}  {r['train']['seconds']:.1f}s"
            )
        else:
            log(f"{head}: FAILED: {status['error']}")

    if workers == 1:
        for run, cfg, prep in jobs:
            report(run, execute_run(cfg, out / RUNS / run.name, prep))
        return
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {pool.submit(execute_run, cfg, out / RUNS / run.name, prep): run for run, cfg, prep in jobs}
        try:
            for fut in as_completed(futures):
                run = futures[fut]
                try:
                    status = fut.result()
                except BrokenProcessPool as e:  # a worker died (killed, out of memory): recorded, retried next time
                    status = {"status": "failed", "error": f"worker process died: {e}"}
                    _write_error(out / RUNS / run.name, status["error"], "")
                report(run, status)
        except KeyboardInterrupt:  # do not start queued runs; finished ones are kept, the rest resume next time
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the ablation process dies (killed), instead of idling orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):  # not Linux: orphans still end when their queue closes
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _for_worker(cfg: RunConfig, threads: int) -> RunConfig:
    """The run's config with the worker's thread count and no progress bars (neither changes the run's hash)."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))
    if not cfg.train.threads:
        cfg.train.threads = threads
    return cfg


def execute_run(cfg: RunConfig, run_dir: Path, prepared: Any) -> dict[str, Any]:
    """Train one run; an exception is written to ``error.json`` and returned as a failed status, not raised."""
    from ctr.train.run import train_run

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    resume = (run_dir / CHECKPOINT).is_file()  # a run killed mid-way continues from its last checkpoint
    try:
        return {"status": "ok", "results": train_run(cfg, run_dir, prepared=prepared, resume=resume)}
    except Diverged as e:  # recorded in diverged.json by the run: a result, not retried
        return {"status": "diverged", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure is recorded and the grid goes on
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        _write_error(run_dir, message, traceback.format_exc())
        return {"status": "failed", "error": message}


def finished(run_dir: Path) -> bool:
    """A run is final once it wrote its results or diverged (a diverged run would diverge again: not retried)."""
    return (run_dir / io.RESULTS).is_file() or (run_dir / io.DIVERGED).is_file()


def _write_error(run_dir: Path, message: str, trace: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_dir / ERROR, {"error": message, "traceback": trace})


# ---------------------------------------------------------------------------------------------------------- tables


def _display(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else format_value(value)


def cells_frame(plan: Plan) -> pd.DataFrame:
    """One row per cell: ids, label, baseline, heatmap coordinates and the value of every design key."""
    rows = []
    for c in plan.cells:
        row = {
            "cell": c.label,
            "cell_id": c.id,
            "baseline_id": c.baseline_id,
            "is_baseline": c.is_baseline,
            "context": c.context,
            "stage": c.stage,
            "norm": c.norm,
        }
        row.update({k: _display(config_value(c.config, k)) for k in plan.keys})
        rows.append(row)
    return pd.DataFrame(rows)


def collect_runs(plan: Plan, out: Path) -> pd.DataFrame:
    """One row per planned run, from its directory: ``ok`` (results.json), ``failed`` (error.json) or ``missing``."""
    rows = []
    for run in plan.runs:
        d = out / RUNS / run.name
        row: dict[str, Any] = {
            "run": run.name,
            "cell": run.cell.label,
            "cell_id": run.cell.id,
            "baseline_id": run.cell.baseline_id,
        }
        row.update({k: _display(config_value(run.config, k)) for k in plan.keys})
        row["seed"] = run.seed
        row.update({c: float("nan") for c in RUN_COLUMNS})
        row["status"], row["error"], row["diverged_step"] = "missing", "", float("nan")
        if (d / io.RESULTS).is_file():
            r = json.loads((d / io.RESULTS).read_text())
            row.update(
                status="ok",
                valid_auc=r["valid"]["auc"],
                valid_logloss=r["valid"]["logloss"],
                test_auc=r["test"]["auc"],
                test_logloss=r["test"]["logloss"],
                test_calibration=r["test"].get("calibration", float("nan")),
                test_gauc=r["test"].get("gauc", float("nan")),
                epochs=r["train"]["epochs"],
                seconds=r["train"]["seconds"],
                samples_per_sec=r["train"]["samples_per_sec"],
            )
        elif (d / io.DIVERGED).is_file():
            diverged = json.loads((d / io.DIVERGED).read_text())
            row.update(status="diverged", error=diverged["error"], diverged_step=diverged["step"])
        elif (d / ERROR).is_file():
            row.update(status="failed", error=json.loads((d / ERROR).read_text())["error"])
        rows.append(row)
    return pd.DataFrame(rows)
