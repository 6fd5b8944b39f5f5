"""Two CPU processes (gloo) through torchrun: DDP training ends with one complete run directory from rank 0."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctr.data.generate import generate_criteo

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    raw = tmp_path / "clicks.txt"
    generate_criteo(raw, rows=12000, seed=5)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train.py"),
        "--data",
        str(raw),
        "--out",
        str(out),
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=256",
        "--set",
        "train.lr=0.005",
        "--set",
        "model.hidden=[32]",
        "--set",
        "model.embed_dim=4",
        "--set",
        "train.progress=false",
        "--set",
        "data.min_count=2",
        "--set",
        "norm.mlp=bn",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["world_size"] == 2
    assert results["test"]["auc"] > 0.55
    assert r.stdout.count("test: AUC") == 1, "only rank 0 reports"
