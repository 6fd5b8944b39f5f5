"""Checkpoints and --resume: a run killed at a random step and resumed ends bitwise where an uninterrupted run ends
(dropout on, so the random generators' states matter), in one process, under torchrun, with streaming data and in
an ablation grid; SIGINT/SIGTERM write a checkpoint and exit with a message; nothing of a previous run is lost."""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctr.config import load_config
from ctr.data.generate import generate_criteo
from ctr.errors import CTRError
from ctr.train import epoch as epoch_module
from ctr.train.checkpoint import CHECKPOINT, load_checkpoint
from ctr.train.run import train_run
from ctr.train.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "train.epochs=3",
    "train.patience=3",
    "train.batch_size=128",
    "train.lr=0.003",
    "train.log_every=1",
    "train.checkpoint_every=10",
    "train.progress=false",
    "train.threads=1",
    "model.name=dnn",
    "model.hidden=[32, 32]",
    "model.dropout=0.3",
    "model.embed_dim=4",
    "data.min_count=2",
]
STEPS_PER_EPOCH = 36  # the generated file's training split holds 36 full batches of 128 rows
STEPS = 3 * STEPS_PER_EPOCH


def sets(*extra):
    return [a for s in (*SETTINGS, *extra) for a in ("--set", s)]


def run(*args, script="train.py", timeout=300):
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "clicks.txt"
    generate_criteo(path, rows=6000, seed=11)
    return path


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = run("--data", raw, "--out", out, *sets())
    assert r.returncode == 0, r.stderr
    return out


