"""MaskNet (Wang, She, Zhang, DLP-KDD 2021, "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking
Models by Instance-Guided Mask")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.models.base import CTRModel, MLPOptions, ModelSpec, field_embedding, register_model
from ctr.nn.gating import MaskBlock
from ctr.nn.mlp import MLP
from ctr.types import Batch, Schema

STRUCTURES = ("parallel", "serial")


@dataclass
class MaskNetOptions(MLPOptions):
    """``parallel`` (ParaMaskNet): ``num_blocks`` MaskBlocks of width ``block_dim`` on the embeddings, concatenated
    into an MLP of widths ``hidden``. ``serial`` (SerMaskNet): one MaskBlock per entry of ``hidden``, chained.
    ``head_norm``: the parallel head's hidden layers take the ``mlp`` stage norm too (FuxiCTR's ParallelMaskNet
    head has no norm)."""

    structure: str
    num_blocks: int
    block_dim: int
    reduction_ratio: float
    head_norm: bool

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ConfigError(f"model.structure '{self.structure}' is not one of: {', '.join(STRUCTURES)}")


@register_model("masknet")
class MaskNet(CTRModel):
    """MaskNet (Wang et al. 2021): MaskBlocks in parallel or in series, then a Linear to the logit.

    The paper's embedding LN (``LN_EMB``) is the ``numeric``/``categorical`` stage norm and its hidden-layer LN
    (in every MaskBlock) the ``mlp`` stage norm, also in the parallel head's hidden layers when ``head_norm``. As
    in the paper and FuxiCTR's implementation, the masks are generated from the embeddings *before* the stage
    norms and multiply the normalised embeddings (``V_mask(V_emb) * LN_EMB(V_emb)``); serial blocks after the
    first mask the previous block's output."""

    stages = ("numeric", "categorical", "mlp")
    Options = MaskNetOptions

    def __init__(self, schema: Schema, spec: ModelSpec[MaskNetOptions]) -> None:
        super().__init__(schema, spec)
        embed_dim, options, norms = spec.embed_dim, spec.options, spec.norms
        self.embed = field_embedding(schema, spec)
        width = self.embed.num_fields * embed_dim
        self.parallel = options.structure == "parallel"
        args = (options.reduction_ratio, norms["mlp"], options.dropout, options.activation)
        self.blocks = nn.ModuleList()
        if self.parallel:
            self.blocks.extend(MaskBlock(width, width, options.block_dim, *args) for _ in range(options.num_blocks))
            self.head = MLP(
                options.num_blocks * options.block_dim,
                options.hidden,
                norms["mlp"] if options.head_norm else "none",
                options.dropout,
                options.activation,
                out_dim=1,
            )
        else:
            for h in options.hidden:
                self.blocks.append(MaskBlock(width, self.blocks[-1].out_dim if self.blocks else width, h, *args))
            self.head = nn.Linear(self.blocks[-1].out_dim if self.blocks else width, 1)

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) logits."""
        raw = self.embed.lookup(batch)  # (B, F, D) before the stage norms: the masks' input
        v_emb, v_in = raw.flatten(1), self.embed(batch, raw).flatten(1)  # (B, F*D) each
        if self.parallel:
            h = torch.cat([block(v_emb, v_in) for block in self.blocks], dim=1)  # (B, num_blocks * block_dim)
        else:
            h = v_in
            for block in self.blocks:
                h = block(v_emb, h)  # (B, H)
        return self.head(h).squeeze(-1)  # (B,)
