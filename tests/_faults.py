"""Run ``train.py`` with a fault injected, for the reliability tests (the injection is the test's, not ctr's).

    python tests/_faults.py --fault-signal KILL --fault-step 37 [--fault-rank 0] -- <train.py arguments>
        after optimizer step 37 the process sends itself the signal (KILL, INT, TERM)
    python tests/_faults.py --fault-lr-factor 1e30 --fault-step 40 -- <train.py arguments>
        after step 40 the learning rate is multiplied by the factor (a run that diverges mid-way)

Works under torchrun too (each rank runs this file; ``--fault-rank`` picks the one that receives the signal).
"""

import argparse
import os
import signal

from ctr.cli import run_cli, train_main
from ctr.train import epoch
from ctr.train.distributed import exit_process


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--fault-signal")
    p.add_argument("--fault-lr-factor", type=float)
    p.add_argument("--fault-step", type=int, required=True)
    p.add_argument("--fault-rank", type=int, default=0)
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    step = epoch.EpochTrainer.train_step

    if args.fault_signal:
        signum = getattr(signal, f"SIG{args.fault_signal}")

        def train_step(self, batch):
            loss = step(self, batch)
            if self.step == args.fault_step and int(os.environ.get("RANK", "0")) == args.fault_rank:
                os.kill(os.getpid(), signum)
            return loss

        epoch.EpochTrainer.train_step = train_step
    if args.fault_lr_factor:

        def train_step(self, batch):
            loss = step(self, batch)
            if self.step == args.fault_step:
                for group in self.optimizer.param_groups:
                    group["lr"] *= args.fault_lr_factor
            return loss

        epoch.EpochTrainer.train_step = train_step
    return run_cli(train_main, train_args)


if __name__ == "__main__":
    exit_process(main())
