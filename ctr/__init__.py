"""ctr: CTR prediction in PyTorch with pluggable normalization at every stage of every model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctr.train.saved_run import SavedRun

__version__ = "0.1.0"


def load_run(run_dir: str | Path, device: str | None = None) -> SavedRun:
    """A trained run from its directory: ``load_run(DIR).predict(frame)`` gives click probabilities of raw rows;
    ``.config``, ``.schema`` and ``.model`` are the run's (see :class:`ctr.train.saved_run.SavedRun`)."""
    from ctr.train.saved_run import load_run as _load

    return _load(run_dir, device)


def list_models() -> list[str]:
    """Registered model names."""
    from ctr.models import list_models as _list

    return _list()


def list_norms() -> list[str]:
    """Registered norm names."""
    from ctr.nn.norm import list_norms as _list

    return _list()
