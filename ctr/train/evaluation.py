"""Scoring a model on a split: eval-mode logits over its batches, then AUC, logloss, calibration and (when the
data declares groups) group AUC of the whole split."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ctr.errors import CTRError
from ctr.metrics import auc, calibration, group_auc, logloss
from ctr.train.device import autocast
from ctr.types import Batch


class NonFinitePredictions(CTRError):
    """The model predicts NaN or infinity for some rows (its weights diverged)."""


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Eval-mode logits, labels and group keys over all ``batches``, in order.

    The model's train/eval mode is restored afterwards.

    Returns:
        logits (N,) float64, labels (N,) float64, N = rows of all batches, and the (N,) int64 group keys when the
        batches carry them (else None).

    Raises:
        ValueError: ``batches`` is empty.
    """
    was_training = model.training
    model.eval()
    logits, labels, groups = [], [], []
    for batch in batches:
        if batch.group is not None:
            groups.append(batch.group)
        batch = batch.to(device, non_blocking=True)
        with autocast(device, precision):
            out = model(batch)
        logits.append(out.float().cpu())
        labels.append(batch.label.cpu())
    model.train(was_training)
    if not logits:
        raise ValueError("cannot evaluate an empty split")
    group = torch.cat(groups).numpy() if groups else None
    return torch.cat(logits).double().numpy(), torch.cat(labels).double().numpy(), group


def score(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """AUC, logloss and calibration (mean prediction / click rate) of (N,) ``logits`` against (N,) 0/1 ``labels``
    over a whole split, and the group AUC when (N,) ``groups`` are given and some group holds both classes."""
    prob = 1.0 / (1.0 + np.exp(-logits))
    out = {"auc": auc(labels, logits), "logloss": logloss(labels, prob), "calibration": calibration(labels, prob)}
    if groups is not None:
        try:
            out["gauc"] = group_auc(labels, logits, groups)
        except ValueError:  # no group with both classes: reported as absent, not as a number
            pass
    return out


def evaluate(
    model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, precision: str = "fp32", split: str = ""
) -> dict[str, float]:
    """:func:`score` of ``model`` (in eval mode) over all ``batches`` of a split.

    Raises:
        NonFinitePredictions: some logits are NaN or infinite.
        CTRError: the split cannot be scored (empty, or one class only: AUC is undefined), naming ``split``.
    """
    try:
        logits, labels, groups = predict_logits(model, batches, device, precision)
    except ValueError as e:
        raise CTRError(f"cannot score the {split or 'evaluation'} split: {e}") from None
    bad = int((~np.isfinite(logits)).sum())
    if bad:
        raise NonFinitePredictions(f"the model predicts NaN or infinity for {bad} of {len(logits)} {split} rows")
    try:
        return score(logits, labels, groups)
    except ValueError as e:
        raise CTRError(f"cannot score the {split or 'evaluation'} split: {e}") from None
