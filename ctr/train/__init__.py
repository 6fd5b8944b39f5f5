"""Training, evaluation and run directories (everything that is not the model)."""
from __future__ import annotations

from ctr.train.run import evaluate_run, load_run, train_run

__all__ = ["evaluate_run", "load_run", "train_run"]
