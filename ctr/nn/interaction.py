"""Feature-interaction layers over field embeddings (B, F, D): FM, IPNN inner products, FiBiNET's SENET and bilinear.

P = F (F - 1) / 2 is the number of field pairs ``i < j``, enumerated in ``torch.triu_indices`` order
(row-major: (0, 1), (0, 2), ..., (1, 2), ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.tracing import capturing


def pair_indices(num_fields: int) -> tuple[Tensor, Tensor]:
    """Index vectors ``(i, j)``, each (P,), of all field pairs ``i < j``."""
    i, j = torch.triu_indices(num_fields, num_fields, offset=1)
    return i, j


class FM(nn.Module):
    """Factorization-machine pairwise term (Rendle 2010): ``sum_{i<j} <e_i, e_j>`` in O(F D).

    Uses ``0.5 * sum_d((sum_i e_id)^2 - sum_i e_id^2)``.
    """

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B,)."""
        square_of_sum = e.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = e.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)  # (B,)


class InnerProduct(nn.Module):
    """IPNN's product layer (Qu et al., ICDM 2016): the inner products ``<e_i, e_j>`` of all field pairs ``i < j``.

    Args:
        num_fields: F.

    One batched Gram matrix, then a gather of its upper triangle.
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        i, j = pair_indices(num_fields)
        self.register_buffer("flat_index", i * num_fields + j, persistent=False)  # (P,)
        self.out_dim = len(i)

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, P)."""
        gram = torch.bmm(e, e.transpose(1, 2))  # (B, F, F)
        return gram.flatten(1).index_select(1, self.flat_index)  # (B, F*F) -> (B, P)


class SENet(nn.Module):
    """Squeeze-excitation over fields (FiBiNET, Huang et al., RecSys 2019): re-weights each field's embedding.

    ``z = mean_D(E)``, ``a = ReLU(W2 ReLU(W1 z))``, output ``a_f * e_f``.

    Args:
        num_fields: F.
        reduction_ratio: the squeeze layer has ``max(1, F // reduction_ratio)`` units.
    """

    def __init__(self, num_fields: int, reduction_ratio: int = 3) -> None:
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False), nn.ReLU(), nn.Linear(reduced, num_fields, bias=False), nn.ReLU()
        )

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, F, D)."""
        weights = self.excitation(e.mean(dim=-1))  # (B, F)
        return e * weights.unsqueeze(-1)  # (B, F, D)


BILINEAR_TYPES = ("field_all", "field_each", "field_interaction")


class Bilinear(nn.Module):
    """FiBiNET's bilinear interaction: ``p_ij = (e_i W) * e_j`` for every field pair ``i < j``.

    Args:
        num_fields: F.
        dim: D.
        kind: ``field_all`` (one W), ``field_each`` (W_i per field i) or ``field_interaction`` (W_ij per pair).
    """

    def __init__(self, num_fields: int, dim: int, kind: str = "field_interaction") -> None:
        super().__init__()
        if kind not in BILINEAR_TYPES:
            raise ConfigError(f"bilinear type '{kind}' is not one of: {', '.join(BILINEAR_TYPES)}")
        i, _ = pair_indices(num_fields)
        index = {"field_all": torch.zeros_like(i), "field_each": i, "field_interaction": None}[kind]
        self.register_buffer("weight_index", index, persistent=False)  # (P,): each pair's W, or None for W_ij
        count = {"field_all": 1, "field_each": num_fields, "field_interaction": len(i)}[kind]
        self.weight = nn.Parameter(torch.empty(count, dim, dim))  # (1 | F | P, D, D)
        nn.init.xavier_normal_(self.weight)
        self.out_dim = len(i) * dim

    def pair_weights(self) -> Tensor:
        """(P, D, D): the W of every pair."""
        return self.weight if self.weight_index is None else self.weight.index_select(0, self.weight_index)

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, P, D)."""
        return bilinear_products([(self, e)]).view(e.shape[0], -1, e.shape[2])

    def gathered(self, e: Tensor) -> Tensor:
        """The same products as plain gathers and a batched product, for export: (B, F, D) -> (B, P, D)."""
        i, j = pair_indices(e.shape[1])
        left = torch.einsum("bpd,pde->bpe", e.index_select(1, i.to(e.device)), self.pair_weights())  # (B, P, D)
        return left * e.index_select(1, j.to(e.device))  # (B, P, D)


def bilinear_products(inputs: list[tuple[Bilinear, Tensor]]) -> Tensor:
    """The bilinear interactions of several (layer, embeddings) inputs, concatenated: K x (B, F, D) -> (B, K*P*D)."""
    if capturing():
        return torch.cat([layer.gathered(e).flatten(1) for layer, e in inputs], dim=1)
    return _PairProducts.apply(*(t for layer, e in inputs for t in (e, layer.pair_weights())))


class _PairProducts(torch.autograd.Function):
    """``(e_i W_p) * e_j`` for every pair p = (i, j), of K inputs (e, W) at once: the output's block k, pair p is
    ``out[:, (k P + p) D : (k P + p + 1) D]``.

    Computed field by field: the pairs (i, j > i) of field i are consecutive in ``triu_indices`` order, so their
    left products are one (B, D) x (D, n_i D) product written straight into the output and their right factors
    ``e_{i+1..F-1}`` are a view of e. No (B, P, D) gather, intermediate or concatenation is materialised; the
    backward recomputes the left products field by field. Runs outside autocast, in the embeddings' dtype.
    """

    @staticmethod
    def forward(ctx, *tensors: Tensor) -> Tensor:
        es, ws = tensors[0::2], tensors[1::2]
        b, f, d = es[0].shape
        p = f * (f - 1) // 2
        out = es[0].new_empty(b, len(es) * p * d)  # (B, K P D)
        with torch.autocast(es[0].device.type, enabled=False):
            for k, (e, w) in enumerate(zip(es, ws)):
                w = w.to(e.dtype)
                for i, start, stop, wi in _fields(w, f):
                    block = out[:, (k * p + start) * d : (k * p + stop) * d]  # (B, n_i D)
                    torch.mm(e[:, i], wi, out=block)
                    block.mul_(e[:, i + 1 :].reshape(b, -1))
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:
        tensors = ctx.saved_tensors
        es, ws = tensors[0::2], tensors[1::2]
        b, f, d = es[0].shape
        p = f * (f - 1) // 2
        grads: list[Tensor] = []
        with torch.autocast(es[0].device.type, enabled=False):
            for k, (e, w) in enumerate(zip(es, ws)):
                grad_e, grad_w = torch.zeros_like(e), torch.empty_like(w)
                for i, start, stop, wi in _fields(w.to(e.dtype), f):
                    g = grad[:, (k * p + start) * d : (k * p + stop) * d].to(e.dtype)  # (B, n_i D)
                    grad_e[:, i + 1 :] += (g * (e[:, i] @ wi)).view(b, -1, d)  # right factors
                    g_left = g * e[:, i + 1 :].reshape(b, -1)  # (B, n_i D)
                    grad_e[:, i] += g_left @ wi.T
                    grad_w[start:stop] = (e[:, i].T @ g_left).view(d, -1, d).transpose(0, 1)
                grads += [grad_e, grad_w.to(w.dtype)]
        return tuple(grads)


def _fields(w: Tensor, num_fields: int):
    """Per field i with pairs: (i, first pair, end pair, its pairs' W side by side as (D, n_i D))."""
    start = 0
    for i in range(num_fields - 1):
        stop = start + num_fields - 1 - i
        yield i, start, stop, w[start:stop].transpose(0, 1).reshape(w.shape[1], -1)
        start = stop
