"""Field embeddings: every field becomes a D-vector, with the numeric and categorical stage norms applied.

Numeric fields are embedded so that every norm keeps the value (``docs/normalization.md``): a dense
value ``x`` becomes ``x * v + b`` (``m`` where missing), with per-field vectors ``v, b, m``. A per-field LN of the
bias-free ``x * v`` would keep only ``sign(x)``; the bias breaks the proportionality. Bucketised numeric fields are
looked up in the id table like categorical fields but still belong to the numeric stage.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.norm import EmbeddingNorm, NormSpec, parse_norm
from ctr.types import Batch, Schema

EMBED_STD = 0.01


class FieldEmbedding(nn.Module):
    """All fields of a batch as one (B, F, D) tensor, numeric-stage fields first, then categorical-stage fields.

    Args:
        schema: the prepared data's schema.
        dim: D.
        numeric: norm of the numeric stage (fields whose raw column is numeric), over (B, F_num, D).
        categorical: norm of the categorical stage, over (B, F_cat, D).
        init_std: std of the normal init of every embedding parameter (``model.embed_init_std``); the stage norms
            start their gains at it unless their spec sets ``init_gain``, so a norm keeps the stage's scale.

    One table with per-field offsets holds every id field, so a lookup is one gather whatever F is.
    ``numeric_norm`` and ``categorical_norm`` are the stage norms (diagnostics hook their outputs).
    """

    param_roles = {name: "embedding" for name in ("table.weight", "dense_weight", "dense_bias", "dense_missing")}

    def __init__(self, schema: Schema, dim: int, numeric: NormSpec | str = "none",
                 categorical: NormSpec | str = "none", init_std: float = EMBED_STD) -> None:
        super().__init__()
        if not init_std > 0:
            raise ConfigError(f"model.embed_init_std must be > 0, got {init_std}")
        id_fields, dense_fields = schema.id_fields, schema.dense_fields
        self.dim = dim
        sizes = torch.tensor([f.vocab_size for f in id_fields], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # (Fc,)
        self.table = nn.Embedding(max(int(sizes.sum()), 1), dim)
        nn.init.normal_(self.table.weight, std=init_std)
        fn = len(dense_fields)
        # dense parameters only when there are dense fields: DDP requires every parameter to get a gradient
        self.dense_weight = nn.Parameter(torch.randn(fn, dim) * init_std) if fn else None  # v: (Fn, D)
        self.dense_bias = nn.Parameter(torch.randn(fn, dim) * init_std) if fn else None  # b: (Fn, D)
        self.dense_missing = nn.Parameter(torch.randn(fn, dim) * init_std) if fn else None  # m: (Fn, D)
        # id columns split by stage; dense fields are always numeric
        num_ids = [i for i, f in enumerate(id_fields) if f.source == "numeric"]
        cat_ids = [i for i, f in enumerate(id_fields) if f.source != "numeric"]
        self.register_buffer("num_id_cols", torch.tensor(num_ids, dtype=torch.long), persistent=False)
        self.register_buffer("cat_id_cols", torch.tensor(cat_ids, dtype=torch.long), persistent=False)
        self.num_numeric = fn + len(num_ids)
        self.num_categorical = len(cat_ids)
        self.num_fields = self.num_numeric + self.num_categorical
        num_spec, cat_spec = parse_norm(numeric, "numeric"), parse_norm(categorical, "categorical")
        self.numeric_norm = EmbeddingNorm(num_spec, self.num_numeric, dim, init_std) if self.num_numeric else nn.Identity()
        self.categorical_norm = EmbeddingNorm(cat_spec, self.num_categorical, dim, init_std) if self.num_categorical else nn.Identity()
        self._contiguous_stages = num_ids == list(range(len(num_ids)))  # numeric ids come first: no gather needed
        # fast path: no dense fields, no stage norm -> the table lookup already is the (B, F, D) output
        self._plain = fn == 0 and self._contiguous_stages and num_spec.is_none and cat_spec.is_none

    def forward(self, batch: Batch) -> Tensor:
        """Embed a batch.

        Args:
            batch: ids (B, Fc), dense (B, Fn), dense_missing (B, Fn).

        Returns:
            (B, F, D) embeddings, F = F_num + F_cat, after the stage norms.
        """
        e_ids = self.table(batch.ids + self.offsets)  # (B, Fc, D)
        if self._plain:
            return e_ids
        if self._contiguous_stages:
            k = self.num_id_cols.numel()
            e_num, e_cat = e_ids[:, :k], e_ids[:, k:]  # (B, Fc_num, D), (B, F_cat, D)
        else:
            e_num, e_cat = e_ids[:, self.num_id_cols], e_ids[:, self.cat_id_cols]
        if self.dense_weight is not None:
            x = batch.dense.unsqueeze(-1)  # (B, Fn, 1)
            e_dense = torch.where(batch.dense_missing.unsqueeze(-1), self.dense_missing, x * self.dense_weight + self.dense_bias)  # (B, Fn, D)
            e_num = torch.cat([e_dense, e_num], dim=1)  # (B, F_num, D): dense fields first
        return torch.cat([self.numeric_norm(e_num), self.categorical_norm(e_cat)], dim=1)  # (B, F, D)


class LinearTerm(nn.Module):
    """First-order term: a weight per id, a weight per dense value (and per missing flag), and a global bias.

    Args:
        schema: the prepared data's schema.
    """

    param_roles = {name: "embedding" for name in ("table.weight", "dense_weight", "missing_weight")}

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        sizes = torch.tensor([f.vocab_size for f in schema.id_fields], dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # (Fc,)
        self.table = nn.Embedding(max(int(sizes.sum()), 1), 1)
        nn.init.zeros_(self.table.weight)
        fn = len(schema.dense_fields)
        self.dense_weight = nn.Parameter(torch.zeros(fn)) if fn else None
        self.missing_weight = nn.Parameter(torch.zeros(fn)) if fn else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, batch: Batch) -> Tensor:
        """Returns (B,) first-order logits."""
        ids = self.table(batch.ids + self.offsets).squeeze(-1).sum(1)  # (B,)
        if self.dense_weight is None:
            return ids + self.bias
        dense = batch.dense @ self.dense_weight + batch.dense_missing.to(batch.dense.dtype) @ self.missing_weight  # (B,)
        return ids + dense + self.bias
