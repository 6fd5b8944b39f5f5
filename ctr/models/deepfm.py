"""DeepFM (Guo et al., IJCAI 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction")."""

from __future__ import annotations

from torch import Tensor

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.interaction import FM
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@register_model("deepfm")
class DeepFM(CTRModel):
    """Linear term + FM over the field embeddings + an MLP over their concatenation, summed as one logit."""

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, spec: ModelSpec[MLPOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        self.linear = LinearTerm(schema)
        self.fm = FM()
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
        return self.linear(batch) + self.fm(e) + self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
