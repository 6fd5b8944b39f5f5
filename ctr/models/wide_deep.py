"""Wide & Deep (Cheng et al., DLRS 2016, "Wide & Deep Learning for Recommender Systems")."""

from __future__ import annotations

from torch import Tensor

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@register_model("wide_deep")
class WideDeep(CTRModel):
    """Wide & Deep (Cheng et al. 2016): a wide linear model plus an MLP over the embeddings, summed as one logit.

    The wide part is the first-order term over the raw features; the paper's hand-made cross-product features
    are not built (as in FuxiCTR's and DeepCTR's WideDeep).
    """

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, spec: ModelSpec[MLPOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        self.wide = LinearTerm(schema)
        self.deep = MLP(
            self.embed.num_fields * embed_dim,
            options.hidden,
            norms["mlp"],
            options.dropout,
            options.activation,
            out_dim=1,
        )

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.wide(batch) + self.deep(self.embed(batch).flatten(1)).squeeze(-1)  # (B,)
