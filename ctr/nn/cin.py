"""Compressed Interaction Network (xDeepFM, Lian et al., KDD 2018), with the ``cin`` stage norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
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

    ``split_half`` (the released code of Lian et al., github.com/Leavingseason/xDeepFM, ``exDeepFM.py``,
    ``_build_extreme_FM`` with ``direct=False``): every layer but the last sends its first H_k / 2 maps to the next
    layer and its other H_k / 2 maps to the output (sum pooling); the last layer sends all its maps to the output.
    So layer k + 1 sees H_k / 2 maps and the output has sum_{k<T} H_k / 2 + H_T values. Without it (the paper's
    formula) every map of every layer goes to both.

    Args:
        num_fields: F.
        dim: D.
        layer_sizes: H_1, ..., H_T (all but the last even with ``split_half``).
        norm: the ``cin`` stage norm (on each layer's H_k maps, before the split).
        split_half: split each hidden layer's maps between the next layer and the output.
    """

    def __init__(
        self, num_fields: int, dim: int, layer_sizes: list[int], norm: NormSpec | str = "none", split_half: bool = False
    ) -> None:
        super().__init__()
        spec = parse_norm(norm, "cin")
        if split_half and any(h % 2 for h in layer_sizes[:-1]):
            raise ConfigError(f"model.cin_layers {layer_sizes}: with split_half every layer but the last must be even")
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        self.split_half = split_half
        prev, out = num_fields, 0
        for k, h in enumerate(layer_sizes):
            linear, norm_layer = spec.apply(nn.Linear(prev * num_fields, h, bias=False), (dim, h))
            self.linears.append(linear)
            self.norms.append(norm_layer)
            last = k == len(layer_sizes) - 1
            prev = h // 2 if split_half else h
            out += h if last or not split_half else h // 2
        self.out_dim = out

    def forward(self, x0: Tensor) -> Tensor:
        """(B, F, D) -> (B, out_dim): the sum-pooled output maps of every layer, concatenated."""
        x0 = x0.transpose(1, 2)  # (B, D, F)
        xk = x0
        pooled = []
        for k, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            z = (xk.unsqueeze(-1) * x0.unsqueeze(-2)).flatten(2)  # (B, D, H_{k-1}, F) -> (B, D, H_{k-1} * F)
            h = norm(linear(z))  # (B, D, H_k)
            if self.split_half and k < len(self.linears) - 1:
                xk, direct = h.chunk(2, dim=-1)  # (B, D, H_k / 2) each: to the next layer, to the output
            else:
                xk = direct = h
            pooled.append(direct.sum(dim=1))  # (B, H_k or H_k / 2)
        return torch.cat(pooled, dim=1)  # (B, out_dim)
