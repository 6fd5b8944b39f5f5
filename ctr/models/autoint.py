"""AutoInt (Song et al., CIKM 2019, "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
Networks")."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.models.base import CTRModel, EmbeddingOptions, ModelSpec, field_embedding, register_model
from ctr.nn.attention import SelfAttentionStack, TransformerStack
from ctr.types import Batch, Schema

BLOCKS = ("autoint", "transformer")


@dataclass
class AutoIntOptions(EmbeddingOptions):
    """Official-code defaults (Criteo run: 3 layers, 2 heads, 64 = 2 x 32 per layer, residual, ReLU projections).

    ``block``: ``autoint`` (the official interacting layer, :class:`ctr.nn.attention.InteractingLayer`) or
    ``transformer`` (:class:`ctr.nn.attention.TransformerLayer`: identity residuals, an FFN of width ``ffn_dim``,
    Xiong et al.'s Pre-LN/Post-LN layouts; ``residual`` and ``projection_relu`` apply to ``autoint`` only).
    """

    attention_layers: int
    attention_dim: int
    heads: int
    residual: bool
    projection_relu: bool
    attention_dropout: float
    block: str
    ffn_dim: int

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"model.block '{self.block}' is not one of: {', '.join(BLOCKS)}")


@register_model("autoint")
class AutoInt(CTRModel):
    """AutoInt (Song et al. 2019): interacting layers (multi-head self-attention over fields) on the embeddings,
    flattened, then a Linear to the logit. No MLP and no linear term, as in the paper's AutoInt (AutoInt+ adds
    the MLP: ``autoint_plus``). The attention norm and its position follow :mod:`ctr.nn.attention`."""

    stages = ("numeric", "categorical", "attention")
    Options = AutoIntOptions

    def __init__(self, schema: Schema, spec: ModelSpec[AutoIntOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        f = self.embed.num_fields
        if options.block == "transformer":
            self.attention = TransformerStack(
                f,
                embed_dim,
                options.attention_dim,
                options.attention_layers,
                options.heads,
                options.ffn_dim,
                norms["attention"],
                options.attention_dropout,
            )
        else:
            self.attention = SelfAttentionStack(
                f,
                embed_dim,
                [options.attention_dim] * options.attention_layers,
                options.heads,
                norms["attention"],
                options.projection_relu,
                options.residual,
                options.attention_dropout,
            )
        self.attention_out = nn.Linear(f * self.attention.out_dim, 1)

    def attention_logit(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B,) logit of the attention part."""
        return self.attention_out(self.attention(e).flatten(1)).squeeze(-1)  # (B, F*A) -> (B,)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        return self.attention_logit(self.embed(batch))
