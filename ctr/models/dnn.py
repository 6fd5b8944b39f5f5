"""A plain deep network over the concatenated field embeddings (the NormDNN base)."""

from __future__ import annotations

from torch import Tensor

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@register_model("dnn")
class DNN(CTRModel):
    """Embedding -> concatenation -> MLP -> logit; e.g. the DNN baseline of Covington et al. (RecSys 2016) and
    the base of NormDNN (Wang et al. 2020, "Correct Normalization Matters", arXiv 2006.12753)."""

    stages = ("numeric", "categorical", "mlp")
    Options = MLPOptions

    def __init__(self, schema: Schema, spec: ModelSpec[MLPOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
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
        return self.mlp(self.embed(batch).flatten(1)).squeeze(-1)  # (B, F*D) -> (B,)
