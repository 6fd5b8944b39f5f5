"""Field embeddings: every field becomes a D-vector, with the numeric and categorical stage norms applied.

Numeric fields are embedded so that every norm keeps the value (``docs/normalization.md``): a dense
value ``x`` becomes ``x * v + b`` (``m`` where missing), with per-field vectors ``v, b, m``. A per-field LN of the
bias-free ``x * v`` would keep only ``sign(x)``; the bias breaks the proportionality. Bucketised numeric fields are
looked up in the id table like categorical fields but still belong to the numeric stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.norm import EmbeddingNorm, NormSpec, WeightNorm, parse_norm
from ctr.types import Batch, Field, Schema

EMBED_STD = 0.01


class RowWeightNorm(WeightNorm):
    """``wn`` at an embedding stage: weight normalization (Salimans & Kingma 2016, arXiv 1602.07868) of every
    embedding vector the stage owns, ``w = g * u / ||u||`` with a magnitude ``g`` and a direction ``u`` per vector.

    The vectors are the table rows of the stage's id fields and, for dense numeric fields, each field's ``v``,
    ``b`` and ``m`` (``e = x * v + b``, ``m`` where missing). The stored rows are the directions ``u``; this module
    owns the magnitudes, initialised to ``||u||`` so that switching ``wn`` on leaves the stage's function at
    initialisation unchanged (as ``torch.nn.utils.parametrizations.weight_norm`` does for Linear layers). Only
    the rows of a batch are normalised (:meth:`rows`), O(B F D) per step instead of O(vocabulary D); the
    magnitudes of all rows are one (rows, 1) parameter, 1/D of the table.

    The re-parametrisation happens at lookup (:meth:`rows`, :meth:`vectors`); :meth:`forward` passes the stage's
    output through unchanged, so that the output still goes through the stage-norm module (diagnostics hook it).

    Args:
        rows: (R, D) the stage's table rows at initialisation, its fields' ranges concatenated in field order.
        sizes: vocabulary size of each of the stage's id fields (sums to R).
        dense: (Fn, 3, D) the stage's dense-field vectors ``v, b, m`` at initialisation, or None.
        eps: lower bound of ``||u||`` in the division.
    """

    param_roles = {"row_gain": "norm", "dense_gain": "norm"}

    def __init__(self, rows: Tensor, sizes: list[int], dense: Tensor | None, eps: float = 1e-8) -> None:
        super().__init__((), eps)
        s = torch.tensor(sizes, dtype=torch.long)
        self.register_buffer("offsets", torch.cumsum(s, 0) - s, persistent=False)  # (F_ids,) into row_gain
        self.row_gain = nn.Parameter(rows.detach().norm(dim=-1, keepdim=True)) if rows.numel() else None  # (R, 1)
        self.dense_gain = (
            nn.Parameter(dense.detach().norm(dim=-1, keepdim=True)) if dense is not None else None
        )  # (Fn, 3, 1)

    def rows(self, e: Tensor, ids: Tensor) -> Tensor:
        """Looked-up rows ``e`` (B, F_ids, D) of the stage's id fields, whose per-field ids are ``ids`` (B, F_ids):
        ``g[id] * e / ||e||``."""
        g = F.embedding(ids + self.offsets, self.row_gain)  # (B, F_ids, 1)
        return g * F.normalize(e, dim=-1, eps=self.eps)

    def vectors(self, u: Tensor) -> Tensor:
        """The dense fields' (Fn, 3, D) vectors ``v, b, m``, weight-normalised."""
        return self.dense_gain * F.normalize(u, dim=-1, eps=self.eps)


