"""AutoInt+ (Song et al., CIKM 2019): AutoInt jointly trained with a deep network."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctr.models.autoint import AutoInt, AutoIntOptions
from ctr.models.base import MLPOptions, ModelSpec, register_model
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@dataclass
class AutoIntPlusOptions(AutoIntOptions, MLPOptions):
    """AutoInt's options plus the MLP (paper: 2 x 200 ReLU)."""


@register_model("autoint_plus")
class AutoIntPlus(AutoInt):
    """AutoInt+ (Song et al. 2019): the AutoInt logit plus an MLP's logit over the flattened embeddings."""

    stages = ("numeric", "categorical", "mlp", "attention")
    Options = AutoIntPlusOptions

    def __init__(self, schema: Schema, spec: ModelSpec[AutoIntPlusOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.mlp = MLP(
            self.embed.num_fields * embed_dim,
            options.hidden,
            norms["mlp"],
            options.dropout,
            options.activation,
            out_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        return self.attention_logit(e) + self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
