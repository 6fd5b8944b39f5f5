"""Logistic regression: the first-order baseline."""
from __future__ import annotations

from torch import Tensor

from ctr.config import NormConfig
from ctr.types import Batch, Schema
from ctr.models.base import CTRModel, NoOptions, register_model
from ctr.nn.embedding import LinearTerm
from ctr.nn.norm import NormSpec


@register_model("lr")
class LR(CTRModel):
    """Logistic regression (e.g. McMahan et al., KDD 2013, "Ad Click Prediction: a View from the Trenches").

    A weight per id, per dense value and per missing flag, plus a bias (:class:`ctr.nn.embedding.LinearTerm`).
    No embeddings, hence no norm stages; ``embed_dim`` is unused.
    """

    stages = ()
    Options = NoOptions

    def __init__(self, schema: Schema, embed_dim: int, options: NoOptions, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__(schema, embed_dim, options, norms, norm_cfg)
        self.linear = LinearTerm(schema)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.linear(batch)
