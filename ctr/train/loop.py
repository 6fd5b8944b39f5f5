"""The training loop: Adam on mean BCE-with-logits, warm-up/decay, early stopping on valid AUC, best weights kept."""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ctr.config import RunConfig
from ctr.types import Batch
from ctr.metrics import auc, logloss
from ctr.train import io
from ctr.train.distributed import DistContext, broadcast_flag
from ctr.train.optim import build_optimizer, lr_factor

BatchSource = Callable[[int], Iterable[Batch]]  # epoch -> batches
Hook = Callable[[int, torch.nn.Module, Batch, torch.Tensor], None]  # (step, model, batch, loss) after backward


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast around forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode logits and labels over all ``batches``, in order: ((N,) float64, (N,) float64)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in batches:
        batch = batch.to(device, non_blocking=True)
        with autocast(device, precision):
            out = model(batch)
        logits.append(out.float().cpu())
        labels.append(batch.label.cpu())
    model.train(was_training)
    if not logits:
        raise ValueError("cannot evaluate an empty split")
    return torch.cat(logits).double().numpy(), torch.cat(labels).double().numpy()


def score(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC and logloss of logits over a whole split."""
    prob = 1.0 / (1.0 + np.exp(-logits))
    return {"auc": auc(labels, logits), "logloss": logloss(labels, prob)}


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    seconds: float
    samples_per_sec: float
    history: list[dict] = field(default_factory=list)


def fit(model: torch.nn.Module, train_batches: BatchSource, valid_batches: Callable[[], Iterable[Batch]],
        cfg: RunConfig, run_dir: Path | None, device: torch.device, steps_per_epoch: int,
        hooks: tuple[Hook, ...] = (), ctx: DistContext = DistContext()) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the epoch with the best valid AUC.

    Args:
        model: a CTR model (or its DDP wrapper) already on ``device``.
        train_batches: ``epoch -> batches``, shuffled by the loader with the run's seed and the epoch.
        valid_batches: ``() -> batches`` of the validation split, in order.
        cfg: the resolved run config (``train`` section drives the loop).
        run_dir: where ``metrics.jsonl`` and ``model.pt`` (best weights) go; None writes nothing.
        steps_per_epoch: for the schedule and the progress bar.
        hooks: called after each backward pass (diagnostics).
        ctx: the distributed context; only rank 0 evaluates, writes files and shows progress, and its
            early-stopping decision is broadcast to the other ranks.
    """
    is_main = ctx.is_main
    tc = cfg.train
    optimizer = build_optimizer(model, tc)
    total_steps = min(steps_per_epoch * tc.epochs, tc.max_steps or math.inf)
    scheduled = bool(tc.warmup_steps) or tc.decay != "none"  # constant lr: no per-step scheduler work
    optimizer.set_lr_factor(lr_factor(0, total_steps, tc))
    scaler = torch.amp.GradScaler(device.type) if tc.precision == "fp16" else None
    step_model = torch.compile(model) if tc.compile else model
    core = getattr(model, "module", model)
    best_auc, best_epoch, best_state, best_valid, bad_epochs = -math.inf, 0, None, {}, 0
    history, train_seconds, samples = [], 0.0, 0
    metrics_path = run_dir / io.METRICS if run_dir is not None and is_main else None
    step = 0
    for epoch in range(1, tc.epochs + 1):
        model.train()
        t0, epoch_samples = time.perf_counter(), 0
        loss_sum, loss_n = torch.zeros((), device=device), 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", disable=not (tc.progress and is_main), leave=False,
                   unit="step", mininterval=1.0)
        for batch in train_batches(epoch):
            batch = batch.to(device, non_blocking=True)
            with autocast(device, tc.precision):
                logits = step_model(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), batch.label)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            for hook in hooks:
                hook(step, core, batch, loss)
            if scaler:
                for opt in optimizer.optimizers:
                    scaler.step(opt)
                scaler.update()
            else:
                optimizer.step()
            step += 1
            if scheduled:
                optimizer.set_lr_factor(lr_factor(step, total_steps, tc))
            loss_sum += loss.detach()
            loss_n += 1
            epoch_samples += len(batch)
            if step % tc.log_every == 0 or loss_n == steps_per_epoch:
                mean_loss = float(loss_sum) / loss_n
                rate = epoch_samples / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{rate:,.0f}")
                if metrics_path is not None:
                    io.append_jsonl(metrics_path, {"epoch": epoch, "step": step, "train_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]})
            bar.update(1)
            if tc.max_steps and step >= tc.max_steps:
                break
        bar.close()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        samples += epoch_samples
        stop = False
        if is_main:
            valid = score(*predict_logits(core, valid_batches(), device, tc.precision))
            record = {"epoch": epoch, "step": step, "train_loss": float(loss_sum) / max(loss_n, 1),
                      "valid_auc": valid["auc"], "valid_logloss": valid["logloss"],
                      "samples_per_sec": epoch_samples / max(seconds, 1e-9), "seconds": seconds}
            history.append(record)
            if metrics_path is not None:
                io.append_jsonl(metrics_path, record)
            if valid["auc"] > best_auc:
                best_auc, best_epoch, best_valid, bad_epochs = valid["auc"], epoch, valid, 0
                best_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
                if run_dir is not None:
                    io.save_state(run_dir / io.MODEL, best_state)
            else:
                bad_epochs += 1
                stop = bad_epochs >= tc.patience
        if broadcast_flag(ctx, stop) or (tc.max_steps and step >= tc.max_steps):
            break
    if best_state is not None:
        core.load_state_dict(best_state)
    return FitResult(best_epoch, best_valid, len(history) or tc.epochs, train_seconds, samples / max(train_seconds, 1e-9), history)
