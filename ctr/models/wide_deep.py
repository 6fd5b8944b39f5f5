"""Wide & Deep (Cheng et al., DLRS 2016, "Wide & Deep Learning for Recommender Systems")."""
from __future__ import annotations

from torch import Tensor

from ctr.config import NormConfig
from ctr.types import Batch, Schema
from ctr.models.base import CTRModel, MLPOptions, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec


@register_model("wide_deep")
class WideDeep(CTRModel):
    """Wide & Deep (Cheng et al. 2016): a wide linear model plus an MLP over the embeddings, summed as one logit.

    The wide part is the first-order term over the raw features; the paper's hand-made cross-product features
    are not built (as in FuxiCTR's and DeepCTR's WideDeep).
    """

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, embed_dim: int, options: MLPOptions, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__(schema, embed_dim, options, norms, norm_cfg)
        self.embed = field_embedding(schema, embed_dim, norms, options)
        self.wide = LinearTerm(schema)
        self.deep = MLP(self.embed.num_fields * embed_dim, options.hidden, norms["mlp"], norm_cfg.mlp_position,
                        options.dropout, options.activation, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.wide(batch) + self.deep(self.embed(batch).flatten(1)).squeeze(-1)  # (B,)
