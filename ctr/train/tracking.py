"""TensorBoard tracking (``train.tensorboard: true``): every metrics and diagnostics record as scalars.

Event files go to ``<run>/tensorboard``; an ablation study's runs sit side by side under its ``runs/`` directory,
so ``tensorboard --logdir <study>/runs`` compares them. Tags: ``train/loss`` (mean of the epoch so far),
``train/lr``, ``train/skipped_batches``, per epoch ``train/epoch_loss``, ``valid/auc``, ``valid/logloss``,
``speed/samples_per_sec``, and ``diagnostics/<key>/...`` for each numeric value of a diagnostics
record (gradient norms per weight matrix, activation statistics). The step axis is the optimizer step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctr.errors import CTRError

STEP_TAGS = {"train_loss": "train/loss", "lr": "train/lr", "skipped_batches": "train/skipped_batches"}
EPOCH_TAGS = {
    "train_loss": "train/epoch_loss",
    "valid_auc": "valid/auc",
    "valid_logloss": "valid/logloss",
    "samples_per_sec": "speed/samples_per_sec",
}


class TensorBoardLog:
    """Writes records to a TensorBoard event directory.

    Args:
        path: the event directory.
        purge_step: on a resumed run, the checkpoint's step: events at or after it (written before the
            interruption, and written again now) are dropped.

    Raises:
        CTRError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, path: Path, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CTRError("train.tensorboard needs the tensorboard package: pip install 'ctr[tensorboard]'") from None
        self.writer = SummaryWriter(str(path), purge_step=purge_step)

    def metrics(self, record: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` record: a step's training loss and lr, or an epoch's validation figures."""
        tags = EPOCH_TAGS if "valid_auc" in record else STEP_TAGS
        for key, tag in tags.items():
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(tag, record[key], record["step"])

    def diagnostics(self, record: dict[str, Any]) -> None:
        """One ``diagnostics.jsonl`` record: every numeric leaf as ``diagnostics/<path>``."""
        for tag, value in _leaves(record, "diagnostics"):
            if not tag.endswith("/step"):
                self.writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        self.writer.close()


def _leaves(obj: Any, prefix: str):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix, float(obj)
