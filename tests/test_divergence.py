"""The divergence guard, failed writes and untrusted run files: a diverging run stops with a message and exit 3
and never replaces the best weights; skip_batch skips and counts; an ablation records diverged runs; a write that
fails (a real file-size limit) names the file and keeps the previous one; model files cannot run code."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctr.config import load_config
from ctr.data.generate import generate_criteo
from ctr.errors import CTRError
from ctr.train import epoch as epoch_module
from ctr.train import io
from ctr.train.checkpoint import CHECKPOINT, load_checkpoint
from ctr.train.evaluation import NonFinitePredictions, evaluate
from ctr.train.guard import Diverged
from ctr.train.run import train_run

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "train.epochs=2",
    "train.batch_size=128",
    "train.lr=0.003",
    "train.checkpoint_every=10",
    "train.progress=false",
    "train.threads=1",
    "model.name=dnn",
    "model.hidden=[32, 32]",
    "model.embed_dim=4",
    "data.min_count=2",
]


def sets(*extra):
    return [a for s in (*SETTINGS, *extra) for a in ("--set", s)]


def run(*args, script="train.py", **kw):
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("diverge") / "clicks.txt"
    generate_criteo(path, rows=6000, seed=11)
    return path


def config(raw, *extra):
    return load_config([], [*SETTINGS, f"data.path={json.dumps(str(raw))}", *extra])


@pytest.mark.slow
def test_a_huge_learning_rate_stops_with_the_guards_message_not_a_traceback(raw, tmp_path):
    out = tmp_path / "run"
    r = run("--data", raw, "--out", out, *sets("train.lr=1e30"))
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("model dnn"), r.stderr  # the model line, then the error
    assert lines[1].startswith("error: training diverged at step ")
    assert "(epoch 1): non-finite" in lines[1] and "no weights were saved (no epoch finished)" in lines[1]
    assert "try a lower train.lr or a train.warmup_steps, or train.on_nonfinite=skip_batch" in lines[1]
    assert json.loads((out / "diverged.json").read_text())["epoch"] == 1
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


@pytest.mark.slow
def test_a_run_diverging_in_epoch_two_keeps_epoch_ones_best_weights(raw, tmp_path):
    ref = tmp_path / "ref"
    assert run("--data", raw, "--out", ref, *sets("train.epochs=1")).returncode == 0
    out = tmp_path / "run"
    args = ("--fault-lr-factor", 1e30, "--fault-step", 40, "--", "--data", raw, "--out", out, *sets())
    r = run(*args, script="tests/_faults.py")
    assert r.returncode == 3, r.stderr
    message = r.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training diverged at step 4") and "(epoch 2)" in message, message
    assert f"{out / 'model.pt'} holds the best weights so far (epoch 1, valid AUC " in message
    assert f"the last good checkpoint is {out / CHECKPOINT} (step 40)" in message
    assert (out / "model.pt").read_bytes() != b""
    best, expected = (torch.load(d / "model.pt", weights_only=True) for d in (out, ref))
    for k in expected:
        assert torch.equal(best[k], expected[k]), k
        assert torch.isfinite(best[k].float()).all(), k


def poison(monkeypatch, steps: set[int]) -> None:
    """Batches number ``steps`` (1-based, counting every batch) get NaN labels (a NaN loss and NaN gradients)."""
    step, seen = epoch_module.EpochTrainer.train_step, [0]

    def train_step(self, batch):
        seen[0] += 1
        if seen[0] in steps:
            batch.label = torch.full_like(batch.label, float("nan"))
        return step(self, batch)

    monkeypatch.setattr(epoch_module.EpochTrainer, "train_step", train_step)


def test_stop_names_the_step_and_what_went_non_finite(raw, tmp_path, monkeypatch):
    poison(monkeypatch, {6})
    with pytest.raises(Diverged) as e:
        train_run(config(raw), tmp_path / "run")
    assert e.value.step == 6 and e.value.epoch == 1
    assert str(e.value).startswith("training diverged at step 6 (epoch 1): non-finite loss; gradients of ")
    assert "weight" in e.value.what and "embedding" in e.value.what


def test_skip_batch_skips_counts_and_finishes_with_finite_weights(raw, tmp_path, monkeypatch):
    poison(monkeypatch, {5, 6, 7, 40})
    results = train_run(config(raw, "train.on_nonfinite=skip_batch", "train.log_every=1"), tmp_path / "run")
    assert results["train"]["skipped_batches"] == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    assert len(steps) == 2 * 36 - 4, "a skipped batch is not a step"
    assert steps[-1]["skipped_batches"] == 4
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_skip_batch_gives_up_after_skip_limit_batches_in_a_row(raw, tmp_path, monkeypatch):
    poison(monkeypatch, {5, 6, 7})
    cfg = config(raw, "train.on_nonfinite=skip_batch", "train.skip_limit=3")
    with pytest.raises(Diverged, match=r"at step 5 \(epoch 1\): non-finite loss.* in 3 batches in a row"):
        train_run(cfg, tmp_path / "run")


def test_validation_refuses_non_finite_predictions():
    from _tiny import model_config, tiny_batch, tiny_options, tiny_schema

    from ctr.models import build_model

    model = build_model(tiny_schema(), *model_config("dnn", 4, tiny_options("dnn")))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFinitePredictions, match="the model predicts NaN or infinity for 64 of 64 valid rows"):
        evaluate(model, [tiny_batch(batch_size=64)], torch.device("cpu"), split="valid")


def test_an_ablation_records_a_diverged_run_and_does_not_retry_it(raw, tmp_path):
    from ctr.ablation.runner import run_ablation

    spec = tmp_path / "grid.yaml"
    spec.write_text("grid:\n  train.lr: [0.003, 1.0e+30]\nseeds: [1]\nbaseline:\n  train.lr: 0.003\n")
    overrides = [*SETTINGS, "train.epochs=1"]
    out = run_ablation(spec, tmp_path / "study", data=raw, overrides=overrides)
    rows = {r["train.lr"]: r for r in _csv(out / "runs.csv")}
    assert rows["0.003"]["status"] == "ok"
    assert rows["1e+30"]["status"] == "diverged" and int(float(rows["1e+30"]["diverged_step"])) >= 1
    summary = {r["train.lr"]: r for r in _csv(out / "summary.csv")}
    assert summary["1e+30"]["diverged"] == "1" and summary["1e+30"]["n"] == "0"
    assert "1 diverged (not averaged in)" in summary["1e+30"]["note"]
    assert "## Diverged runs" in (out / "report.md").read_text()
    run_dir = next(d for d in (out / "runs").iterdir() if (d / "diverged.json").exists())
    stamp = (run_dir / "diverged.json").stat().st_mtime_ns
    run_ablation(spec, tmp_path / "study", data=raw, overrides=overrides)
    assert (run_dir / "diverged.json").stat().st_mtime_ns == stamp, "a diverged run is a result: not run again"


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(raw, tmp_path, monkeypatch):
    save, calls = torch.save, [0]

    def full_disk(obj, f, *a, **k):
        calls[0] += 1
        if calls[0] == 2:  # the second checkpoint: half written, then the disk is full
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *a, **k)

    monkeypatch.setattr(io.torch, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(CTRError) as e:
        train_run(config(raw), out)
    assert str(e.value) == (
        f"{out / CHECKPOINT}: could not be written (No space left on device); any previous checkpoint.pt is unchanged"
    )
    assert load_checkpoint(out / CHECKPOINT)["trainer"]["step"] == 10
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_a_real_file_size_limit_while_checkpointing_is_a_one_line_error(raw, tmp_path):
    out = tmp_path / "run"
    # the schema, config and weights fit under the limit; the checkpoint (weights + Adam moments) does not
    r = run("--data", raw, "--out", out, *sets("model.hidden=[256, 256]"), preexec_fn=_limit_file_size(600_000))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / CHECKPOINT}: could not be written ("), last
    assert "Traceback" not in r.stderr
    assert not (out / CHECKPOINT).exists() and [p for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_model_and_checkpoint_files_cannot_run_code(tmp_path):
    from ctr.train.run_dir import RunDir

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("model.pt", CHECKPOINT):
        torch.save({"w": torch.ones(1), "x": Exploit()}, tmp_path / name)
    with pytest.raises(CTRError, match=f"{tmp_path / 'model.pt'}: not a readable model file"):
        RunDir(tmp_path).read_model_state()
    with pytest.raises(CTRError, match=f"{tmp_path / CHECKPOINT}: not a readable checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT)
    assert not marker.exists()


def test_a_truncated_model_file_is_a_one_line_error(tmp_path):
    from ctr.train.run_dir import RunDir

    torch.save({"w": torch.ones(1000)}, tmp_path / "model.pt")
    (tmp_path / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes()[:500])
    with pytest.raises(CTRError, match="model.pt: not a readable model file"):
        RunDir(tmp_path).read_model_state()
