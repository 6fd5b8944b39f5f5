"""The training loop: epochs of :class:`EpochTrainer`, validation AUC after each, early stopping, best weights kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ctr.config import RunConfig
from ctr.train.data_source import DataSource
from ctr.train.distributed import SINGLE_PROCESS, DistContext, broadcast_flag
from ctr.train.early_stopping import EarlyStopping
from ctr.train.epoch import EpochTrainer, Hook
from ctr.train.evaluation import evaluate
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
    """

    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    seconds: float
    samples_per_sec: float
    history: list[dict] = field(default_factory=list)


def fit(
    model: torch.nn.Module,
    data: DataSource,
    cfg: RunConfig,
    run_dir: RunDir,
    device: torch.device,
    hooks: tuple[Hook, ...] = (),
    ctx: DistContext = SINGLE_PROCESS,
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the epoch with the best valid AUC.

    The state that would let a run continue after an interruption is the trainer's (:meth:`EpochTrainer.state_dict`),
    the early stopping's (:meth:`EarlyStopping.state_dict`), the weights and the next epoch.

    Args:
        model: a CTR model (or its DDP wrapper) already on ``device``.
        data: this rank's batches (training, per epoch) and the validation split's.
        cfg: the resolved run config (``train`` section drives the loop).
        run_dir: receives the metrics records and ``model.pt`` (best weights); :class:`NoRunDir` on ranks != 0.
        hooks: called after each backward pass (diagnostics).
        ctx: the distributed context; only rank 0 evaluates and shows progress, and its early-stopping decision
            is broadcast to the other ranks.
    """
    tc, core = cfg.train, getattr(model, "module", model)
    trainer = EpochTrainer(model, tc, device, data.steps_per_epoch, hooks, progress=tc.progress and ctx.is_main)
    stopping = EarlyStopping(tc.patience)
    history, seconds, samples = [], 0.0, 0
    for epoch in range(1, tc.epochs + 1):
        stats = trainer.train_epoch(epoch, data.train_batches(epoch), run_dir.log_metrics)
        seconds += stats.seconds
        samples += stats.samples
        if ctx.is_main:
            valid = evaluate(core, data.eval_batches("valid"), device, tc.precision, "valid")
            record = {
                "epoch": epoch,
                "step": stats.step,
                "train_loss": stats.train_loss,
                "valid_auc": valid["auc"],
                "valid_logloss": valid["logloss"],
                "samples_per_sec": stats.samples_per_sec,
                "seconds": stats.seconds,
            }
            history.append(record)
            run_dir.log_metrics(record)
            if stopping.update(epoch, valid, core):
                run_dir.save_model(stopping.best_state)
        if broadcast_flag(ctx, stopping.stop) or trainer.done:  # other ranks follow rank 0's decision
            break
    stopping.restore_best(core)
    return FitResult(
        stopping.best_epoch,
        stopping.best_valid,
        len(history) or tc.epochs,
        seconds,
        samples / max(seconds, 1e-9),
        history,
    )