class FieldEmbedding(nn.Module):
    """All fields of a batch as one (B, F, D) tensor, numeric-stage fields first, then categorical-stage fields.

    Args:
        schema: the prepared data's schema.
        dim: D.
        numeric: norm of the numeric stage (fields whose raw column is numeric), over (B, F_num, D).
        categorical: norm of the categorical stage, over (B, F_cat, D).
        init_std: std of the normal init of every embedding parameter (``model.embed_init_std``); the stage norms
            start their gains at it unless their spec sets ``init_gain``, so a norm keeps the stage's scale.

    One table with per-field offsets holds every id field, so a lookup is one gather whatever F is. Multi-valued
    fields (``Schema.multi_fields``, in the categorical stage after the other categorical fields) have a table of
    their own; each row's values are pooled (mean or sum over the values present) into one (D,) embedding.
    ``numeric_norm`` and ``categorical_norm`` are the stage norms (diagnostics hook their outputs); ``wn`` is a
    :class:`RowWeightNorm` there. :meth:`lookup` gives the embeddings before the stage norms (after ``wn``, which
    re-parametrises the rows themselves), :meth:`normalise` applies the stage norms, ``forward`` does both.
    """

    param_roles = {
        name: "embedding"
        for name in ("table.weight", "multi.table.weight", "dense_weight", "dense_bias", "dense_missing")
    }

    def __init__(
        self,
        schema: Schema,
        dim: int,
        numeric: NormSpec | str = "none",
        categorical: NormSpec | str = "none",
        init_std: float = EMBED_STD,
    ) -> None:
        super().__init__()
        if not init_std > 0:
            raise ConfigError(f"model.embed_init_std must be > 0, got {init_std}")
        id_fields, dense_fields = schema.id_fields, schema.dense_fields
        self.dim = dim
        self.vocab = [f.vocab_size for f in id_fields]
        sizes = torch.tensor(self.vocab, dtype=torch.long)
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
        self.multi = MultiValuedEmbedding(schema.multi_fields, dim, init_std) if schema.multi_fields else None
        fm = len(schema.multi_fields)
        self.num_numeric = fn + len(num_ids)
        self.num_categorical = len(cat_ids) + fm
        self.num_fields = self.num_numeric + self.num_categorical
        num_spec, cat_spec = parse_norm(numeric, "numeric"), parse_norm(categorical, "categorical")
        stages = (("numeric", num_spec, self.num_numeric), ("categorical", cat_spec, self.num_categorical))
        for stage, spec, count in stages:
            # a norm on a stage without fields is an error, unless both embedding stages have the same norm: that
            # is one norm of every embedding (MaskNet's published embedding LN), which the other stage applies
            if count == 0 and not spec.is_none and num_spec != cat_spec:
                raise ConfigError(f"norm.{stage}={spec.name}: the data has no {stage} fields; set it to none")
        if fm and cat_spec.reparametrizes:
            raise ConfigError("norm.categorical=wn does not cover multi-valued fields; use another norm")
        self.numeric_norm = (
            self._stage_norm(num_spec, num_ids, init_std, with_dense=True) if self.num_numeric else nn.Identity()
        )
        self.categorical_norm = self._stage_norm(cat_spec, cat_ids, init_std) if self.num_categorical else nn.Identity()
        self._contiguous_stages = num_ids == list(range(len(num_ids)))  # numeric ids come first: no gather needed
        # fast path: no dense fields, no stage norm -> the table lookup already is the (B, F, D) output
        self._plain = fn == 0 and fm == 0 and self._contiguous_stages and num_spec.is_none and cat_spec.is_none
        self._unnormed = num_spec.is_none and cat_spec.is_none

    def _stage_norm(self, spec: NormSpec, id_cols: list[int], init_std: float, with_dense: bool = False) -> nn.Module:
        """The stage's norm module: an :class:`EmbeddingNorm`, or for ``wn`` a :class:`RowWeightNorm` of its rows."""
        num_fields = self.num_numeric if with_dense else self.num_categorical  # multi-valued fields included
        if not spec.reparametrizes:
            return EmbeddingNorm(spec, num_fields, self.dim, init_std)
        sizes = [self.vocab[i] for i in id_cols]
        starts = [sum(self.vocab[:i]) for i in id_cols]
        rows = torch.cat([self.table.weight[a : a + n] for a, n in zip(starts, sizes)] + [torch.zeros(0, self.dim)])
        dense = None
        if with_dense and self.dense_weight is not None:
            dense = torch.stack([self.dense_weight, self.dense_bias, self.dense_missing], dim=1)  # (Fn, 3, D)
        return RowWeightNorm(rows, sizes, dense, **spec.options)

    def lookup(self, batch: Batch) -> Tensor:
        """Embed a batch without the stage norms (``wn``'s row re-parametrisation included).

        Args:
            batch: ids (B, Fc), dense (B, Fn), dense_missing (B, Fn).

        Returns:
            (B, F, D) embeddings, F = F_num + F_cat.
        """
        e_ids = self.table(batch.ids + self.offsets)  # (B, Fc, D)
        if self._plain:
            return e_ids
        if self._contiguous_stages:
            k = self.num_id_cols.numel()
            e_num, e_cat = e_ids[:, :k], e_ids[:, k:]  # (B, Fc_num, D), (B, F_cat, D)
        else:
            e_num, e_cat = e_ids[:, self.num_id_cols], e_ids[:, self.cat_id_cols]
        num_wn = isinstance(self.numeric_norm, RowWeightNorm)
        if num_wn and e_num.shape[1]:
            e_num = self.numeric_norm.rows(e_num, batch.ids[:, self.num_id_cols])
        if isinstance(self.categorical_norm, RowWeightNorm):
            e_cat = self.categorical_norm.rows(e_cat, batch.ids[:, self.cat_id_cols])
        if self.multi is not None:
            e_cat = torch.cat([e_cat, self.multi(batch.multi)], dim=1)  # (B, F_cat, D): multi-valued fields last
        if self.dense_weight is not None:
            v, b, m = self.dense_weight, self.dense_bias, self.dense_missing  # (Fn, D) each
            if num_wn:
                v, b, m = self.numeric_norm.vectors(torch.stack([v, b, m], dim=1)).unbind(1)
            x = batch.dense.unsqueeze(-1)  # (B, Fn, 1)
            e_dense = torch.where(batch.dense_missing.unsqueeze(-1), m, x * v + b)  # (B, Fn, D)
            e_num = torch.cat([e_dense, e_num], dim=1)  # (B, F_num, D): dense fields first
        return torch.cat([e_num, e_cat], dim=1)  # (B, F, D)

    def normalise(self, e: Tensor) -> Tensor:
        """The stage norms applied to :meth:`lookup`'s (B, F, D) output: (B, F, D)."""
        if self._unnormed:
            return e
        k = self.num_numeric
        return torch.cat([self.numeric_norm(e[:, :k]), self.categorical_norm(e[:, k:])], dim=1)  # (B, F, D)

    def forward(self, batch: Batch, raw: Tensor | None = None) -> Tensor:
        """(B, F, D) embeddings of ``batch`` after the stage norms; ``raw``: its :meth:`lookup`, if already taken
        (a model that also needs the embeddings before the norms passes it, so the module call still happens once)."""
        return self.normalise(self.lookup(batch) if raw is None else raw)


