"""Evaluate a run: ``python evaluate.py --run DIR [--data PATH] [--json FILE] [--predictions FILE]``."""

import sys

from ctr.cli import evaluate_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(evaluate_main))