def same_run(a: Path, b: Path) -> None:
    """Same best weights bitwise, same test metrics, same metrics log apart from timings."""
    wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["test"] == rb["test"] and ra["valid"] == rb["valid"]

    def log(d):
        records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_sec")} for r in records]

    assert log(a) == log(b)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(raw, reference, tmp_path):
    at = random.Random().randint(11, STEPS - 2)
    out = tmp_path / "run"
    r = run(
        "--fault-signal",
        "KILL",
        "--fault-step",
        at,
        "--",
        "--data",
        raw,
        "--out",
        out,
        *sets(),
        script="tests/_faults.py",
    )
    assert r.returncode == -9, f"step {at}: {r.stderr[-2000:]}"
    assert not (out / "results.json").exists()
    ck = load_checkpoint(out / CHECKPOINT)
    # the kill comes inside the step, before that step's checkpoint: the last one is every 10 steps or an epoch end
    assert ck["trainer"]["step"] == max(s for s in range(at) if s % 10 == 0 or s % STEPS_PER_EPOCH == 0), at
    r = run("--resume", out)
    assert r.returncode == 0, f"step {at}: {r.stderr[-2000:]}"
    same_run(reference, out)
    assert not (out / CHECKPOINT).exists(), "a finished run drops its checkpoint"


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(raw, reference, tmp_path):
    out = tmp_path / "run"
    r = run(
        "--fault-signal",
        "KILL",
        "--fault-step",
        5,
        "--",
        "--data",
        raw,
        "--out",
        out,
        *sets(),
        script="tests/_faults.py",
    )
    assert r.returncode == -9 and not (out / CHECKPOINT).exists()
    r = run("--resume", out)
    assert r.returncode == 0, r.stderr
    assert f"{out}: no checkpoint yet; training from the start with its config.yaml" in r.stderr
    same_run(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("signame, status", [("INT", 130), ("TERM", 143)])
def test_sigint_and_sigterm_checkpoint_and_say_how_to_resume(raw, reference, tmp_path, signame, status):
    out = tmp_path / "run"
    r = run(
        "--fault-signal",
        signame,
        "--fault-step",
        45,
        "--",
        "--data",
        raw,
        "--out",
        out,
        *sets(),
        script="tests/_faults.py",
    )
    assert r.returncode == status, r.stderr[-2000:]
    assert f"interrupted at step 45; checkpoint written to {out / CHECKPOINT}" in r.stderr
    assert f"train.py --resume {out}" in r.stderr
    assert "Traceback" not in r.stderr
    assert load_checkpoint(out / CHECKPOINT)["trainer"]["step"] == 45
    assert run("--resume", out).returncode == 0
    same_run(reference, out)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_sigkill_under_torchrun_then_resume_matches_an_uninterrupted_run(raw, tmp_path):
    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)

    ddp = sets("train.checkpoint_every=5")
    ref = tmp_path / "ref"
    r = torchrun(ROOT / "train.py", "--data", raw, "--out", ref, *ddp)
    assert r.returncode == 0, r.stderr[-3000:]
    at = random.Random().randint(6, STEPS // 2 - 2)  # two ranks: half the steps each
    out = tmp_path / "run"
    r = torchrun(
        ROOT / "tests/_faults.py",
        "--fault-signal",
        "KILL",
        "--fault-step",
        at,
        "--fault-rank",
        1,
        "--",
        "--data",
        raw,
        "--out",
        out,
        *ddp,
    )
    assert r.returncode != 0 and not (out / "results.json").exists(), f"step {at}"
    r = torchrun(ROOT / "train.py", "--resume", out)
    assert r.returncode == 0, f"step {at}: {r.stderr[-3000:]}"
    same_run(ref, out)


class Crash(BaseException):
    """Stands for a process dying mid-run, in-process (not an Exception: nothing may catch and record it)."""


def crash_at(monkeypatch, at: int) -> None:
    step = epoch_module.EpochTrainer.train_step

    def train_step(self, batch):
        loss = step(self, batch)
        if self.step == at:
            raise Crash
        return loss

    monkeypatch.setattr(epoch_module.EpochTrainer, "train_step", train_step)


def test_streaming_run_crashed_mid_epoch_resumes_to_the_same_weights(raw, tmp_path, monkeypatch):
    cfg = load_config([], [*SETTINGS, f"data.path={json.dumps(str(raw))}", "data.streaming=true", "train.epochs=2"])
    train_run(cfg, tmp_path / "ref")
    with monkeypatch.context() as m:
        crash_at(m, 53)  # mid-way through epoch 2: the shuffle buffer's state must be rebuilt
        with pytest.raises(Crash):
            train_run(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["trainer"]["step"] == 50
    train_run(cfg, tmp_path / "run", resume=True)
    same_run(tmp_path / "ref", tmp_path / "run")


def test_a_killed_ablation_grid_resumes_its_unfinished_run_mid_run(raw, tmp_path, monkeypatch):
    from ctr.ablation.runner import run_ablation

    spec = tmp_path / "grid.yaml"
    settings = {k: v for k, v in (s.split("=", 1) for s in SETTINGS)}
    spec.write_text("grid:\n  norm.mlp: [none, bn]\nseeds: [1]\n")
    overrides = [f"{k}={v}" for k, v in settings.items()] + ["train.epochs=2"]
    with monkeypatch.context() as m:
        crash_at(m, 47)  # the first run dies in its second epoch
        with pytest.raises(Crash):
            run_ablation(spec, tmp_path / "study", data=raw, overrides=overrides)
    runs = sorted((tmp_path / "study" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / CHECKPOINT).is_file()
    steps = []
    step = epoch_module.EpochTrainer.train_step

    def counting(self, batch):
        steps.append(self.step)
        return step(self, batch)

    monkeypatch.setattr(epoch_module.EpochTrainer, "train_step", counting)
    run_ablation(spec, tmp_path / "study", data=raw, overrides=overrides)
    per_run = 2 * STEPS_PER_EPOCH
    assert steps[0] == 40, "the interrupted run continues from its checkpoint at step 40, not from 0"
    assert len(steps) == (per_run - 40) + per_run
    rows = (tmp_path / "study" / "runs.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in r for r in rows[1:])
    train_run(RunDir(runs[0]).read_config(), tmp_path / "ref")
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    resumed = json.loads((runs[0] / "results.json").read_text())
    assert resumed["test"] == ref["test"]


def test_resume_refuses_a_checkpoint_of_another_config_or_a_damaged_one(raw, tmp_path, monkeypatch):
    cfg = load_config([], [*SETTINGS, f"data.path={json.dumps(str(raw))}", "train.epochs=1"])
    with monkeypatch.context() as m:
        crash_at(m, 12)
        with pytest.raises(Crash):
            train_run(cfg, tmp_path / "run")
    other = load_config([], [*SETTINGS, f"data.path={json.dumps(str(raw))}", "train.epochs=1", "train.lr=0.01"])
    with pytest.raises(CTRError, match="written for another config"):
        train_run(other, tmp_path / "run", resume=True)
    ck = tmp_path / "run" / CHECKPOINT
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(CTRError, match=f"{ck}: not a readable checkpoint"):
        train_run(cfg, tmp_path / "run", resume=True)


@pytest.mark.slow
def test_train_refuses_to_replace_a_run_unless_told(raw, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "model.pt").read_bytes()
    r = run("--data", raw, "--out", out, *sets("train.epochs=1"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {out} already holds a run (config.yaml, schema.json, model.pt, metrics.jsonl, results.json); "
        f"continue it with --resume {out}, choose a new --out, or replace it with --overwrite"
    ]
    assert (out / "model.pt").read_bytes() == before
    r = run("--resume", out)
    assert r.returncode == 2 and "the run finished (results.json exists); nothing to resume" in r.stderr
    (out / "notes.txt").write_text("mine")
    r = run("--data", raw, "--out", out, "--overwrite", *sets("train.epochs=1"))
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine", "--overwrite deletes the run's files only"
    assert len([line for line in (out / "metrics.jsonl").read_text().splitlines() if "valid_auc" in line]) == 1


def test_a_run_that_fails_before_training_leaves_no_directory(raw, tmp_path):
    for bad in (f"data.path={json.dumps(str(tmp_path / 'missing.txt'))}", "train.batch_size=100000"):
        cfg = load_config([], [*SETTINGS, f"data.path={json.dumps(str(raw))}", bad])
        with pytest.raises(CTRError, match="no such file|fewer than train.batch_size"):
            train_run(cfg, tmp_path / "run")
        assert not (tmp_path / "run").exists()
