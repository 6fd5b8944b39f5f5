"""The training step under a gradient scaler (``train.precision: fp16``): hooks see the true gradients.

fp16 needs CUDA, but the scaler's arithmetic does not: a ``torch.amp.GradScaler("cpu")`` with a power-of-two scale
multiplies the loss and divides the gradients exactly, so on CPU the hooks' gradients and the trained weights must
equal those of the same step without a scaler, bit for bit.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from _tiny import tiny_batch, tiny_schema
from torch import nn

from ctr.config import load_config
from ctr.models import build_model
from ctr.train.epoch import EpochTrainer

CPU = torch.device("cpu")
SCALE = 2.0**10
BATCHES = [tiny_batch(batch_size=32, seed=i) for i in range(3)]


def _model() -> nn.Module:
    cfg = load_config(overrides=["model.name=dnn", "model.embed_dim=4", "model.hidden=[8]", "model.dropout=0.0"])
    torch.manual_seed(0)
    return build_model(tiny_schema(), cfg.model, cfg.norm)


def _train(model: nn.Module, scaler: torch.amp.GradScaler | None) -> list[dict[str, torch.Tensor]]:
    """Train one epoch over BATCHES; returns the gradients a hook saw at each step."""
    cfg = load_config(overrides=["train.lr=0.01", "train.epochs=1", "train.progress=false"]).train
    seen: list[dict[str, torch.Tensor]] = []

    def hook(step, core, batch, loss):
        seen.append({n: p.grad.detach().clone() for n, p in core.named_parameters() if p.grad is not None})

    trainer = EpochTrainer(model, cfg, CPU, len(BATCHES), hooks=(hook,))
    trainer.scaler = scaler
    trainer.train_epoch(1, BATCHES)
    return seen


def test_hooks_see_unscaled_gradients_and_the_step_is_unchanged() -> None:
    """With the loss scaled by 1024, the gradients a hook sees at every step are those of the unscaled loss (the
    gradients of the first step also equal autograd's on the initial model), and after the epoch the weights are
    those of the same training without a scaler: each gradient was unscaled exactly once."""
    plain, scaled = _model(), _model()
    initial = copy.deepcopy(plain)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    assert scaler.is_enabled()
    seen_plain, seen_scaled = _train(plain, None), _train(scaled, scaler)
    assert scaler.get_scale() == SCALE  # no inf/NaN step was skipped, the scale did not change
    names = [n for n, _ in initial.named_parameters()]
    loss = F.binary_cross_entropy_with_logits(initial(BATCHES[0]), BATCHES[0].label)
    first = dict(zip(names, torch.autograd.grad(loss, list(initial.parameters())), strict=True))
    for name, g in first.items():
        assert torch.equal(seen_scaled[0][name], g), name
    assert len(seen_scaled) == len(seen_plain) == len(BATCHES)
    for step_plain, step_scaled in zip(seen_plain, seen_scaled):
        assert step_plain.keys() == step_scaled.keys()
        for name in step_plain:
            assert torch.equal(step_scaled[name], step_plain[name]), name
    for (name, p), q in zip(plain.named_parameters(), scaled.parameters()):
        assert torch.equal(p, q), name
