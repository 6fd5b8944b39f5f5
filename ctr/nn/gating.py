"""Multiplicative gating blocks: MaskNet's MaskBlock and FinalMLP's feature gating and bilinear fusion."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec


class MaskBlock(nn.Module):
    """MaskNet's MaskBlock (Wang, She, Zhang, DLP-KDD 2021): an instance-guided mask on a hidden layer.

    ``mask = W2 ReLU(W1 v_emb + b1) + b2`` (aggregation width ``reduction_ratio * in_dim``, projection back to
    ``in_dim``), then ``out = act(Norm(W (mask * v_in)))``. The paper's LayerNorm here is its hidden-layer norm
    (FuxiCTR's ``net_layernorm``), so this block takes the ``mlp`` stage norm with its position (``pre_act`` =
    Linear -> Norm -> act, the paper's order; ``wn`` re-parametrises W). The mask generator has no norm.

    Args:
        emb_dim: width of the flattened embeddings v_emb that guide the mask (F*D).
        in_dim: width of v_in (F*D for the first block, the previous block's width after it).
        out_dim: output width.
        reduction_ratio: aggregation-layer width / in_dim.
        norm, dropout, activation: the hidden layer's, as in :class:`ctr.nn.mlp.MLP`.
    """

    def __init__(
        self,
        emb_dim: int,
        in_dim: int,
        out_dim: int,
        reduction_ratio: float = 1.0,
        norm: NormSpec | str = "none",
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        agg = max(1, int(in_dim * reduction_ratio))
        self.mask = nn.Sequential(nn.Linear(emb_dim, agg), nn.ReLU(), nn.Linear(agg, in_dim))
        self.hidden = MLP(in_dim, [out_dim], norm, dropout, activation)
        self.out_dim = out_dim

    def forward(self, v_emb: Tensor, v_in: Tensor) -> Tensor:
        """v_emb (B, emb_dim), v_in (B, in_dim) -> (B, out_dim)."""
        return self.hidden(self.mask(v_emb) * v_in)


class FeatureGating(nn.Module):
    """FinalMLP's stream-specific feature gating (Mao et al., AAAI 2023): ``h = 2 sigmoid(MLP(c)) * e``.

    The context ``c`` is a learned D-vector (initialised to 0), so the gate gives global, per-(field, dim)
    importance weights in (0, 2), equal to 1 at initialisation. (The paper can also condition on user or item
    fields; the prepared schema marks no such fields.)

    Args:
        num_fields: F.
        dim: D.
        hidden: hidden widths of the gate MLP (ReLU, no norm).
    """

    def __init__(self, num_fields: int, dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.context = nn.Parameter(torch.zeros(1, dim))
        self.gate = MLP(dim, hidden, out_dim=num_fields * dim)

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, F*D) gated, flattened embeddings."""
        g = 2 * torch.sigmoid(self.gate(self.context))  # (1, F*D)
        return e.flatten(1) * g  # (B, F*D)


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion of two stream outputs into one logit.

    ``y = b + w1 . o1 + w2 . o2 + sum_h o1_h^T W_h o2_h``, with o1 and o2 split into ``heads`` equal chunks.

    Args:
        dim1: width of o1.
        dim2: width of o2.
        heads: number of chunks; must divide both widths.
    """

    def __init__(self, dim1: int, dim2: int, heads: int = 1) -> None:
        super().__init__()
        if dim1 % heads or dim2 % heads:
            raise ConfigError(f"fusion heads={heads} must divide both stream widths ({dim1}, {dim2})")
        self.heads = heads
        self.w1 = nn.Linear(dim1, 1)  # holds the global bias b
        self.w2 = nn.Linear(dim2, 1, bias=False)
        self.w12 = nn.Parameter(torch.empty(heads, dim1 // heads, dim2 // heads))
        nn.init.xavier_normal_(self.w12)

    def forward(self, o1: Tensor, o2: Tensor) -> Tensor:
        """o1 (B, dim1), o2 (B, dim2) -> (B,) logits."""
        b = o1.shape[0]
        o1h = o1.view(b, self.heads, -1)  # (B, heads, dim1/heads)
        o2h = o2.view(b, self.heads, -1)  # (B, heads, dim2/heads)
        bilinear = (torch.einsum("bhi,hij->bhj", o1h, self.w12) * o2h).sum(dim=(1, 2))  # (B,)
        return self.w1(o1).squeeze(-1) + self.w2(o2).squeeze(-1) + bilinear  # (B,)
