"""Cross networks of DCN (Wang et al., ADKDD 2017) and DCN-V2 (Wang et al., WWW 2021), with the ``cross`` stage norm.

Every cross layer's output (the residual sum, shape (F*D,)) passes through ``norm.cross``:
``x_{l+1} = Norm(cross_l(x_l) + x_l)``. ``wn`` weight-normalises the layer's weights instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.nn.norm import NormSpec, parse_norm


class CrossNet(nn.Module):
    """DCN (v1) cross network: ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l``.

    ``w_l`` is held as an ``nn.Linear(in_dim, 1)`` weight (1, in_dim), so ``wn`` normalises the whole vector:
    ``w = g * v / ||v||`` with one scalar gain per layer.

    Args:
        in_dim: width of x_0 (F*D).
        num_layers: L cross layers.
        norm: the ``cross`` stage norm, shape (in_dim,).
    """

    def __init__(self, in_dim: int, num_layers: int, norm: NormSpec | str = "none") -> None:
        super().__init__()
        spec = parse_norm(norm, "cross")
        self.weights, self.norms = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_layers):
            linear, norm_layer = spec.apply(nn.Linear(in_dim, 1, bias=False), in_dim)
            self.weights.append(linear)
            self.norms.append(norm_layer)
        self.biases = nn.Parameter(torch.zeros(num_layers, in_dim))
        self.out_dim = in_dim

    def forward(self, x0: Tensor) -> Tensor:
        """(B, in_dim) -> (B, in_dim)."""
        x = x0
        for w, b, norm in zip(self.weights, self.biases, self.norms):
            x = norm(x0 * w(x) + b + x)  # (B, in_dim); w(x): (B, 1)
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 cross network: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, optionally low-rank or a mixture of experts.

    * ``low_rank=None``: full-rank W_l (in_dim x in_dim), the paper's default DCN-V2.
    * ``low_rank=r, num_experts=1``: ``W_l = U_l V_l^T`` with rank r (paper Eq. 3).
    * ``low_rank=r, num_experts=K > 1``: DCN-Mix (paper Eq. 4), ``x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l`` with
      ``E_i(x_l) = x_0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b_i)`` and softmax gates ``G(x_l)`` over the experts.

    ``wn`` weight-normalises every projection (W, U, V, C), one gain per output unit; gates stay plain.

    Args:
        in_dim: width of x_0 (F*D).
        num_layers: L cross layers.
        norm: the ``cross`` stage norm, shape (in_dim,).
        low_rank: rank r of the factorised W, or None for full rank.
        num_experts: K experts per layer (only with ``low_rank``).
    """

    def __init__(
        self,
        in_dim: int,
        num_layers: int,
        norm: NormSpec | str = "none",
        low_rank: int | None = None,
        num_experts: int = 1,
    ) -> None:
        super().__init__()
        spec = parse_norm(norm, "cross")
        self.layers, self.norms = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_layers):
            layer = _CrossV2Layer(in_dim, spec, low_rank, num_experts)
            self.layers.append(layer)
            self.norms.append(nn.Identity() if spec.reparametrizes else spec.build(in_dim))
        self.out_dim = in_dim

    def forward(self, x0: Tensor) -> Tensor:
        """(B, in_dim) -> (B, in_dim)."""
        x = x0
        for layer, norm in zip(self.layers, self.norms):
            x = norm(layer(x0, x) + x)  # (B, in_dim)
        return x


class _CrossV2Layer(nn.Module):
    """One DCN-V2 cross term without the residual: ``x_0 * (W x_l + b)`` (full, low-rank or mixture)."""

    def __init__(self, in_dim: int, spec: NormSpec, low_rank: int | None, num_experts: int) -> None:
        super().__init__()

        def linear(i: int, o: int, bias: bool) -> nn.Module:
            return spec.reparametrize(nn.Linear(i, o, bias=bias))  # wn, or the plain Linear

        self.mixture = low_rank is not None and num_experts > 1
        if low_rank is None:
            self.w = linear(in_dim, in_dim, True)
        elif not self.mixture:
            self.w = nn.Sequential(linear(in_dim, low_rank, False), linear(low_rank, in_dim, True))  # U (V^T x) + b
        else:
            self.v = nn.ModuleList(linear(in_dim, low_rank, False) for _ in range(num_experts))
            self.c = nn.ModuleList(linear(low_rank, low_rank, False) for _ in range(num_experts))
            self.u = nn.ModuleList(linear(low_rank, in_dim, True) for _ in range(num_experts))
            self.gate = nn.Linear(in_dim, num_experts, bias=False)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        """x0, x: (B, in_dim) -> (B, in_dim)."""
        if not self.mixture:
            return x0 * self.w(x)  # (B, in_dim)
        experts = torch.stack(
            [x0 * u(torch.tanh(c(torch.tanh(v(x))))) for v, c, u in zip(self.v, self.c, self.u)], dim=1
        )  # (B, K, in_dim)
        gates = torch.softmax(self.gate(x), dim=-1)  # (B, K)
        return (gates.unsqueeze(-1) * experts).sum(dim=1)  # (B, in_dim)
