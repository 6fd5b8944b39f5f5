"""Deep & Cross Network (Wang, Fu, Fu, Wang, ADKDD 2017, "Deep & Cross Network for Ad Click Predictions")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.cross import CrossNet
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@dataclass
class DCNOptions(MLPOptions):
    """Cross layers and the deep part (``hidden``, default 400 x 3)."""

    cross_layers: int


@register_model("dcn")
class DCN(CTRModel):
    """DCN (Wang et al. 2017): a cross network and an MLP in parallel on the flattened embeddings x_0; their
    outputs are concatenated and a Linear gives the logit."""

    stages = ("numeric", "categorical", "mlp", "cross")
    Options = DCNOptions

    def __init__(self, schema: Schema, spec: ModelSpec[DCNOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        width = self.embed.num_fields * embed_dim
        self.cross = CrossNet(width, options.cross_layers, norms["cross"])
        self.mlp = MLP(width, options.hidden, norms["mlp"], options.dropout, options.activation)
        self.out = nn.Linear(self.cross.out_dim + self.mlp.out_dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        x0 = self.embed(batch).flatten(1)  # (B, F*D)
        return self.out(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)).squeeze(-1)  # (B,)
