"""One training epoch at a time: forward, mean BCE-with-logits, backward, hooks, Adam step, LR schedule, loss log."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ctr.config import TrainConfig
from ctr.train.device import autocast
from ctr.train.guard import NonFiniteGuard
from ctr.train.optim import build_optimizer, lr_factor
from ctr.types import Batch

Hook = Callable[[int, torch.nn.Module, Batch, torch.Tensor], None]  # (step, model, batch, loss) after backward
Log = Callable[[dict[str, Any]], None]  # receives one metrics record


def _no_log(record: dict[str, Any]) -> None:
    pass


@dataclass
class EpochStats:
    """What one call of :meth:`EpochTrainer.train_epoch` did.

    Attributes:
        epoch: the epoch number (1-based).
        step: optimizer steps taken since training began, after this epoch.
        train_loss: mean training loss over the epoch's batches (0 when it had none).
        samples: training rows seen by this rank.
        seconds: wall time of the epoch (training only).
    """

    epoch: int
    step: int
    train_loss: float
    samples: int
    seconds: float

    @property
    def samples_per_sec(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


@dataclass
class EpochProgress:
    """How far an epoch got: what a checkpoint needs to continue it mid-way as if never interrupted.

    Attributes:
        epoch: the epoch number (1-based).
        batches: batches of the epoch consumed (skipped non-finite ones included).
        loss_sum: (,) float32 sum of the applied steps' losses, on the training device (no sync per step).
        loss_n: steps applied this epoch.
        samples: training rows of the applied steps.
        seconds: training time of the epoch so far.
    """

    epoch: int
    batches: int = 0
    loss_sum: torch.Tensor | None = None
    loss_n: int = 0
    samples: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["loss_sum"] = 0.0 if self.loss_sum is None else float(self.loss_sum)  # float32 -> float64: exact
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        return cls(**{**state, "loss_sum": torch.tensor(state["loss_sum"], dtype=torch.float32)})


class EpochTrainer:
    """Trains ``model`` one epoch at a time with Adam (:func:`ctr.train.optim.build_optimizer`) on mean BCE-with-logits.

    Owns everything that changes from step to step besides the weights: the optimizer (and its moments), the
    step count that drives the LR schedule (:func:`ctr.train.optim.lr_factor` over
    ``min(steps_per_epoch * epochs, max_steps)`` steps), the fp16 gradient scaler and the divergence guard's
    counts; :meth:`state_dict` holds them all. The weights live in the model.

    Args:
        model: a CTR model (or its DDP wrapper) on ``device``, mapping a Batch of B rows to (B,) logits.
        cfg: the ``train`` config (lr, schedule, precision, compile, max_steps, log_every).
        device: where batches are moved before the forward pass.
        steps_per_epoch: batches per epoch, for the schedule's length, the progress bar and the last loss record.
        hooks: called after each backward pass, before the optimizer step, as ``hook(step, model, batch, loss)``
            with the unwrapped model and the 0-based step (diagnostics); under fp16 the gradients they see are
            already unscaled (the true gradients of ``loss``).
        progress: show a tqdm bar per epoch on stderr.
        guard: the divergence guard (default: one per ``train.on_nonfinite`` for a single process).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: TrainConfig,
        device: torch.device,
        steps_per_epoch: int,
        hooks: tuple[Hook, ...] = (),
        progress: bool = False,
        guard: NonFiniteGuard | None = None,
    ) -> None:
        self.model = model
        self.core = getattr(model, "module", model)  # DDP wraps the model; hooks see the model itself
        self.cfg = cfg
        self.device = device
        self.steps_per_epoch = steps_per_epoch
        self.hooks = hooks
        self.progress = progress
        self.guard = guard or NonFiniteGuard(cfg.on_nonfinite, cfg.skip_limit)
        self.step = 0
        self.epoch = 0
        self.optimizer = build_optimizer(model, cfg)
        self.total_steps = min(steps_per_epoch * cfg.epochs, cfg.max_steps or math.inf)
        self.scheduled = bool(cfg.warmup_steps) or cfg.decay != "none"  # constant lr: no per-step scheduler work
        self.optimizer.set_lr_factor(lr_factor(0, self.total_steps, cfg))
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.step_model = torch.compile(model) if cfg.compile else model

    @property
    def done(self) -> bool:
        """True once ``train.max_steps`` (when set) steps were taken."""
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group now (the schedule sets all groups alike)."""
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, batch: Batch) -> torch.Tensor | None:
        """One optimizer step on ``batch`` (already on the device).

        Returns:
            the () loss, still attached to the graph; None when the guard skipped the batch (non-finite values
            under ``train.on_nonfinite: skip_batch``): no update, no step counted.

        Raises:
            Diverged: a non-finite loss or gradient under ``train.on_nonfinite: stop``.
        """
        with autocast(self.device, self.cfg.precision):
            logits = self.step_model(batch)
        loss = weighted_bce(logits.float(), batch.label, batch.weight)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        # under fp16 the scaler owns gradient overflow (it skips those steps itself): only the loss is checked
        if not self.guard.check(loss, self.optimizer.param_groups, self.scaler is None, self.step + 1, self.epoch):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler and self.hooks:
            # hooks read true gradients, not gradients times the loss scale; ``step`` then skips its own unscale
            # (one unscale per optimizer per step, as GradScaler requires) and still skips the step on inf/NaN
            for opt in self.optimizer.optimizers:
                self.scaler.unscale_(opt)
        for hook in self.hooks:
            hook(self.step, self.core, batch, loss)
        if self.scaler:
            for opt in self.optimizer.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.step += 1
        if self.scheduled:
            self.optimizer.set_lr_factor(lr_factor(self.step, self.total_steps, self.cfg))
        return loss

    def train_epoch(
        self,
        epoch: int,
        batches: Iterable[Batch],
        log: Log = _no_log,
        after_step: Callable[[EpochProgress], None] | None = None,
        resume: EpochProgress | None = None,
    ) -> EpochStats:
        """Train on every batch of ``batches`` (or until :attr:`done`), in train mode.

        Every ``log_every`` steps, and after the epoch's last scheduled step, ``log`` receives
        ``{"epoch", "step", "train_loss" (mean of the epoch so far), "lr"}``.

        Args:
            after_step: called after each batch with the epoch's progress (checkpoints, interruptions).
            resume: the progress of this epoch when it is continued after an interruption; ``batches`` then
                holds the epoch's remaining batches.
        """
        cfg = self.cfg
        self.model.train()
        self.epoch = epoch
        p = resume or EpochProgress(epoch)
        p.loss_sum = torch.zeros((), device=self.device) if p.loss_sum is None else p.loss_sum.to(self.device)
        t0, seconds0 = time.perf_counter(), p.seconds
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.batches,
            desc=f"epoch {epoch}",
            disable=not self.progress,
            leave=False,
            unit="step",
            mininterval=1.0,
        )
        for batch in batches:
            batch = batch.to(self.device, non_blocking=True)
            loss = self.train_step(batch)
            p.batches += 1
            if loss is not None:
                p.loss_sum += loss.detach()
                p.loss_n += 1
                p.samples += len(batch)
            p.seconds = seconds0 + time.perf_counter() - t0
            if loss is not None and (self.step % cfg.log_every == 0 or p.loss_n == self.steps_per_epoch):
                mean_loss = float(p.loss_sum) / p.loss_n
                bar.set_postfix(loss=f"{mean_loss:.4f}", samples_per_s=f"{p.samples / max(p.seconds, 1e-9):,.0f}")
                record = {"epoch": epoch, "step": self.step, "train_loss": mean_loss, "lr": self.lr}
                log(record | ({"skipped_batches": self.guard.skipped} if self.guard.skipped else {}))
            bar.update(1)
            if after_step is not None:
                after_step(p)
            if self.done:
                break
        bar.close()
        return EpochStats(epoch, self.step, float(p.loss_sum) / max(p.loss_n, 1), p.samples, p.seconds)

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' states, the step count (which fixes the LR), the gradient scaler's and the guard's state."""
        return {
            "step": self.step,
            "optimizers": [o.state_dict() for o in self.optimizer.optimizers],
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "guard": self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a trainer built the same way (same model structure and config)."""
        for opt, opt_state in zip(self.optimizer.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        # torch's load_state_dict replaces each optimizer's group dicts (``base_lr`` included, as saved), so the
        # combined list the schedule writes to must be rebuilt or the new lr would go to the discarded dicts
        self.optimizer.param_groups = [g for o in self.optimizer.optimizers for g in o.param_groups]
        if self.scaler and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state["guard"])
        self.step = state["step"]
        self.optimizer.set_lr_factor(lr_factor(self.step, self.total_steps, self.cfg))


def weighted_bce(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean BCE-with-logits over the batch; with example weights, their weighted mean (sum w * l / sum w)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, label)
    losses = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
    return (weight * losses).sum() / weight.sum().clamp(min=1e-12)
