"""Factorization machine (Rendle, ICDM 2010, "Factorization Machines")."""

from __future__ import annotations

from torch import Tensor

from ctr.models.base import CTRModel, EmbeddingOptions, ModelSpec, field_embedding, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.interaction import FM as FMInteraction
from ctr.types import Batch, Schema


@register_model("fm")
class FM(CTRModel):
    """Factorization machine (Rendle 2010): linear term + ``sum_{i<j} <e_i, e_j>`` over the field embeddings.

    The numeric and categorical stage norms act on the embeddings before the pairwise term."""

    stages = ("numeric", "categorical")
    Options = EmbeddingOptions

    def __init__(self, schema: Schema, spec: ModelSpec[EmbeddingOptions]) -> None:
        super().__init__(schema, spec)
        self.embed = field_embedding(schema, spec)
        self.linear = LinearTerm(schema)
        self.fm = FMInteraction()

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.linear(batch) + self.fm(self.embed(batch))  # (B,)
