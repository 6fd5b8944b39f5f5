"""Prepare data once, ahead of training: ``python prepare.py [--config FILE ...] [--data PATH] [--set KEY=VALUE ...]``."""

import sys

from ctr.cli import prepare_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(prepare_main))
