"""DCN-V2 (Wang et al., WWW 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.cross import CrossNetV2
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema

STRUCTURES = ("parallel", "stacked", "crossnet_only")


@dataclass
class DCNV2Options(MLPOptions):
    """``structure``: parallel (cross || MLP, concatenated), stacked (MLP on the cross output) or crossnet_only.
    ``low_rank``: rank of the cross matrices (None = full rank); ``num_experts`` > 1 with it gives DCN-Mix."""

    cross_layers: int
    structure: str
    low_rank: int | None
    num_experts: int

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ConfigError(f"model.structure '{self.structure}' is not one of: {', '.join(STRUCTURES)}")
        if self.num_experts > 1 and self.low_rank is None:
            raise ConfigError("model.num_experts > 1 (DCN-Mix) needs model.low_rank")


@register_model("dcnv2")
class DCNV2(CTRModel):
    """DCN-V2 (Wang et al. 2021): matrix cross layers ``x_0 * (W x_l + b) + x_l`` combined with an MLP."""

    stages = ("numeric", "categorical", "mlp", "cross")
    Options = DCNV2Options

    def __init__(self, schema: Schema, spec: ModelSpec[DCNV2Options]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        width = self.embed.num_fields * embed_dim
        self.structure = options.structure
        self.cross = CrossNetV2(width, options.cross_layers, norms["cross"], options.low_rank, options.num_experts)
        self.mlp = None
        out = width
        if options.structure != "crossnet_only":
            self.mlp = MLP(width, options.hidden, norms["mlp"], options.dropout, options.activation)
            out = self.mlp.out_dim + (width if options.structure == "parallel" else 0)
        elif not norms["mlp"].is_none:
            raise ConfigError(f"norm.mlp={norms['mlp'].name}: dcnv2 with structure crossnet_only has no MLP")
        self.out = nn.Linear(out, 1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        x0 = self.embed(batch).flatten(1)  # (B, F*D)
        cross = self.cross(x0)  # (B, F*D)
        if self.structure == "parallel":
            h = torch.cat([cross, self.mlp(x0)], dim=1)  # (B, F*D + H)
        elif self.structure == "stacked":
            h = self.mlp(cross)  # (B, H)
        else:
            h = cross
        return self.out(h).squeeze(-1)  # (B,)
