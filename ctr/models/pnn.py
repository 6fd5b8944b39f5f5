"""PNN, inner-product variant (Qu et al., ICDM 2016, "Product-based Neural Networks for User Response Prediction")."""

from __future__ import annotations

import torch
from torch import Tensor

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.interaction import InnerProduct
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@register_model("pnn")
class PNN(CTRModel):
    """IPNN (Qu et al. 2016): the product layer (flattened embeddings ``z`` and all pairwise inner products ``p``,
    concatenated) feeds an MLP whose first Linear plays the paper's ``l_z + l_p + b_1``."""

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, spec: ModelSpec[MLPOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        f = self.embed.num_fields
        self.inner = InnerProduct(f)
        self.mlp = MLP(
            f * embed_dim + self.inner.out_dim,
            options.hidden,
            norms["mlp"],
            options.dropout,
            options.activation,
            out_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        z = torch.cat([e.flatten(1), self.inner(e)], dim=1)  # (B, F*D + P)
        return self.mlp(z).squeeze(-1)  # (B,)
