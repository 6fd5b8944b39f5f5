"""Score new data with a run: ``python predict.py --run DIR --data FILE --out FILE [--carry COL ...] [--batch-size N]``."""

import sys

from ctr.cli import predict_main, run_cli

if __name__ == "__main__":
    sys.exit(run_cli(predict_main))
