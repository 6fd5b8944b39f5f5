"""DeepFM (Guo et al., IJCAI 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction")."""
from __future__ import annotations

from torch import Tensor

from ctr.config import NormConfig
from ctr.types import Batch, Schema
from ctr.models.base import CTRModel, MLPOptions, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.interaction import FM
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec


@register_model("deepfm")
class DeepFM(CTRModel):
    """Linear term + FM over the field embeddings + an MLP over their concatenation, summed as one logit."""

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, embed_dim: int, options: MLPOptions, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__(schema, embed_dim, options, norms, norm_cfg)
        self.embed = field_embedding(schema, embed_dim, norms, options)
        self.linear = LinearTerm(schema)
        self.fm = FM()
        self.mlp = MLP(self.embed.num_fields * embed_dim, options.hidden, norms["mlp"], norm_cfg.mlp_position,
                       options.dropout, options.activation, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        return self.linear(batch) + self.fm(e) + self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
