"""Feature-interaction layers over field embeddings (B, F, D): FM, IPNN inner products, FiBiNET's SENET and bilinear.

P = F (F - 1) / 2 is the number of field pairs ``i < j``, enumerated in ``torch.triu_indices`` order
(row-major: (0, 1), (0, 2), ..., (1, 2), ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError


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
        i, j = pair_indices(num_fields)
        self.register_buffer("i", i, persistent=False)  # (P,)
        self.register_buffer("j", j, persistent=False)  # (P,)
        self.kind = kind
        count = {"field_all": 1, "field_each": num_fields, "field_interaction": len(i)}[kind]
        self.weight = nn.Parameter(torch.empty(count, dim, dim))  # (1 | F | P, D, D)
        nn.init.xavier_normal_(self.weight)
        self.out_dim = len(i) * dim

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, P, D)."""
        # index_select, not e[:, i]: its backward is one index_add instead of advanced-index accumulation
        if self.kind == "field_all":
            left = (e @ self.weight[0]).index_select(1, self.i)  # (B, F, D) -> (B, P, D)
        elif self.kind == "field_each":
            left = torch.einsum("bfd,fde->bfe", e, self.weight).index_select(1, self.i)  # (B, F, D) -> (B, P, D)
        else:
            left = torch.einsum("bpd,pde->bpe", e.index_select(1, self.i), self.weight)  # (B, P, D)
        return left * e.index_select(1, self.j)  # (B, P, D)
