"""xDeepFM (Lian et al., KDD 2018, "xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender
Systems")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.cin import CIN
from ctr.nn.embedding import LinearTerm
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@dataclass
class XDeepFMOptions(MLPOptions):
    """CIN feature maps per layer (paper, Criteo: 200 x 3), ``split_half`` (:class:`ctr.nn.cin.CIN`) and the DNN
    (paper: 400-400)."""

    cin_layers: list[int]
    split_half: bool


@register_model("xdeepfm")
class XDeepFM(CTRModel):
    """xDeepFM (Lian et al. 2018): linear term + CIN (sum-pooled maps -> Linear) + MLP, summed as one logit."""

    stages = ("numeric", "categorical", "mlp", "cin")
    Options = XDeepFMOptions

    def __init__(self, schema: Schema, spec: ModelSpec[XDeepFMOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        f = self.embed.num_fields
        self.linear = LinearTerm(schema)
        self.cin = CIN(f, embed_dim, options.cin_layers, norms["cin"], options.split_half)
        self.cin_out = nn.Linear(self.cin.out_dim, 1)
        self.mlp = MLP(f * embed_dim, options.hidden, norms["mlp"], options.dropout, options.activation, out_dim=1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        cin = self.cin_out(self.cin(e)).squeeze(-1)  # (B,)
        return self.linear(batch) + cin + self.mlp(e.flatten(1)).squeeze(-1)  # (B,)
