"""Data: reading raw files, fitting encoders on train, cached Parquet preparation and tensor batches.

Submodules are imported on first use (``ctr.data.prepare_data`` etc.), so ``python -m ctr.data.generate`` and
code that only needs the reader do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BadRowReport": "criteo",
    "RawBatch": "criteo",
    "read_criteo": "criteo",
    "TableEncoder": "encoders",
    "default_data_path": "generate",
    "generate_criteo": "generate",
    "iterate_batches": "loader",
    "load_split": "loader",
    "stream_batches": "loader",
    "PreparedData": "prepare",
    "encode_raw": "prepare",
    "encode_source_split": "prepare",
    "prepare_data": "prepare",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ctr.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"ctr.data.{_EXPORTS[name]}"), name)
