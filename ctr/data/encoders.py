"""Per-field encoders, fitted on train rows only: ``partial_fit`` on batches, ``finish``, then ``transform``.

Every id field uses the same id layout: ``OOV_ID`` (0) for values unseen in train or seen fewer than ``min_count``
times, ``MISSING_ID`` (1) for an empty cell, then ``FIRST_ID`` (2) onwards for the vocabulary in order of decreasing
train frequency (ties by key: the number, or for categorical values their KeyCodec key). Fitted statistics live in
``Field.stats`` (JSON-able), so :meth:`TableEncoder.from_fields` rebuilds the exact transform from a saved schema.

Numeric transforms (``data.numeric_transform``), registered in ``NUMERIC_TRANSFORMS``:
    log2_bucket: ``floor(ln(x) ** 2)`` for ``x > 2``, else ``x`` itself (0, 1, 2 and negatives such as -1),
        then a vocabulary over these bucket values like a categorical field.
    log_standard: ``log1p(max(x, 0))`` standardised with the train mean and std; a dense field whose missing
        cells are 0 with a missing flag.
    quantile_bucket: ``K`` buckets between the train quantiles, estimated from a bounded uniform sample.
    minmax: ``(x - min) / (max - min)`` with the train extremes; a dense field.
    none: the value itself; a dense field.

Categorical fields use a vocabulary (``vocab``) or, for huge vocabularies, a hash into a fixed number of ids
(``hash``).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ctr.data.criteo import CAT_COLUMNS, INT_COLUMNS, KeyCodec, RawBatch
from ctr.data.split import splitmix64
from ctr.errors import DataError
from ctr.registry import Registry
from ctr.types import Field

OOV_ID = 0
MISSING_ID = 1
FIRST_ID = 2
SAMPLE_SIZE = 100_000  # values kept per column to estimate quantiles

NUMERIC_TRANSFORMS: Registry[type[ColumnEncoder]] = Registry("numeric transform")


class ValueCounter:
    """Exact counts of int64 values, merged from per-batch counts (about 16 bytes per distinct value)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_size = 0

    def add(self, values: np.ndarray) -> None:
        """Count (N,) int64 values."""
        if len(values) == 0:
            return
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < min(1 << 16, 4 * len(values)):  # small range: a histogram beats sorting
            hist = np.bincount(values - lo)
            keys = np.flatnonzero(hist)
            self._push(keys + lo, hist[keys])
        else:
            self._push(*np.unique(values, return_counts=True))

    def add_counts(self, keys: np.ndarray, counts: np.ndarray) -> None:
        """Count (D,) distinct int64 ``keys`` seen ``counts`` times each."""
        if len(keys):
            self._push(keys, counts)

    def _push(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)))
        self._pending_size += len(keys)
        if self._pending_size >= max(len(self.keys) // 2, 1 << 17):  # bounds pending memory to 1.5x the table
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
        counts = np.concatenate([self.counts, *(c for _, c in self._pending)])
        self._pending, self._pending_size = [], 0
        # hash aggregation rather than sorting: one pass over the keys; float64 sums are exact below 2**53 rows
        codes, distinct = pd.factorize(keys)
        self.keys = np.asarray(distinct, dtype=np.int64)
        self.counts = np.bincount(codes, weights=counts, minlength=len(distinct)).astype(np.int64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct values (D,) int64 (in no particular order) and their counts (D,) int64."""
        self._merge()
        return self.keys, self.counts


class KeyIndex:
    """int64 key -> position in a key list, for many keys at once; absent keys give -1.

    Small integer ranges use a direct lookup table, others pandas' hash index (built once, reused).
    """

    def __init__(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        self.size = len(keys)
        self.min_key = int(keys.min()) if len(keys) else 0
        span = int(keys.max()) - self.min_key + 1 if len(keys) else 0
        self._index: pd.Index | None = None
        if span <= 4 * len(keys) + 4096:
            self._table = np.full(span + 1, -1, dtype=np.int64)  # last entry: out of range
            self._table[keys - self.min_key] = np.arange(len(keys))
        else:
            self._index = pd.Index(keys)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """(N,) int64 keys -> (N,) int64 positions, -1 where absent."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._index is not None:
            return self._index.get_indexer(keys)
        idx = keys - self.min_key
        idx[(idx < 0) | (idx >= len(self._table))] = len(self._table) - 1
        return self._table[idx]


class ColumnEncoder:
    """One raw column -> one Field. Subclasses set ``transform_name`` and implement the methods below."""

    transform_name = ""
    encoding = "id"

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.field: Field | None = None

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        """Update the fit with (N,) int64 train values; ``missing`` (N,) bool marks empty cells."""
        raise NotImplementedError

    def finish(self) -> Field:
        """Freeze the fit; returns the Field with its stats."""
        raise NotImplementedError

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """(N,) values -> (N,) int32 ids, or (N,) float32 for dense encoders."""
        raise NotImplementedError

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> ColumnEncoder:
        """The fitted encoder described by a saved Field."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if self.field is None:
            raise RuntimeError(f"encoder for {self.name} is not fitted: call finish() first")


class VocabEncoder(ColumnEncoder):
    """Values seen at least ``min_count`` times in train get ids by decreasing frequency; others share OOV."""

    transform_name = "vocab"

    def __init__(self, name: str, source: str, min_count: int, codec: KeyCodec | None = None) -> None:
        super().__init__(name, source)
        self.min_count = min_count
        self.codec = codec  # values are categorical keys (decoded through it); None: plain integers
        self._counter = ValueCounter()
        self._index: KeyIndex | None = None

    def _values(self, values: np.ndarray) -> np.ndarray:
        return values

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        self._counter.add(self._values(values[~missing]))

    def partial_fit_counts(self, values: np.ndarray, counts: np.ndarray) -> None:
        """Update the fit with (D,) distinct non-missing values seen ``counts`` times each."""
        self._counter.add_counts(self._values(values), counts)

    def finish(self) -> Field:
        keys, counts = self._counter.result()
        keep = counts >= self.min_count
        kept, kept_counts = keys[keep], counts[keep]
        vocab = kept[np.lexsort((kept, -kept_counts))]
        self._counter = ValueCounter()
        self._index = KeyIndex(vocab)
        texts = self.codec.texts_of(vocab) if self.codec else vocab.tolist()
        stats = {"min_count": self.min_count, "distinct": int(len(keys)), "vocab": texts}
        self.field = Field(self.name, self.source, "id", self.transform_name, FIRST_ID + len(vocab), stats)
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        pos = self._index.lookup(self._values(values))
        ids = np.where(pos >= 0, pos + FIRST_ID, OOV_ID).astype(np.int32)
        ids[missing] = MISSING_ID
        return ids

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> VocabEncoder:
        codec_or_none = codec if field.source == "categorical" else None
        enc = cls(field.name, field.source, min_count=field.stats.get("min_count", 1), codec=codec_or_none)
        vocab = field.stats["vocab"]
        keys = codec.keys_of(vocab) if enc.codec else np.asarray(vocab, dtype=np.int64)
        if field.vocab_size != FIRST_ID + len(keys):
            raise DataError(f"field {field.name}: vocab_size {field.vocab_size} does not match its {len(keys)} values")
        enc._index = KeyIndex(keys)
        enc.field = field
        return enc


_LOG2_TABLE_SIZE = 1 << 16


def _log2_formula(x: np.ndarray) -> np.ndarray:
    ln = np.log(np.maximum(x, 1).astype(np.float64))
    return np.where(x > 2, np.floor(ln * ln).astype(np.int64), x)


_LOG2_TABLE = _log2_formula(np.arange(_LOG2_TABLE_SIZE, dtype=np.int64))


def log2_bucket(x: np.ndarray) -> np.ndarray:
    """(N,) int64 -> (N,) int64: ``floor(ln(x) ** 2)`` where ``x > 2``, else ``x`` (negatives kept)."""
    out = _LOG2_TABLE[np.clip(x, 0, _LOG2_TABLE_SIZE - 1)]
    big = x >= _LOG2_TABLE_SIZE
    if big.any():
        out[big] = _log2_formula(x[big])
    return np.where(x < 0, x, out)


def _as_int64(values: np.ndarray) -> np.ndarray:
    """Integer values as they are; float values (declared tables) floored, as the bucket formula expects integers."""
    if values.dtype.kind == "f":
        return np.floor(np.clip(values, -(2.0**62), 2.0**62)).astype(np.int64)
    return values


@NUMERIC_TRANSFORMS.register("log2_bucket")
class Log2BucketEncoder(VocabEncoder):
    """:func:`log2_bucket` then a vocabulary over the bucket values (``min_count`` applies)."""

    transform_name = "log2_bucket"

    def __init__(self, name: str, source: str = "numeric", min_count: int = 10, **_: Any) -> None:
        super().__init__(name, source, min_count)

    def _values(self, values: np.ndarray) -> np.ndarray:
        return log2_bucket(_as_int64(values))

    def finish(self) -> Field:
        field = super().finish()
        self._build_direct()
        return field

    def _build_direct(self) -> None:
        """ids of the raw values ``lo .. _LOG2_TABLE_SIZE - 1`` (then one -1 sentinel): one gather per value."""
        lo = 0
        if self._index is not None and self._index.size:
            lo = max(min(self._index.min_key, 0), -_LOG2_TABLE_SIZE)
        raw = np.arange(lo, _LOG2_TABLE_SIZE, dtype=np.int64)
        self._lo = lo
        self._direct = np.append(super().transform(raw, np.zeros(len(raw), dtype=bool)), np.int32(-1))

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        values = _as_int64(values)
        last = len(self._direct) - 1
        pos = np.minimum((values - self._lo).view(np.uint64), last).view(np.int64)  # below lo wraps: -> last
        ids = self._direct.take(pos)
        outside = ids < 0
        if outside.any():
            ids[outside] = super().transform(values[outside], missing[outside])
        ids[missing] = MISSING_ID
        return ids

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> Log2BucketEncoder:
        enc = super().from_field(field, codec)
        enc._build_direct()
        return enc


@NUMERIC_TRANSFORMS.register("log_standard")
class LogStandardEncoder(ColumnEncoder):
    """``(log1p(max(x, 0)) - mean) / std`` with train mean and (population) std; missing -> 0 plus a flag."""

    transform_name = "log_standard"
    encoding = "dense"

    def __init__(self, name: str, source: str = "numeric", **_: Any) -> None:
        super().__init__(name, source)
        self._n = 0
        self._mean = 0.0
        self._m2 = 0.0
        self.mean, self.std = 0.0, 1.0

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        v = np.log1p(np.maximum(values[~missing], 0).astype(np.float64))
        if v.size == 0:
            return
        n, mean = v.size, float(v.mean())
        m2 = float(((v - mean) ** 2).sum())
        total = self._n + n
        delta = mean - self._mean  # Chan et al. parallel update
        self._mean += delta * n / total
        self._m2 += m2 + delta * delta * self._n * n / total
        self._n = total

    def finish(self) -> Field:
        self.mean = self._mean if self._n else 0.0
        std = float(np.sqrt(self._m2 / self._n)) if self._n else 0.0
        self.std = std if std > 1e-12 else 1.0
        stats = {"mean": self.mean, "std": self.std, "count": self._n}
        self.field = Field(self.name, self.source, "dense", self.transform_name, 0, stats)
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        v = (np.log1p(np.maximum(values, 0).astype(np.float64)) - self.mean) / self.std
        v[missing] = 0.0
        return v.astype(np.float32)

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> LogStandardEncoder:
        enc = cls(field.name, field.source)
        enc.mean, enc.std = float(field.stats["mean"]), float(field.stats["std"])
        enc.field = field
        return enc


@NUMERIC_TRANSFORMS.register("quantile_bucket")
class QuantileBucketEncoder(ColumnEncoder):
    """Buckets between train quantiles ``i / K`` (duplicates merged), from a bounded uniform sample.

    The sample keeps the ``sample_size`` values with the smallest hash of their position among the column's
    train values (bottom-k sampling): uniform, deterministic, independent of batch sizes, bounded memory.
    """

    transform_name = "quantile_bucket"

    def __init__(
        self, name: str, source: str = "numeric", buckets: int = 32, sample_size: int = SAMPLE_SIZE, **_: Any
    ) -> None:
        super().__init__(name, source)
        if buckets < 2:
            raise DataError(f"data.quantile_buckets must be >= 2, got {buckets}")
        self.buckets = buckets
        self.sample_size = sample_size
        self._salt = splitmix64(np.uint64(zlib.crc32(name.encode())))
        self._seen = 0
        self._sample = np.zeros(0, np.int64)
        self._priority = np.zeros(0, np.uint64)
        self.edges = np.zeros(0, np.float64)

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        v = values[~missing]
        prio = splitmix64(self._salt ^ np.arange(self._seen, self._seen + len(v), dtype=np.uint64))
        self._seen += len(v)
        sample = np.concatenate([self._sample, v])
        priority = np.concatenate([self._priority, prio])
        if len(sample) > self.sample_size:
            keep = np.argpartition(priority, self.sample_size)[: self.sample_size]
            sample, priority = sample[keep], priority[keep]
        self._sample, self._priority = sample, priority

    def finish(self) -> Field:
        if len(self._sample):
            q = np.arange(1, self.buckets) / self.buckets
            self.edges = np.unique(np.quantile(self._sample.astype(np.float64), q))
        stats = {"buckets": self.buckets, "sample_size": int(len(self._sample)), "edges": self.edges.tolist()}
        self._sample, self._priority = np.zeros(0, np.int64), np.zeros(0, np.uint64)
        self.field = Field(self.name, self.source, "id", self.transform_name, FIRST_ID + len(self.edges) + 1, stats)
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        ids = (FIRST_ID + np.searchsorted(self.edges, values, side="right")).astype(np.int32)
        ids[missing] = MISSING_ID
        return ids

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> QuantileBucketEncoder:
        enc = cls(field.name, field.source, buckets=int(field.stats["buckets"]))
        enc.edges = np.asarray(field.stats["edges"], dtype=np.float64)
        enc.field = field
        return enc


@NUMERIC_TRANSFORMS.register("minmax")
class MinMaxEncoder(ColumnEncoder):
    """``(x - min) / (max - min)`` with the train minimum and maximum (values outside them fall outside [0, 1]);
    missing -> 0 plus a flag."""

    transform_name = "minmax"
    encoding = "dense"

    def __init__(self, name: str, source: str = "numeric", **_: Any) -> None:
        super().__init__(name, source)
        self.lo, self.hi = np.inf, -np.inf

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        v = values[~missing]
        if v.size:
            self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))

    def finish(self) -> Field:
        if not np.isfinite(self.lo):
            self.lo, self.hi = 0.0, 1.0
        stats = {"min": self.lo, "max": self.hi}
        self.field = Field(self.name, self.source, "dense", self.transform_name, 0, stats)
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        v = (values.astype(np.float64) - self.lo) / span
        v[missing] = 0.0
        return v.astype(np.float32)

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> MinMaxEncoder:
        enc = cls(field.name, field.source)
        enc.lo, enc.hi = float(field.stats["min"]), float(field.stats["max"])
        enc.field = field
        return enc


@NUMERIC_TRANSFORMS.register("none")
class IdentityEncoder(ColumnEncoder):
    """The value as it is (float32); missing -> 0 plus a flag. Values beyond float32's range saturate at its
    largest finite value (an infinity would make every loss NaN)."""

    transform_name = "none"
    encoding = "dense"

    def __init__(self, name: str, source: str = "numeric", **_: Any) -> None:  # the options of other transforms
        super().__init__(name, source)

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        pass

    def finish(self) -> Field:
        self.field = Field(self.name, self.source, "dense", self.transform_name, 0, {})
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        top = float(np.finfo(np.float32).max)
        return np.clip(np.where(missing, 0.0, values), -top, top).astype(np.float32)

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> IdentityEncoder:
        enc = cls(field.name, field.source)
        enc.field = field
        return enc


class HashEncoder(ColumnEncoder):
    """Categorical values hashed into ``buckets`` ids (no vocabulary, no fit: for huge vocabularies).

    The hash is of the value's text (stable across files and runs): a 64-bit mix of the key for values the codec
    keys by content (up to 8 bytes), a BLAKE2b digest of the text for longer values. Missing values get their own
    id; there is no out-of-vocabulary id.
    """

    transform_name = "hash"

    def __init__(self, name: str, source: str, buckets: int, codec: KeyCodec) -> None:
        super().__init__(name, source)
        if buckets < 1:
            raise DataError(f"field {name}: hash buckets must be >= 1, got {buckets}")
        self.buckets, self.codec = buckets, codec

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        pass

    def partial_fit_counts(self, values: np.ndarray, counts: np.ndarray) -> None:
        pass

    def finish(self) -> Field:
        self.field = Field(
            self.name, self.source, "id", self.transform_name, FIRST_ID + self.buckets, {"buckets": self.buckets}
        )
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        self._check_fitted()
        distinct, inverse = np.unique(values, return_inverse=True)
        hashes = splitmix64(distinct.view(np.uint64))
        by_table = (distinct.view(np.uint64) >> np.uint64(56)) == 0  # codec table keys: hash the text instead
        for i in np.flatnonzero(by_table & (distinct != 0)):
            raw = self.codec.text_of(int(distinct[i])).encode("utf-8", "surrogateescape")
            hashes[i] = np.uint64(int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little"))
        ids = (FIRST_ID + hashes % np.uint64(self.buckets)).astype(np.int32)[inverse.reshape(-1)]
        ids[missing] = MISSING_ID
        return ids

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> HashEncoder:
        enc = cls(field.name, field.source, int(field.stats["buckets"]), codec)
        enc.field = field
        return enc


PAD_ID = -1  # a multi-valued field's positions after its last value (models mask them out)


class MultiValuedEncoder(ColumnEncoder):
    """A multi-valued column: a vocabulary (or hash) over its values, encoded as (N, max_len) ids.

    Positions after a cell's last value are ``PAD_ID``; an empty cell is one ``MISSING_ID`` value, so it has an
    embedding of its own. The field's ``stats`` add ``max_len`` and ``pooling`` to the inner encoder's.
    """

    encoding = "multi"

    def __init__(self, inner: ColumnEncoder, max_len: int, pooling: str) -> None:
        super().__init__(inner.name, inner.source)
        self.inner, self.max_len, self.pooling = inner, max_len, pooling
        self.transform_name = inner.transform_name

    def partial_fit(self, values: np.ndarray, missing: np.ndarray) -> None:
        """``values``: (N, max_len) keys, 0 where there is no value."""
        flat = values.ravel()
        self.inner.partial_fit(flat, flat == 0)

    def finish(self) -> Field:
        f = self.inner.finish()
        stats = {**f.stats, "max_len": self.max_len, "pooling": self.pooling}
        self.field = Field(f.name, f.source, "multi", f.transform, f.vocab_size, stats)
        return self.field

    def transform(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """(N, max_len) keys -> (max_len, N) int32 ids (positions first, the row axis last like other arrays)."""
        self._check_fitted()
        flat = values.ravel()
        ids = self.inner.transform(flat, flat == 0).reshape(values.shape)
        ids[values == 0] = PAD_ID
        empty = ~(values != 0).any(axis=1)
        ids[empty, 0] = MISSING_ID
        return np.ascontiguousarray(ids.T)

    @classmethod
    def from_field(cls, field: Field, codec: KeyCodec) -> MultiValuedEncoder:
        inner_field = Field(field.name, field.source, "id", field.transform, field.vocab_size, field.stats)
        inner = {"vocab": VocabEncoder, "hash": HashEncoder}[field.transform].from_field(inner_field, codec)
        enc = cls(inner, int(field.stats["max_len"]), field.stats["pooling"])
        enc.field = field
        return enc


@dataclass
class FactorizedBatch:
    """Parsed rows with each categorical column factorized within the batch (what prepare keeps between passes).

    Attributes:
        label: (N,) int8.
        ints: (NUM_INT, N) int64, 0 where missing.
        int_missing: (NUM_INT, N) bool.
        codes: (NUM_CAT, N) int32, or NUM_CAT (N,) unsigned arrays; row i of column j holds
            ``uniques[j][codes[j][i]]``.
        uniques: NUM_CAT arrays of the distinct int64 keys of each column in this batch (0 = missing).
        group: (N,) int64 group keys, or None.
        multi: (sum of max_len, N) int64 keys of the multi-valued columns, their positions stacked, or None.
        weight: (N,) float64 example weights, or None.
    """

    label: np.ndarray
    ints: np.ndarray
    int_missing: np.ndarray
    codes: np.ndarray
    uniques: list[np.ndarray]
    group: np.ndarray | None = None
    multi: np.ndarray | None = None
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)


def factorize_batch(batch: RawBatch) -> FactorizedBatch:
    """Factorize each categorical column of ``batch`` (hash-based, first-seen order)."""
    codes = np.empty(batch.cats.shape, dtype=np.int32)
    uniques = []
    for j, keys in enumerate(batch.cats):
        c, u = pd.factorize(keys)
        codes[j] = c
        uniques.append(np.asarray(u, dtype=np.int64))
    multi = np.concatenate([m.T for m in batch.multi]) if batch.multi else None
    return FactorizedBatch(batch.label, batch.ints, batch.int_missing, codes, uniques, batch.group, multi, batch.weight)


@dataclass
class EncodedBatch:
    """Rows after encoding, per-column arrays laid out (columns, N).

    Attributes:
        ids: (Fc, N) int32 in ``Schema.id_fields`` order.
        dense: (Fn, N) float32 in ``Schema.dense_fields`` order.
        dense_missing: (Fn, N) bool.
        label: (N,) int8.
        group: (N,) int64 group keys, or None.
        multi: (sum of max_len, N) int32 ids of the multi-valued fields, their positions stacked in field order,
            ``PAD_ID`` after a cell's last value; or None.
        weight: (N,) float32 example weights, or None.
    """

    ids: np.ndarray
    dense: np.ndarray
    dense_missing: np.ndarray
    label: np.ndarray
    group: np.ndarray | None = None
    multi: np.ndarray | None = None
    weight: np.ndarray | None = None

    def columns(self) -> tuple[np.ndarray | None, ...]:
        """Every array, the row axis last."""
        return (self.ids, self.dense, self.dense_missing, self.label, self.group, self.multi, self.weight)

    def __len__(self) -> int:
        return len(self.label)


def _with_weight(batch: EncodedBatch, weight: np.ndarray | None) -> EncodedBatch:
    """``batch`` carrying the rows' example weights (float32), if any."""
    if weight is not None:
        batch.weight = weight.astype(np.float32)
    return batch


class TableEncoder:
    """Every field of a table in model order (numeric columns, then categorical ones), fitted on train batches only.

    Example:
        >>> enc = TableEncoder.criteo(min_count=10, numeric_transform="log2_bucket")
        >>> for batch in train_batches:
        ...     enc.partial_fit(batch)
        >>> fields = enc.finish()
        >>> encoded = enc.transform(test_batch)
    """

    def __init__(
        self,
        numeric: list[ColumnEncoder],
        categorical: list[ColumnEncoder],
        codec: KeyCodec,
        multi: list[MultiValuedEncoder] | None = None,
    ) -> None:
        self.codec = codec
        self.numeric, self.categorical, self.multi = numeric, categorical, list(multi or [])
        self.fields: list[Field] = []

    @classmethod
    def criteo(
        cls,
        min_count: int = 10,
        numeric_transform: str = "log2_bucket",
        quantile_buckets: int = 32,
        codec: KeyCodec | None = None,
    ) -> TableEncoder:
        """The 39 Criteo columns: ``I1 .. I13`` with one numeric transform, ``C1 .. C26`` with vocabularies."""
        codec = codec or KeyCodec()
        numeric = NUMERIC_TRANSFORMS.get(numeric_transform)
        return cls(
            [numeric(name, "numeric", min_count=min_count, buckets=quantile_buckets) for name in INT_COLUMNS],
            [VocabEncoder(name, "categorical", min_count, codec) for name in CAT_COLUMNS],
            codec,
        )

    @classmethod
    def for_table(cls, spec: Any, codec: KeyCodec | None = None) -> TableEncoder:
        """The fields of a declared table (a :class:`ctr.data.table.TableSpec`)."""
        codec = codec or KeyCodec()
        numeric = [
            NUMERIC_TRANSFORMS.get(c.transform)(c.name, "numeric", min_count=c.min_count, buckets=c.buckets)
            for c in spec.numeric
        ]
        categorical: list[ColumnEncoder] = []
        for c in spec.categorical:
            names = [f"{c.name}_{p}" for p in c.derive] if c.kind == "datetime" else [c.name]
            for name in names:
                if c.buckets:
                    categorical.append(HashEncoder(name, "categorical", c.buckets, codec))
                else:
                    categorical.append(VocabEncoder(name, "categorical", c.min_count, codec))
        multi = []
        for c in spec.multi:
            if c.buckets:
                inner: ColumnEncoder = HashEncoder(c.name, "categorical", c.buckets, codec)
            else:
                inner = VocabEncoder(c.name, "categorical", c.min_count, codec)
            multi.append(MultiValuedEncoder(inner, c.max_len, c.pooling))
        return cls(numeric, categorical, codec, multi)

    @property
    def encoders(self) -> list[ColumnEncoder]:
        return [*self.numeric, *self.categorical, *self.multi]

    def _multi_blocks(self, multi: np.ndarray | None) -> list[np.ndarray]:
        """(sum of max_len, N) stacked keys -> one (N, max_len) array per multi-valued field."""
        out, start = [], 0
        for enc in self.multi:
            out.append(multi[start : start + enc.max_len].T)
            start += enc.max_len
        return out

    def partial_fit(self, batch: RawBatch, train: np.ndarray | None = None) -> None:
        """Update every column's fit with the train rows of a batch (all rows, or those where ``train`` is True)."""
        for j, enc in enumerate(self.numeric):
            values, missing = batch.ints[j], batch.int_missing[j]
            if train is not None:
                values, missing = values[train], missing[train]
            enc.partial_fit(values, missing)
        for j, enc in enumerate(self.categorical):
            keys = batch.cats[j]
            if train is not None:
                keys = keys[train]
            enc.partial_fit(keys, keys == 0)
        for enc, keys in zip(self.multi, batch.multi):
            enc.partial_fit(keys if train is None else keys[train], None)

    def finish(self) -> list[Field]:
        """Freeze all fits; returns the Fields in model order."""
        self.fields = [enc.finish() for enc in self.encoders]
        return self.fields

    def transform(self, batch: RawBatch) -> EncodedBatch:
        """Encode a batch of rows of any split with the fitted vocabularies and statistics."""
        out = self._transform(
            batch.label,
            batch.ints,
            batch.int_missing,
            lambda j, enc: enc.transform(batch.cats[j], batch.cats[j] == 0),
            batch.group,
            batch.multi,
        )
        return _with_weight(out, batch.weight)

    def partial_fit_factorized(self, batch: FactorizedBatch, train: np.ndarray | None = None) -> None:
        """:meth:`partial_fit` for a factorized batch: categorical values are counted per distinct value."""
        ints, int_missing, codes = batch.ints, batch.int_missing, batch.codes
        if train is not None:  # one 2-d gather per array (faster than boolean selection)
            rows = np.flatnonzero(train)
            ints, int_missing = np.take(ints, rows, axis=1), np.take(int_missing, rows, axis=1)
            codes = [np.take(c, rows) for c in codes]
        for j, enc in enumerate(self.numeric):
            enc.partial_fit(ints[j], int_missing[j])
        for j, enc in enumerate(self.categorical):
            uniques = batch.uniques[j]
            counts = np.bincount(codes[j], minlength=len(uniques))
            keep = (counts > 0) & (uniques != 0)
            enc.partial_fit_counts(uniques[keep], counts[keep])
        if self.multi:
            multi = batch.multi if train is None else np.take(batch.multi, np.flatnonzero(train), axis=1)
            for enc, keys in zip(self.multi, self._multi_blocks(multi)):
                enc.partial_fit(keys, None)

    def transform_factorized(self, batch: FactorizedBatch) -> EncodedBatch:
        """:meth:`transform` for a factorized batch: each distinct categorical value is looked up once."""

        def cat_ids(j: int, enc: ColumnEncoder) -> np.ndarray:
            uniques = batch.uniques[j]
            return enc.transform(uniques, uniques == 0)[batch.codes[j]]

        multi = self._multi_blocks(batch.multi) if self.multi else []
        out = self._transform(batch.label, batch.ints, batch.int_missing, cat_ids, batch.group, multi)
        return _with_weight(out, batch.weight)

    def _transform(
        self,
        label: np.ndarray,
        ints: np.ndarray,
        int_missing: np.ndarray,
        cat_ids: Any,
        group: np.ndarray | None,
        multi: list[np.ndarray],
    ) -> EncodedBatch:
        if not self.fields:
            raise RuntimeError("TableEncoder is not fitted: call finish() or build it with from_fields()")
        n = len(label)
        id_encs = [e for e in [*self.numeric, *self.categorical] if e.encoding == "id"]
        dense_encs = [e for e in self.encoders if e.encoding == "dense"]
        ids = np.empty((len(id_encs), n), dtype=np.int32)
        dense = np.empty((len(dense_encs), n), dtype=np.float32)
        dense_missing = np.empty((len(dense_encs), n), dtype=bool)
        i = d = 0
        for j, enc in enumerate(self.numeric):
            if enc.encoding == "id":
                ids[i] = enc.transform(ints[j], int_missing[j])
                i += 1
            else:
                dense[d] = enc.transform(ints[j], int_missing[j])
                dense_missing[d] = int_missing[j]
                d += 1
        for j, enc in enumerate(self.categorical):
            ids[i] = cat_ids(j, enc)
            i += 1
        multi_ids = (
            np.concatenate([enc.transform(keys, None) for enc, keys in zip(self.multi, multi)]) if self.multi else None
        )
        return EncodedBatch(ids, dense, dense_missing, label, group, multi_ids)

    @classmethod
    def from_fields(cls, fields: list[Field], codec: KeyCodec | None = None) -> TableEncoder:
        """The fitted encoder of a saved schema's fields (numeric fields first, then categorical ones)."""
        codec = codec or KeyCodec()
        kinds = {
            "vocab": VocabEncoder,
            "hash": HashEncoder,
            **{n: NUMERIC_TRANSFORMS.get(n) for n in NUMERIC_TRANSFORMS.names()},
        }
        built = []
        for f in fields:
            if f.transform not in kinds:
                raise DataError(f"field {f.name}: unknown transform {f.transform!r}; valid: {', '.join(kinds)}")
            kind = MultiValuedEncoder if f.encoding == "multi" else kinds[f.transform]
            built.append(kind.from_field(f, codec))
        k = sum(f.source == "numeric" for f in fields)
        m = sum(f.encoding == "multi" for f in fields)
        if any(f.source != "numeric" for f in fields[:k]) or any(
            f.encoding != "multi" for f in fields[len(fields) - m :]
        ):
            raise DataError("schema fields must list numeric fields, then categorical ones, then multi-valued ones")
        enc = cls(built[:k], built[k : len(built) - m], codec, built[len(built) - m :])
        enc.fields = list(fields)
        return enc
