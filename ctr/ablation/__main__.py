"""``python -m ctr.ablation CONFIG [--out DIR] [--workers N] [--data PATH] [--set KEY=VALUE ...]``: run an ablation grid and report it.

The config format is described in :mod:`ctr.ablation.grid`; shipped studies are in ``configs/ablations/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ctr.cli import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    from ctr.ablation.runner import run_ablation
    from ctr.errors import ConfigError

    p = argparse.ArgumentParser(
        prog="python -m ctr.ablation",
        description=(
            "Run every cell of an ablation grid once per seed (finished runs are reused), then write runs.csv, "
            "summary.csv and report.md with plots."
        ),
    )
    p.add_argument("config", help="ablation YAML, e.g. configs/ablations/quick.yaml")
    p.add_argument("--out", help="output directory (default: runs/ablations/<config name>)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once; threads per run = cores // workers")
    p.add_argument("--data", help="raw Criteo-format file or directory for every run (default: the config's)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="config override for every run (repeatable), e.g. --set train.epochs=1",
    )
    p.add_argument("--dry-run", action="store_true", help="list the cells and what is left to run, then stop")
    args = p.parse_args(argv)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    run_ablation(args.config, args.out, args.workers, args.data, args.dry_run, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
