"""ctr.train.memory: freed large blocks stay in the process (no munmap) once training has applied it."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import os, sys
import torch
from ctr.train.memory import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("unsupported"); sys.exit(0)
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
before = rss_mb()
x = torch.ones(64 * 2**20)  # 256 MB, touched
del x
print(rss_mb() - before)
"""


def kept_mb(mode: str) -> str:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's mallopt")
def test_freed_large_tensor_stays_resident_only_after_keep_freed_memory() -> None:
    kept = kept_mb("keep")
    if kept.strip() == "unsupported":
        pytest.skip("the C library has no mallopt")
    assert float(kept) > 200  # the 256 MB block went back to the heap, not to the system
    assert float(kept_mb("default")) < 50  # glibc's default: a block this large is unmapped when freed
