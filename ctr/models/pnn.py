"""PNN, inner-product variant (Qu et al., ICDM 2016, "Product-based Neural Networks for User Response Prediction")."""
from __future__ import annotations

import torch
from torch import Tensor

from ctr.config import NormConfig
from ctr.types import Batch, Schema
from ctr.models.base import CTRModel, MLPOptions, field_embedding, register_model
from ctr.nn.interaction import InnerProduct
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec


@register_model("pnn")
class PNN(CTRModel):
    """IPNN (Qu et al. 2016): the product layer (flattened embeddings ``z`` and all pairwise inner products ``p``,
    concatenated) feeds an MLP whose first Linear plays the paper's ``l_z + l_p + b_1``."""

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, embed_dim: int, options: MLPOptions, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__(schema, embed_dim, options, norms, norm_cfg)
        self.embed = field_embedding(schema, embed_dim, norms, options)
        f = self.embed.num_fields
        self.inner = InnerProduct(f)
        self.mlp = MLP(f * embed_dim + self.inner.out_dim, options.hidden, norms["mlp"], norm_cfg.mlp_position,
                       options.dropout, options.activation, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        z = torch.cat([e.flatten(1), self.inner(e)], dim=1)  # (B, F*D + P)
        return self.mlp(z).squeeze(-1)  # (B,)
