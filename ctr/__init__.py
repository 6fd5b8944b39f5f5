"""ctr: CTR prediction in PyTorch with pluggable normalization at every stage of every model."""

from __future__ import annotations

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Registered model names."""
    from ctr.models import list_models as _list

    return _list()


def list_norms() -> list[str]:
    """Registered norm names."""
    from ctr.nn.norm import list_norms as _list

    return _list()
