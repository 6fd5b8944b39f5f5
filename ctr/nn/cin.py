"""Compressed Interaction Network (xDeepFM, Lian et al., KDD 2018), with the ``cin`` stage norm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.norm import NormSpec, parse_norm
from ctr.nn.tracing import capturing


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
            h = norm(cin_layer(xk, x0, linear))  # (B, D, H_k)
            if self.split_half and k < len(self.linears) - 1:
                xk, direct = h.chunk(2, dim=-1)  # (B, D, H_k / 2) each: to the next layer, to the output
            else:
                xk = direct = h
            pooled.append(direct.sum(dim=1))  # (B, H_k or H_k / 2)
        return torch.cat(pooled, dim=1)  # (B, out_dim)


def cin_layer(xk: Tensor, x0: Tensor, linear: nn.Module) -> Tensor:
    """``linear`` applied to the outer products: (B, D, H_{k-1}), (B, D, F) -> (B, D, H_k).

    A bias-free ``nn.Linear`` goes through :class:`_OuterLinear`; any other module (``wn``'s parametrized Linear
    reads its weight through the parametrization), and export (:func:`ctr.nn.tracing.capturing`), get the
    materialised outer product.
    """
    if type(linear) is nn.Linear and linear.bias is None and not capturing():
        return _OuterLinear.apply(xk, x0, linear.weight)
    return linear((xk.unsqueeze(-1) * x0.unsqueeze(-2)).flatten(2))  # (B, D, H_{k-1} * F) -> (B, D, H_k)


ROWS_PER_CHUNK_BYTES = 4 * 2**20  # outer products per chunk: a few MB, so each chunk's stay in the core's cache


class _OuterLinear(torch.autograd.Function):
    """``z @ W.T`` with ``z[r, i * F + j] = xk[r, i] * x0[r, j]`` for the B*D rows r, in chunks of rows.

    The (B*D, H_{k-1} * F) outer product is the largest tensor of xDeepFM (hundreds of MB at batch 4096): built
    whole, the layer is bound by memory traffic (writing z, keeping it for the backward, and the products and sums
    of its gradient). Here each chunk's z is built, multiplied and dropped while it is in cache; the backward
    rebuilds it chunk by chunk and forms the input gradients as batched products with x0 and xk. Under autocast the
    products run in the autocast dtype (the weight gradient is summed over chunks in at least float32).
    """

    @staticmethod
    def forward(ctx, xk: Tensor, x0: Tensor, weight: Tensor) -> Tensor:
        device = xk.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else xk.dtype
        b, d, hp = xk.shape
        rows, (h, f) = b * d, (weight.shape[0], x0.shape[2])
        with torch.autocast(device, enabled=False):
            a, c, w = xk.reshape(rows, hp).to(dtype), x0.reshape(rows, f).to(dtype), weight.to(dtype)
            out = a.new_empty(rows, h)  # (B*D, H_k)
            for r in _chunks(rows, hp * f * a.element_size()):
                torch.mm((a[r, :, None] * c[r, None, :]).view(-1, hp * f), w.T, out=out[r])
        ctx.save_for_backward(xk, x0, weight)
        ctx.dtype = dtype
        return out.view(b, d, h)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xk, x0, weight = ctx.saved_tensors
        b, d, hp = xk.shape
        rows, (h, f), dtype = b * d, (weight.shape[0], x0.shape[2]), ctx.dtype
        with torch.autocast(xk.device.type, enabled=False):
            a, c, w = xk.reshape(rows, hp).to(dtype), x0.reshape(rows, f).to(dtype), weight.to(dtype)
            g = grad.reshape(rows, h).to(dtype)
            grad_a, grad_c = torch.empty_like(a), torch.empty_like(c)
            acc = torch.promote_types(dtype, torch.float32)
            grad_w = torch.zeros(h, hp * f, dtype=acc, device=w.device)
            for r in _chunks(rows, hp * f * a.element_size()):
                z = (a[r, :, None] * c[r, None, :]).view(-1, hp * f)  # (rows, H_{k-1} * F)
                grad_w += (g[r].T @ z).to(acc)
                gz = (g[r] @ w).view(-1, hp, f)  # (rows, H_{k-1}, F)
                torch.bmm(gz, c[r, :, None], out=grad_a[r, :, None])  # sum_j gz[., i, j] x0[., j]
                torch.bmm(a[r, None, :], gz, out=grad_c[r, None, :])  # sum_i xk[., i] gz[., i, j]
        return grad_a.view_as(xk).to(xk.dtype), grad_c.view_as(x0).to(x0.dtype), grad_w.to(weight.dtype)


def _chunks(rows: int, bytes_per_row: int):
    step = max(1, ROWS_PER_CHUNK_BYTES // bytes_per_row)
    return (slice(r, min(r + step, rows)) for r in range(0, rows, step))
