"""Train a CTR model: ``python train.py [--config FILE ...] [--data PATH] [--out DIR] [--set KEY=VALUE ...]``."""

import sys

from ctr.cli import run_cli, train_main

if __name__ == "__main__":
    sys.exit(run_cli(train_main))
