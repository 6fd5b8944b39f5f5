"""FinalMLP (Mao et al., AAAI 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.gating import BilinearFusion, FeatureGating
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema


@dataclass
class FinalMLPOptions(MLPOptions):
    """Stream 1 is ``hidden``/``dropout``, stream 2 ``hidden2``/``dropout2``; ``gate_hidden`` sizes each stream's
    gate MLP (``use_gating: false`` gives DualMLP); ``fusion_heads`` splits the bilinear fusion."""

    hidden2: list[int]
    dropout2: float
    gate_hidden: list[int]
    use_gating: bool
    fusion_heads: int


@register_model("finalmlp")
class FinalMLP(CTRModel):
    """FinalMLP (Mao et al. 2023): two MLP streams over differently gated embeddings, fused bilinearly into one
    logit. Both streams take the ``mlp`` stage norm; the gates have none."""

    stages = ("numeric", "categorical", "mlp")
    Options = FinalMLPOptions

    def __init__(self, schema: Schema, spec: ModelSpec[FinalMLPOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        f = self.embed.num_fields
        self.gate1 = FeatureGating(f, embed_dim, options.gate_hidden) if options.use_gating else None
        self.gate2 = FeatureGating(f, embed_dim, options.gate_hidden) if options.use_gating else None
        self.mlp1 = MLP(f * embed_dim, options.hidden, norms["mlp"], options.dropout, options.activation)
        self.mlp2 = MLP(f * embed_dim, options.hidden2, norms["mlp"], options.dropout2, options.activation)
        self.fusion = BilinearFusion(self.mlp1.out_dim, self.mlp2.out_dim, options.fusion_heads)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        e = self.embed(batch)  # (B, F, D)
        x1 = self.gate1(e) if self.gate1 is not None else e.flatten(1)  # (B, F*D)
        x2 = self.gate2(e) if self.gate2 is not None else e.flatten(1)  # (B, F*D)
        return self.fusion(self.mlp1(x1), self.mlp2(x2))  # (B,)
