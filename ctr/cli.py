"""Command-line entry points behind ``train.py``, ``evaluate.py`` and ``prepare.py``: argument parsing and one-line
errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ctr.errors import CTRError


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; user errors (bad config, bad data, missing or unwritable files) print one line and exit 2, no
    traceback."""
    try:
        return main(argv)
    except CTRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename or e}: file not found", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a directory that is not writable, a full disk
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
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

    p = argparse.ArgumentParser(prog="train.py", description="Train a CTR model and test it; writes a run directory.")
    p.add_argument("--config", action="append", default=[], help="YAML config file (repeatable; later files win)")
    p.add_argument("--data", help="raw Criteo-format file (split 8:1:1) or a directory with train/valid/test files")
    p.add_argument("--out", help="run directory (default: runs/<model>-<time>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3"
    )
    args = p.parse_args(argv)
    overrides = list(args.set) + ([f"data.path={json.dumps(args.data)}"] if args.data else [])
    cfg = load_config(args.config, overrides)
    model_spec(cfg.model, cfg.norm)  # model options and norms fail here, before data preparation
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.model.name}-{_stamp()}"
    results = train_run(cfg, out)
    if not results:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    print(f"run: {out}")
    for split in ("valid", "test"):
        print(f"{split}: {format_metrics(results[split])}")
    tr = results["train"]
    print(f"train: {tr['epochs']} epochs, {tr['seconds']:.1f} s, {tr['samples_per_sec']:,.0f} samples/s")
    return 0


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
