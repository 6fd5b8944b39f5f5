"""Scoring a model on a split: eval-mode logits over its batches, then AUC and logloss of the whole split."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ctr.metrics import auc, logloss
from ctr.train.device import autocast
from ctr.types import Batch


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode logits and labels over all ``batches``, in order.

    The model's train/eval mode is restored afterwards.

    Returns:
        logits (N,) float64 and labels (N,) float64, N = rows of all batches.

    Raises:
        ValueError: ``batches`` is empty.
    """
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
    """AUC and logloss of (N,) ``logits`` against (N,) 0/1 ``labels`` over a whole split."""
    prob = 1.0 / (1.0 + np.exp(-logits))
    return {"auc": auc(labels, logits), "logloss": logloss(labels, prob)}


def evaluate(
    model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, precision: str = "fp32"
) -> dict[str, float]:
    """``{"auc", "logloss"}`` of ``model`` (in eval mode) over all ``batches`` of a split."""
    return score(*predict_logits(model, batches, device, precision))
