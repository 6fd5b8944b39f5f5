"""The training loop: epochs of :class:`EpochTrainer`, validation AUC after each, early stopping, best weights kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ctr.config import RunConfig
from ctr.train.checkpoint import Checkpointer
from ctr.train.data_source import DataSource
from ctr.train.distributed import SINGLE_PROCESS, DistContext, any_rank, broadcast_flag
from ctr.train.early_stopping import EarlyStopping
from ctr.train.epoch import EpochProgress, EpochStats, EpochTrainer, Hook
from ctr.train.evaluation import NonFinitePredictions, evaluate
from ctr.train.guard import Diverged, NonFiniteGuard
from ctr.train.interrupt import Interrupted, StopRequests
from ctr.train.run_dir import RunDir


@dataclass
class FitResult:
    """What :func:`fit` reports (rank 0's view; other ranks see no validation figures).

    Attributes:
        best_epoch: the epoch whose weights the model holds (0 when no epoch was evaluated).
        best_valid: ``{"auc", "logloss"}`` of that epoch on the validation split.
        epochs: epochs trained.
        seconds: training time of this rank, evaluation excluded.
        samples_per_sec: this rank's training rows per second.
        history: one metrics record per evaluated epoch (as in ``metrics.jsonl``).
        skipped_batches: batches whose update the divergence guard dropped (``train.on_nonfinite: skip_batch``).
    """

    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    seconds: float
    samples_per_sec: float
    history: list[dict] = field(default_factory=list)
    skipped_batches: int = 0


@dataclass
class FitState:
    """The loop's own state between epochs: what :class:`FitResult` sums, and where training resumes.

    Attributes:
        epoch: the epoch to train next (or to continue, when ``progress`` is set).
        progress: how far that epoch got when a checkpoint was written mid-epoch; None at an epoch boundary.
        seconds, samples, history: as in :class:`FitResult`, over the finished epochs.
    """

    epoch: int = 1
    progress: EpochProgress | None = None
    seconds: float = 0.0
    samples: int = 0
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": self.progress.state_dict() if self.progress else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FitState:
        progress = EpochProgress.from_state(state["progress"]) if state["progress"] else None
        return cls(**{**state, "progress": progress})


def fit(
    model: torch.nn.Module,
    data: DataSource,
    cfg: RunConfig,
    run_dir: RunDir,
    device: torch.device,
    hooks: tuple[Hook, ...] = (),
    ctx: DistContext = SINGLE_PROCESS,
    checkpoint: dict[str, Any] | None = None,
    stop: StopRequests | None = None,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the epoch with the best valid AUC.

    Every ``train.checkpoint_every`` steps and after each epoch, ``run_dir`` gets a checkpoint
    (:mod:`ctr.train.checkpoint`) from which a killed run continues with the same result.

    Args:
        model: a CTR model (or its DDP wrapper) already on ``device``.
        data: this rank's batches (training, per epoch) and the validation split's.
        cfg: the resolved run config (``train`` section drives the loop).
        run_dir: receives the metrics records, checkpoints and ``model.pt`` (best weights); :class:`NoRunDir` on
            ranks != 0.
        hooks: called after each backward pass (diagnostics).
        ctx: the distributed context; only rank 0 evaluates and shows progress, and its early-stopping decision
            is broadcast to the other ranks.
        checkpoint: a checkpoint of this run to continue from (every rank reads the same one).
        stop: signals received; after the step in which one arrives, a checkpoint is written and
            :class:`Interrupted` raised.

    Raises:
        Diverged: a non-finite loss, gradient or validation prediction (``train.on_nonfinite``); ``model.pt`` and
            the last checkpoint are left as they were.
        Interrupted: a stop signal arrived.
    """
    tc, core = cfg.train, getattr(model, "module", model)
    guard = NonFiniteGuard(tc.on_nonfinite, tc.skip_limit, agree=lambda flag: any_rank(ctx, flag))
    trainer = EpochTrainer(
        model, tc, device, data.steps_per_epoch, hooks, progress=tc.progress and ctx.is_main, guard=guard
    )
    stopping = EarlyStopping(tc.patience)
    state = FitState.from_state(checkpoint["fit"]) if checkpoint is not None else FitState()
    saver = Checkpointer(cfg, core, trainer, stopping, state, run_dir, ctx)
    if checkpoint is not None:
        saver.restore(checkpoint)

    def after_step(progress: EpochProgress) -> None:
        if stop is not None and any_rank(ctx, bool(stop.signum)):
            saver.save(progress)
            raise Interrupted(f"interrupted at step {trainer.step}; {saver.resume_hint()}", stop.signum or 15)
        if tc.checkpoint_every and trainer.step % tc.checkpoint_every == 0:
            saver.save(progress)

    try:
        while state.epoch <= tc.epochs and not (stopping.stop or trainer.done):
            epoch, resume = state.epoch, state.progress
            batches = data.train_batches(epoch, skip=resume.batches if resume else 0)
            stats = trainer.train_epoch(epoch, batches, run_dir.log_metrics, after_step, resume)
            state.seconds += stats.seconds
            state.samples += stats.samples
            if ctx.is_main:
                validate(core, data, cfg, device, stats, stopping, state.history, run_dir)
            stopping.stop = broadcast_flag(ctx, stopping.stop)  # other ranks follow rank 0's decision
            state.epoch, state.progress = epoch + 1, None
            saver.save(None)
    except Diverged as e:
        raise Diverged(e.step, e.epoch, e.what, saver.divergence_advice(tc.on_nonfinite)) from None
    stopping.restore_best(core)
    return FitResult(
        stopping.best_epoch,
        stopping.best_valid,
        len(state.history) or tc.epochs,
        state.seconds,
        state.samples / max(state.seconds, 1e-9),
        state.history,
        guard.skipped,
    )


def validate(
    core: torch.nn.Module,
    data: DataSource,
    cfg: RunConfig,
    device: torch.device,
    stats: EpochStats,
    stopping: EarlyStopping,
    history: list[dict],
    run_dir: RunDir,
) -> None:
    """Score the epoch on the validation split, log its record, and save the weights when they are the best.

    Raises:
        Diverged: the model's validation predictions are not finite.
    """
    try:
        valid = evaluate(core, data.eval_batches("valid"), device, cfg.train.precision, "valid")
    except NonFinitePredictions:
        raise Diverged(stats.step, stats.epoch, "predictions on the valid split") from None
    record = {
        "epoch": stats.epoch,
        "step": stats.step,
        "train_loss": stats.train_loss,
        "valid_auc": valid["auc"],
        "valid_logloss": valid["logloss"],
        "samples_per_sec": stats.samples_per_sec,
        "seconds": stats.seconds,
    }
    history.append(record)
    run_dir.log_metrics(record)
    if stopping.update(stats.epoch, valid, core):
        run_dir.save_model(stopping.best_state)
