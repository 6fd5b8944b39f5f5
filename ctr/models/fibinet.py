"""FiBiNET (Huang, Zhang, Zhang, RecSys 2019, "FiBiNET: Combining Feature Importance and Bilinear feature
Interaction for Click-Through Rate Prediction")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctr.errors import ConfigError
from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.interaction import BILINEAR_TYPES, Bilinear, SENet, bilinear_products
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@dataclass
class FiBiNETOptions(MLPOptions):
    """SENET reduction ratio and bilinear type (``field_all``, ``field_each``, ``field_interaction``)."""

    reduction_ratio: int
    bilinear_type: str

    def __post_init__(self) -> None:
        if self.bilinear_type not in BILINEAR_TYPES:
            raise ConfigError(f"model.bilinear_type '{self.bilinear_type}' is not one of: {', '.join(BILINEAR_TYPES)}")
        if self.reduction_ratio < 1:
            raise ConfigError("model.reduction_ratio must be >= 1")


@register_model("fibinet")
class FiBiNET(CTRModel):
    """FiBiNET (Huang et al. 2019): bilinear interactions of the embeddings E and of their SENET re-weighting V,
    concatenated into an MLP; plus the first-order term (paper Eq. 14)."""

    stages = ("numeric", "categorical", "mlp")
    Options = FiBiNETOptions

    def __init__(self, schema: Schema, spec: ModelSpec[FiBiNETOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        f = self.embed.num_fields
        self.linear = LinearTerm(schema)
        self.senet = SENet(f, options.reduction_ratio)
        self.bilinear_e = Bilinear(f, embed_dim, options.bilinear_type)
        self.bilinear_v = Bilinear(f, embed_dim, options.bilinear_type)
        self.mlp = MLP(
            2 * self.bilinear_e.out_dim, options.hidden, norms["mlp"], options.dropout, options.activation, out_dim=1
        )

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        pq = bilinear_products([(self.bilinear_e, e), (self.bilinear_v, self.senet(e))])  # (B, 2*P*D)
        return self.linear(batch) + self.mlp(pq).squeeze(-1)  # (B,)