class MultiValuedEmbedding(nn.Module):
    """The pooled embeddings of multi-valued fields: (B, Fm, L) ids, -1 where there is no value -> (B, Fm, D).

    Each field pools its values by ``mean`` or ``sum`` (its ``stats["pooling"]``); an empty cell was encoded as one
    missing-value id, so every row has at least one value.
    """

    def __init__(self, fields: list[Field], dim: int, init_std: float) -> None:
        super().__init__()
        sizes = torch.tensor([f.vocab_size for f in fields], dtype=torch.long)
        self.register_buffer("offsets", (torch.cumsum(sizes, 0) - sizes)[:, None], persistent=False)  # (Fm, 1)
        self.table = nn.Embedding(int(sizes.sum()), dim)
        nn.init.normal_(self.table.weight, std=init_std)
        mean = torch.tensor([f.stats["pooling"] == "mean" for f in fields])
        self.register_buffer("mean", mean[:, None], persistent=False)  # (Fm, 1)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, Fm, L) -> (B, Fm, D)."""
        present = ids >= 0  # (B, Fm, L)
        e = self.table(ids.clamp(min=0) + self.offsets)  # (B, Fm, L, D)
        total = (e * present.unsqueeze(-1).to(e.dtype)).sum(2)  # (B, Fm, D)
        count = present.sum(2).clamp(min=1).to(e.dtype)  # (B, Fm)
        return torch.where(self.mean, total / count.unsqueeze(-1), total)


class LinearTerm(nn.Module):
    """First-order term: a weight per id, a weight per dense value (and per missing flag), and a global bias.

    Args:
        schema: the prepared data's schema.
    """

    param_roles = {
        name: "embedding" for name in ("table.weight", "multi.table.weight", "dense_weight", "missing_weight")
    }

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.multi = MultiValuedEmbedding(schema.multi_fields, 1, 1.0) if schema.multi_fields else None
        if self.multi is not None:
            nn.init.zeros_(self.multi.table.weight)
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
        if self.multi is not None:
            ids = ids + self.multi(batch.multi).squeeze(-1).sum(1)  # (B, Fm, 1) -> (B,)
        if self.dense_weight is None:
            return ids + self.bias
        dense = (
            batch.dense @ self.dense_weight + batch.dense_missing.to(batch.dense.dtype) @ self.missing_weight
        )  # (B,)
        return ids + dense + self.bias
