"""Command-line entry points behind ``train.py``, ``evaluate.py``, ``predict.py`` and ``prepare.py``: argument parsing
and one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ctr.errors import CTRError

DIVERGED_EXIT = 3  # the divergence guard stopped training (a user error is 2, a signal 128 + its number)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; user errors (bad config, bad data, missing or unwritable files) print one line and exit 2, no
    traceback; a diverged run exits 3; SIGINT/SIGTERM during training exit 128 + the signal number after writing a
    checkpoint."""
    from ctr.train.guard import Diverged
    from ctr.train.interrupt import Interrupted

    try:
        return main(argv)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except CTRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename or e}: file not found", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a directory that is not writable, a full disk
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def format_metrics(m: dict[str, float]) -> str:
    """``AUC 0.770522  logloss 0.471713  calibration 1.0123`` (and ``gAUC ...`` when the data has groups)."""
    text = f"AUC {m['auc']:.6f}  logloss {m['logloss']:.6f}  calibration {m['calibration']:.4f}"
    return text + (f"  gAUC {m['gauc']:.6f}" if "gauc" in m else "")


def train_main(argv: Sequence[str] | None = None) -> int:
    from ctr.config import load_config
    from ctr.models.base import model_spec
    from ctr.train.run import train_run
    from ctr.train.run_dir import RunDir

    p = argparse.ArgumentParser(prog="train.py", description="Train a CTR model and test it; writes a run directory.")
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable; later files win)")
    p.add_argument("--data", help="raw Criteo-format file (split 8:1:1) or a directory with train/valid/test files")
    p.add_argument("--out", help="run directory (default: runs/<model>-<time>); must not hold a run already")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    args = p.parse_args(argv)
    if args.resume:
        if args.config or args.set or args.data or args.out or args.overwrite:
            raise CTRError("--resume takes the run's own config.yaml: drop --config, --set, --data, --out, --overwrite")
        run = RunDir(args.resume)
        if run.results.is_file():
            raise CTRError(f"{run.path}: the run finished ({run.results.name} exists); nothing to resume")
        if not run.config.is_file():
            raise CTRError(f"{run.path}: not a run directory ({run.config.name} is missing)")
        out, cfg, resume = run.path, run.read_config(), run.checkpoint.is_file()
        if not resume:  # killed before its first checkpoint: nothing was saved that a restart would lose
            print(f"{run.path}: no checkpoint yet; training from the start with its config.yaml", file=sys.stderr)
    else:
        overrides = list(args.set) + ([f"data.path={json.dumps(args.data)}"] if args.data else [])
        cfg = load_config(args.config, overrides)
        model_spec(cfg.model, cfg.norm)  # model options and norms fail here, before data preparation
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.model.name}-{_stamp()}"
        _check_out(RunDir(out), args.overwrite)
        resume = False
    results = train_run(cfg, out, resume=resume)
    if not results:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    print(f"run: {out}")
    for split in ("valid", "test"):
        print(f"{split}: {format_metrics(results[split])}")
    tr = results["train"]
    print(f"train: {tr['epochs']} epochs, {tr['seconds']:.1f} s, {tr['samples_per_sec']:,.0f} samples/s")
    return 0


def _check_out(run, overwrite: bool) -> None:
    """Refuse to train into a directory that holds a run, unless ``--overwrite`` (which deletes that run's files).

    Under torchrun every rank checks before rank 0 writes anything, so all ranks see the same answer.
    """
    found = run.run_files()
    if not found:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found)
        raise CTRError(
            f"{run.path} already holds a run ({names}); continue it with --resume {run.path}, "
            "choose a new --out, or replace it with --overwrite"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        run.clear()


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    from ctr.train.saved_run import evaluate_run

    p = argparse.ArgumentParser(
        prog="evaluate.py", description="Evaluate a trained run (AUC, logloss, calibration, group AUC)."
    )
    p.add_argument("--run", required=True, help="run directory written by train.py")
    p.add_argument("--data", help="raw Criteo-format file or prepared directory (default: the run's own test split)")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--predictions", help="write one probability per row (.parquet or .csv)")
    args = p.parse_args(argv)
    if args.predictions and Path(args.predictions).suffix not in (".parquet", ".csv"):
        raise CTRError(f"--predictions must end in .parquet or .csv, got {args.predictions}")
    metrics, prob = evaluate_run(args.run, args.data)
    print(f"{format_metrics(metrics)}  rows {len(prob)}")
    if args.json:
        from ctr.train.io import write_json

        write_json(args.json, {**metrics, "rows": int(len(prob))})
    if args.predictions:
        _write_predictions(Path(args.predictions), prob)
    return 0


def predict_main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ctr.predict import predict_file
    from ctr.train.saved_run import load_run

    p = argparse.ArgumentParser(
        prog="predict.py",
        description=(
            "Score raw rows of a run's data format, with or without their label column: writes row (0-based, in the "
            "input), probability and the carried columns, streaming."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by train.py")
    p.add_argument("--data", required=True, help="raw file in the run's data format (.gz works)")
    p.add_argument("--out", required=True, help="output file: Parquet, or CSV when it ends in .csv")
    p.add_argument(
        "--carry", action="extend", nargs="+", default=[], metavar="COL", help="input columns to copy (e.g. an id)"
    )
    p.add_argument("--batch-size", type=int, help="rows per forward pass (default: the run's train.eval_batch_size)")
    args = p.parse_args(argv)
    run = load_run(args.run)
    if run.config.train.threads:
        torch.set_num_threads(run.config.train.threads)
    rows = predict_file(run, args.data, args.out, args.carry, args.batch_size, progress=run.config.train.progress)
    print(f"predictions: {args.out}  rows {rows:,}")
    return 0


def prepare_main(argv: Sequence[str] | None = None) -> int:
    from ctr.config import load_config
    from ctr.data.prepare import prepare_data

    p = argparse.ArgumentParser(
        prog="prepare.py",
        description=(
            "Prepare (or find cached) data once, e.g. before several training runs; train.py reuses it when the "
            "data options match."
        ),
    )
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable); only data: is used")
    p.add_argument("--data", help="raw Criteo-format file or a directory with train/valid/test files")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. data.min_count=5"
    )
    args = p.parse_args(argv)
    overrides = list(args.set) + ([f"data.path={json.dumps(args.data)}"] if args.data else [])
    prepared = prepare_data(load_config(args.config, overrides).data)
    schema = prepared.schema
    print(f"prepared: {prepared.dir}")
    print("rows: " + ", ".join(f"{s} {n:,}" for s, n in schema.rows.items()))
    print(f"fields: {len(schema.fields)}, ids: {schema.id_rows:,}")
    print(f"bad rows skipped: {schema.bad_rows.get('count', 0):,}")
    return 0


def _write_predictions(path: Path, prob) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ctr.train.io import atomic_write

    table = pa.table({"probability": prob})
    if path.suffix == ".parquet":
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    else:
        atomic_write(path, lambda tmp: pacsv.write_csv(table, tmp))


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")
