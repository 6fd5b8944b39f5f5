"""`Batch`: prepared rows as tensors, what models consume (shape letters: see :mod:`ctr.data.schema`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` along dim 0. On CPU through numpy: a single-threaded gather of a few MB takes ~0.1 ms, while
    torch's intra-op threads can stall for milliseconds when another process holds the other cores."""
    if t.device.type == "cpu" and index.device.type == "cpu":
        return torch.from_numpy(np.take(t.numpy(), index.numpy(), axis=0))
    return t.index_select(0, index)


@dataclass
class Batch:
    """Prepared rows as tensors: a training batch, or a whole split held in memory (N rows).

    Attributes:
        ids: (B, Fc) int64, per-field ids in ``[0, vocab_size)``, columns in ``Schema.id_fields`` order.
        dense: (B, Fn) float32 values, columns in ``Schema.dense_fields`` order (0 where missing).
        dense_missing: (B, Fn) bool, True where the raw value was missing.
        label: (B,) float32 in {0, 1}.
    """

    ids: torch.Tensor
    dense: torch.Tensor
    dense_missing: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return self.label.shape[0]

    def rows(self, index: torch.Tensor | slice) -> "Batch":
        """Rows ``index`` (an int64 index tensor, or a slice for a zero-copy view)."""
        if isinstance(index, slice):
            return Batch(self.ids[index], self.dense[index], self.dense_missing[index], self.label[index])
        return Batch(*(take_rows(t, index) for t in (self.ids, self.dense, self.dense_missing, self.label)))

    @staticmethod
    def concat(parts: list["Batch"]) -> "Batch":
        """The rows of ``parts`` one after another (``parts[0]`` itself when there is one part)."""
        if len(parts) == 1:
            return parts[0]
        return Batch(*(torch.cat([getattr(p, k) for p in parts]) for k in ("ids", "dense", "dense_missing", "label")))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.ids, self.dense, self.dense_missing, self.label)))
