"""Compressed Interaction Network (xDeepFM, Lian et al., KDD 2018), with the ``cin`` stage norm."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.nn.norm import NormSpec, parse_norm


class CIN(nn.Module):
    """Stack of CIN layers: ``X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j)``, each sum-pooled over D.

    Shape letters: H_k feature maps in layer k (H_0 = F). A layer is a 1x1 convolution over the H_{k-1} * F outer
    products, i.e. a Linear from H_{k-1} * F to H_k channels applied at each of the D embedding positions; it is
    held as an ``nn.Linear`` (no bias, as in the paper's formula) and run in a (B, D, H) layout, so no transposes
    sit between layers.

    Norm: ``norm.cin`` follows every layer's Linear and sees its (B, D, H_k) output, i.e. per-example norms take
    statistics over the H_k feature maps at each embedding position d (the layer's output units, as LN over an
    MLP layer's units), with gains per (d, h); ``bn`` normalises each (d, h) over the batch. Statistics over D
    within each map were not chosen: sum pooling over D of a map re-centred over D is a constant (``ln_simple``
    would make the CIN output identically 0). The normalised maps feed both the pooling and the next layer.
    ``wn`` weight-normalises each layer's Linear (one gain per output feature map) instead.

    Args:
        num_fields: F.
        dim: D.
        layer_sizes: H_1, ..., H_T.
        norm: the ``cin`` stage norm.
    """

    def __init__(self, num_fields: int, dim: int, layer_sizes: list[int], norm: NormSpec | str = "none") -> None:
        super().__init__()
        spec = parse_norm(norm, "cin")
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        prev = num_fields
        for h in layer_sizes:
            linear, norm_layer = spec.apply(nn.Linear(prev * num_fields, h, bias=False), (dim, h))
            self.linears.append(linear)
            self.norms.append(norm_layer)
            prev = h
        self.out_dim = sum(layer_sizes)

    def forward(self, x0: Tensor) -> Tensor:
        """(B, F, D) -> (B, sum_k H_k): the sum-pooled feature maps of every layer, concatenated."""
        x0 = x0.transpose(1, 2)  # (B, D, F)
        xk = x0
        pooled = []
        for linear, norm in zip(self.linears, self.norms):
            z = (xk.unsqueeze(-1) * x0.unsqueeze(-2)).flatten(2)  # (B, D, H_{k-1}, F) -> (B, D, H_{k-1} * F)
            xk = norm(linear(z))  # (B, D, H_k)
            pooled.append(xk.sum(dim=1))  # (B, H_k)
        return torch.cat(pooled, dim=1)  # (B, sum H_k)
