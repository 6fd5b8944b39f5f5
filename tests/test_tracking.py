"""TensorBoard tracking: the run's metrics and diagnostics as scalars, one event directory per run."""

import json

import pytest

from ctr.config import load_config
from ctr.data.generate import generate_criteo
from ctr.train.run import train_run

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(path):
    acc = EventAccumulator(str(path))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_metrics_and_diagnostics_land_in_the_runs_tensorboard_directory(tmp_path):
    raw = tmp_path / "clicks.txt"
    generate_criteo(raw, rows=3000, seed=2)
    settings = [
        f"data.path={json.dumps(str(raw))}",
        "data.min_count=2",
        "model.name=dnn",
        "model.hidden=[16]",
        "model.embed_dim=4",
        "train.batch_size=128",
        "train.epochs=2",
        "train.log_every=5",
        "train.progress=false",
        "train.tensorboard=true",
        "diagnostics.every=10",
        "diagnostics.grad_norms=true",
    ]
    results = train_run(load_config([], settings), tmp_path / "run")
    got = scalars(tmp_path / "run" / "tensorboard")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in steps]
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["train_loss"] for r in steps])
    assert [v for _, v in got["train/lr"]] == pytest.approx([r["lr"] for r in steps])
    epochs = [r for r in records if "valid_auc" in r]
    for tag, key in (("valid/auc", "valid_auc"), ("train/epoch_loss", "train_loss")):
        assert [s for s, _ in got[tag]] == [r["step"] for r in epochs]
        assert [v for _, v in got[tag]] == pytest.approx([r[key] for r in epochs])
    assert results["valid"]["auc"] == pytest.approx(max(r["valid_auc"] for r in epochs))
    grads = [t for t in got if t.startswith("diagnostics/grad_norms/")]
    assert grads and all(got[t][0][0] == 0 for t in grads), "gradient norms per weight matrix from step 0"
