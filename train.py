"""Train a CTR model: ``python train.py [--config FILE ...] [--data PATH] [--out DIR] [--set KEY=VALUE ...]``."""

from ctr.cli import run_cli, train_main
from ctr.train.distributed import exit_process

if __name__ == "__main__":
    exit_process(run_cli(train_main))
