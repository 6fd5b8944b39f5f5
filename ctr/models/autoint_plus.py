"""AutoInt+ (Song et al., CIKM 2019): AutoInt jointly trained with a deep network."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ctr.config import NormConfig
from ctr.types import Batch, Schema
from ctr.models.autoint import AutoInt, AutoIntOptions
from ctr.models.base import MLPOptions, register_model
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec


@dataclass
class AutoIntPlusOptions(AutoIntOptions, MLPOptions):
    """AutoInt's options plus the MLP (paper: 2 x 200 ReLU)."""

    hidden: list[int] = field(default_factory=lambda: [200, 200])


@register_model("autoint_plus")
class AutoIntPlus(AutoInt):
    """AutoInt+ (Song et al. 2019): the AutoInt logit plus an MLP's logit over the flattened embeddings."""

    stages = ("numeric", "categorical", "mlp", "attention")
    Options = AutoIntPlusOptions

    def __init__(self, schema: Schema, embed_dim: int, options: AutoIntPlusOptions, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__(schema, embed_dim, options, norms, norm_cfg)
        self.mlp = MLP(self.embed.num_fields * embed_dim, options.hidden, norms["mlp"], norm_cfg.mlp_position,
                       options.dropout, options.activation, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        return self.attention_logit(e) + self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
