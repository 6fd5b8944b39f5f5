"""Early stopping on validation AUC, keeping a copy of the best weights."""

from __future__ import annotations

import math
from typing import Any

import torch


class EarlyStopping:
    """The best validation AUC seen so far, its epoch, metrics and weights, and the count of epochs since.

    After each evaluated epoch, :meth:`update` records the epoch; :attr:`stop` turns True once ``patience``
    epochs in a row failed to beat the best AUC (an improvement never stops the run, whatever ``patience``).

    Args:
        patience: non-improving epochs in a row that stop training.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_auc = -math.inf
        self.best_epoch = 0
        self.best_valid: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.stop = False

    def update(self, epoch: int, valid: dict[str, float], model: torch.nn.Module) -> bool:
        """Record ``epoch``'s validation metrics (``{"auc", "logloss"}``) and ``model``'s weights after it.

        Returns:
            True when the epoch beat the best AUC; its weights were then copied into :attr:`best_state`.
        """
        if valid["auc"] > self.best_auc:
            self.best_auc, self.best_epoch, self.best_valid, self.bad_epochs = valid["auc"], epoch, valid, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.stop = False
            return True
        self.bad_epochs += 1
        self.stop = self.bad_epochs >= self.patience
        return False

    def restore_best(self, model: torch.nn.Module) -> None:
        """Load the best weights into ``model``; a no-op before any epoch was recorded."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue deciding as if never interrupted."""
        return {
            "best_auc": self.best_auc,
            "best_epoch": self.best_epoch,
            "best_valid": dict(self.best_valid),
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "stop": self.stop,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_auc, self.best_epoch = state["best_auc"], state["best_epoch"]
        self.best_valid, self.best_state = dict(state["best_valid"]), state["best_state"]
        self.bad_epochs, self.stop = state["bad_epochs"], state["stop"]
