"""One preparation in a process of its own, for the fault tests: ``python _prepare_worker.py MODE DATA CACHE SIGNAL``.

MODE ``together``: touch ``SIGNAL.<pid>``, wait until ``SIGNAL`` exists, then prepare, holding the cache's claim
    for a second before writing (so that a second worker started with it arrives while the first prepares); prints
    the prepared directory.
MODE ``hang``: prepare, and during pass 1 touch ``SIGNAL`` and hang (the test then kills the process).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import ctr.data.prepare as prepare
from ctr.config import load_config


def main(mode: str, data: str, cache: str, signal: str) -> None:
    cfg = dataclasses.replace(load_config().data, path=data, cache_dir=cache, min_count=1)
    if mode == "together":
        write_prepared = prepare.write_prepared

        def holding_the_claim(*args, **kwargs):
            time.sleep(1.0)
            return write_prepared(*args, **kwargs)

        prepare.write_prepared = holding_the_claim
        Path(f"{signal}.{os.getpid()}").touch()
        while not Path(signal).exists():
            time.sleep(0.01)
    else:
        write_rows = prepare.write_rows

        def hanging(*args, **kwargs):
            write_rows(*args, **kwargs)
            Path(signal).touch()
            time.sleep(600)

        prepare.write_rows = hanging
    print(prepare.prepare_data(cfg, progress=True).dir, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
