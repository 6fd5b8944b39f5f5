"""Logistic regression: the first-order baseline."""

from __future__ import annotations

from torch import Tensor

from ctr.models.base import CTRModel, ModelSpec, NoOptions, register_model
from ctr.nn.embedding import LinearTerm
from ctr.types import Batch, Schema


@register_model("lr")
class LR(CTRModel):
    """Logistic regression (e.g. McMahan et al., KDD 2013, "Ad Click Prediction: a View from the Trenches").

    A weight per id, per dense value and per missing flag, plus a bias (:class:`ctr.nn.embedding.LinearTerm`).
    No embeddings, hence no norm stages; ``embed_dim`` is unused.
    """

    stages = ()
    Options = NoOptions

    def __init__(self, schema: Schema, spec: ModelSpec[NoOptions]) -> None:
        super().__init__(schema, spec)
        self.linear = LinearTerm(schema)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.linear(batch)
