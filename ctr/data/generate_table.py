"""Synthetic data for any declared table (``data.format: csv|parquet``), with a planted click model.

:func:`generate_table` writes every column a :class:`ctr.data.table.TableSpec` declares, the label with the
spec's first positive and first negative value, and the group column (a user id) when one is declared:

* ``numeric``: heavy-tailed (log-normal) counts or amounts, some missing (an empty cell, a Parquet null);
* ``categorical``: Zipf-distributed 8-hex-character values over a vocabulary of 2 to 20,000, some missing;
* ``datetime``: the row's event time in the column's ``format`` (a ``strptime`` format, or ``unix`` seconds) over
  ``DAYS`` days from ``START_TIME``; rows in time order (``time_order="sorted"``) or not (``"shuffled"``);
* ``multi_valued``: 0 to ``max_len`` values of a Zipf vocabulary joined by the column's ``separator``;
* ``ignore``: a 1-based row id;
* the group column, when not declared or declared ``categorical``/``ignore``: a user id (Zipf over
  ``GROUP_VOCAB`` users).

Clicks come from a planted logistic model in the manner of :mod:`ctr.data.generate`: per-value main effects of
categorical columns and of the user, factorised pairwise interactions between categorical columns of at most
``INTERACTION_VOCAB`` values (which a linear model cannot represent), non-monotone effects of numeric values and
numeric x categorical slopes, an hour-of-day and weekend effect of each datetime column, and for a multi-valued
column the mean effect of its values. The intercept is calibrated to the click rate ``ctr``.

Every column draws from its own seeded stream per block of ``GEN_BLOCK`` rows, keyed by the column's name, so the
output for a seed does not depend on ``chunk_rows``. Each row's planted click probability goes to the same oracle
sidecar as :mod:`ctr.data.generate` writes (:func:`ctr.data.generate.oracle_path`), with the line number the
reader gives the first row and how to read the labels back, so :func:`ctr.data.generate.oracle_auc` scores the
test rows of the line split of a generated table too.

CLI::

    python -m ctr.data.generate_table --dataset avazu OUT --rows N --seed S
    python -m ctr.data.generate_table --config my_data.yaml OUT --rows N --seed S
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctr.data.generate import (
    BASE_CTR,
    CROSS_SCALE,
    DEFAULT_ROWS,
    DEFAULT_SEED,
    FACTOR_DIM,
    FACTOR_SCALE,
    GEN_BLOCK,
    HASH_SALT,
    MAIN_SCALE,
    NUMERIC_AMP,
    TABLE_SLOTS,
    calibrated_bias,
    click_probability,
    oracle_path,
    write_oracle,
)
from ctr.data.split import splitmix64
from ctr.data.table import ColumnSpec, TableSpec

VOCAB_RANGE = (2, 20_000)  # a categorical or multi-valued column's vocabulary size is log-uniform in this range
ZIPF_RANGE = (1.05, 1.4)  # its Zipf exponent is uniform in this range
MISSING_MAX = 0.3  # half the numeric and categorical columns have no missing cells, the others up to this rate
GROUP_VOCAB = 2_000  # users of the group column
GROUP_ZIPF = 1.1
GROUP_SCALE = 0.5  # std of the per-user effect
MULTI_SCALE = 1.0  # std of a multi-valued column's per-value effect (a row gets the mean over its values)
DEFAULT_MAX_LEN = 8  # a multi-valued column without max_len holds 0 to this many values
DEFAULT_SEPARATOR = "^"
HOUR_AMP = (0.3, 0.6)  # amplitude of a datetime column's daily cycle: amp * cos(2 pi (hour - peak) / 24)
WEEKEND_SCALE = 0.2
START_TIME = 1_413_849_600  # 2014-10-21 00:00:00 UTC, the first day of Avazu's log
DAYS = 10
NUM_PAIRS = 8  # interacting categorical column pairs (fewer when the table has fewer) ...
INTERACTION_VOCAB = 1_000  # ... drawn among columns with at most this many values, so a few 1e5 rows teach them
NUM_CROSSES = 2  # numeric x categorical slopes
TIME_ORDERS = ("sorted", "shuffled")
PARQUET_ROW_GROUP = 1 << 16  # fixed, so that the Parquet bytes do not depend on chunk_rows
TIME_KEY = 1 << 32  # stream key of the event time (column keys are 32-bit CRCs of their names)
CALIBRATION_ROWS = 1 << 15
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass
class ColumnModel:
    """One file column's distribution and planted effects.

    Attributes:
        name: the column's name.
        kind: ``label``, ``numeric``, ``categorical``, ``datetime``, ``multi_valued``, ``ignore`` (a row id),
            ``group`` (a user id) or ``filler`` (a column the file lists but nothing declares: empty).
        key: CRC-32 of the name; the column's streams and value texts depend on it, not on its position.
        feature: the model reads the column (a user id that is only the group column is not a feature).
        missing_rate: probability of a missing cell (numeric, categorical).
        vocab, zipf: vocabulary size and Zipf exponent (categorical, group, multi_valued).
        main: (min(vocab, TABLE_SLOTS),) effect of each value slot (categorical, group, multi_valued).
        missing_effect: effect of a missing cell (of an empty list, for multi_valued).
        factors: (slots, FACTOR_DIM) latent vectors; an interacting pair adds their dot product.
        integer, mu, sigma: numeric values are ``exp(mu + sigma * z)``, floored (integer) or to 2 decimals.
        amp, center, width: numeric effect ``amp * exp(-((log1p(x) - center) / width)^2 / 2)``.
        hour_amp, hour_peak, weekend: datetime effect ``hour_amp * cos(2 pi (hour - hour_peak) / 24)`` plus
            ``weekend`` on Saturdays and Sundays.
        format: datetime: the written format (``unix`` or a ``strftime`` format).
        max_len, separator: multi_valued: at most this many values per cell, joined by the separator.
    """

    name: str
    kind: str
    key: int
    feature: bool = True
    missing_rate: float = 0.0
    vocab: int = 0
    zipf: float = 0.0
    main: np.ndarray = field(default_factory=lambda: np.zeros(0))
    missing_effect: float = 0.0
    factors: np.ndarray = field(default_factory=lambda: np.zeros((0, FACTOR_DIM)))
    integer: bool = False
    mu: float = 0.0
    sigma: float = 0.0
    amp: float = 0.0
    center: float = 0.0
    width: float = 1.0
    hour_amp: float = 0.0
    hour_peak: float = 0.0
    weekend: float = 0.0
    format: str = ""
    max_len: int = 0
    separator: str = ""


@dataclass
class TableModel:
    """The planted click model of a declared table.

    Attributes:
        spec: the declaration.
        columns: one per file column, in file order.
        bias: intercept, calibrated so that the mean click probability is the requested click rate.
        pairs: (a, b) names of interacting categorical columns.
        crosses: (numeric column, categorical column, (slots,) slopes); adds ``log1p(x) * slope[slot] / 4``.
    """

    spec: TableSpec
    columns: list[ColumnModel]
    bias: float
    pairs: list[tuple[str, str]]
    crosses: list[tuple[str, str, np.ndarray]]

    def column(self, name: str) -> ColumnModel:
        return next(c for c in self.columns if c.name == name)


def column_key(name: str) -> int:
    return zlib.crc32(name.encode())


def file_columns(spec: TableSpec) -> list[str]:
    """The file's columns in order: ``spec.column_names`` when listed, else the label, the declared columns and
    the group column when it is not declared."""
    declared = [c.name for c in spec.columns]
    needed = [spec.label, *declared] + ([spec.group] if spec.group and spec.group not in declared else [])
    if not spec.column_names:
        return needed
    absent = [n for n in needed if n not in spec.column_names]
    if absent:
        raise ValueError(f"data.column_names does not list {absent[0]!r}, which the declaration needs")
    return list(spec.column_names)


def build_table_model(spec: TableSpec, seed: int, ctr: float = BASE_CTR) -> TableModel:
    """Draw the planted model of ``spec`` for ``seed`` and calibrate its intercept to the click rate ``ctr``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 < ctr < 1:
        raise ValueError(f"ctr must be in (0, 1), got {ctr}")
    declared = {c.name: c for c in spec.columns}
    columns = []
    for name in file_columns(spec):
        col = declared.get(name)
        rng = np.random.default_rng([seed, 0, column_key(name)])
        if name == spec.label:
            columns.append(ColumnModel(name, "label", column_key(name), feature=False))
        elif name == spec.group and (col is None or col.kind in ("categorical", "ignore")):
            columns.append(_group_model(name, rng, feature=col is not None and col.kind == "categorical"))
        elif col is None:
            columns.append(ColumnModel(name, "filler", column_key(name), feature=False))
        else:
            columns.append(_column_model(col, rng, spec))
    rng = np.random.default_rng([seed, 0])
    interacting = [
        c.name for c in columns if c.feature and c.kind in ("categorical", "group") and c.vocab <= INTERACTION_VOCAB
    ]
    candidates = list(combinations(interacting, 2))
    chosen = rng.choice(len(candidates), min(NUM_PAIRS, len(candidates)), replace=False) if candidates else []
    pairs = [candidates[i] for i in sorted(chosen)]
    numeric = [c for c in columns if c.kind == "numeric"]
    categorical = [c for c in columns if c.feature and c.kind in ("categorical", "group")]
    crosses = []
    if numeric and categorical:
        for _ in range(NUM_CROSSES):
            num, cat = numeric[rng.integers(len(numeric))], categorical[rng.integers(len(categorical))]
            crosses.append((num.name, cat.name, rng.standard_normal(len(cat.main)) * CROSS_SCALE))
    model = TableModel(spec, columns, 0.0, pairs, crosses)
    model.bias = calibrated_bias(_draw(model, seed, 1, 0, CALIBRATION_ROWS, 0, "shuffled")["logit"], ctr)
    return model


def _vocab_effects(col: ColumnModel, rng: np.random.Generator, scale: float) -> None:
    slots = min(col.vocab, TABLE_SLOTS)
    col.main = rng.standard_normal(slots) * scale
    col.missing_effect = float(rng.standard_normal() * 0.3)
    col.factors = rng.standard_normal((slots, FACTOR_DIM)) * FACTOR_SCALE


def _group_model(name: str, rng: np.random.Generator, feature: bool) -> ColumnModel:
    col = ColumnModel(name, "group", column_key(name), feature=feature, vocab=GROUP_VOCAB, zipf=GROUP_ZIPF)
    _vocab_effects(col, rng, GROUP_SCALE)
    return col


def _missing_rate(rng: np.random.Generator) -> float:
    return 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, MISSING_MAX))


def _vocab_size(rng: np.random.Generator) -> int:
    return int(round(np.exp(rng.uniform(np.log(VOCAB_RANGE[0]), np.log(VOCAB_RANGE[1])))))


def _column_model(spec: ColumnSpec, rng: np.random.Generator, table: TableSpec) -> ColumnModel:
    col = ColumnModel(spec.name, spec.kind, column_key(spec.name))
    if spec.kind == "categorical":
        col.missing_rate, col.vocab, col.zipf = _missing_rate(rng), _vocab_size(rng), float(rng.uniform(*ZIPF_RANGE))
        _vocab_effects(col, rng, float(rng.uniform(*MAIN_SCALE)))
    elif spec.kind == "numeric":
        col.missing_rate, col.integer = _missing_rate(rng), bool(rng.random() < 0.5)
        col.mu, col.sigma = float(rng.uniform(0.0, 4.0)), float(rng.uniform(0.8, 1.8))
        col.amp = float(rng.uniform(-NUMERIC_AMP, NUMERIC_AMP))
        col.center = float(np.log1p(np.exp(col.mu)) + rng.uniform(-0.5, 0.5))
        col.width = float(rng.uniform(0.5, 1.2))
        col.missing_effect = float(rng.standard_normal() * 0.2)
    elif spec.kind == "datetime":
        col.format = spec.format
        col.hour_amp, col.hour_peak = float(rng.uniform(*HOUR_AMP)), float(rng.uniform(0.0, 24.0))
        col.weekend = float(rng.standard_normal() * WEEKEND_SCALE)
    elif spec.kind == "multi_valued":
        col.max_len = int(getattr(spec, "max_len", 0) or DEFAULT_MAX_LEN)
        col.separator = str(getattr(spec, "separator", "") or DEFAULT_SEPARATOR)
        if table.format == "csv" and table.delimiter in col.separator:
            raise ValueError(f"column {spec.name!r}: separator {col.separator!r} contains the delimiter")
        col.vocab, col.zipf = _vocab_size(rng), float(rng.uniform(*ZIPF_RANGE))
        _vocab_effects(col, rng, MULTI_SCALE)
    elif spec.kind != "ignore":
        raise ValueError(f"column {spec.name!r}: cannot generate kind {spec.kind!r}")
    return col


# ------------------------------------------------------------------------------------------------------- drawing


def _zipf_ranks(rng: np.random.Generator, shape: int | tuple[int, ...], vocab: int, s: float) -> np.ndarray:
    """0-based ranks of a power law with exponent ``s`` > 1 over ``vocab`` values (inverse CDF on [1, V + 1))."""
    expo = 1.0 - s
    span = (vocab + 1) ** expo - 1
    ranks = np.floor((1 + rng.random(shape) * span) ** (1 / expo)).astype(np.int64) - 1
    return np.clip(ranks, 0, vocab - 1)


def _draw(model: TableModel, seed: int, tag: int, index: int, n: int, rows: int, time_order: str) -> dict:
    """``n`` rows from ``index``'s streams: each column's draws (keyed ``(name, what)``), the event ``time``
    (seconds), the global ``row`` index and the planted ``logit``. Sorted times spread ``rows`` rows over
    ``DAYS`` days in row order."""
    row = index * n + np.arange(n, dtype=np.int64)
    u = np.random.default_rng([seed, tag, index, TIME_KEY]).random(n)
    position = (row + u) / rows if time_order == "sorted" else u
    out: dict = {"row": row, "time": START_TIME + np.floor(position * DAYS * 86400).astype(np.int64)}
    for c in model.columns:
        rng = np.random.default_rng([seed, tag, index, c.key])
        if c.kind == "numeric":
            out[c.name, "missing"] = rng.random(n) < c.missing_rate
            x = np.exp(np.minimum(c.mu + c.sigma * rng.standard_normal(n), 25.0))
            out[c.name, "value"] = np.floor(x) if c.integer else np.round(x, 2)
        elif c.kind in ("categorical", "group"):
            out[c.name, "missing"] = rng.random(n) < c.missing_rate
            out[c.name, "rank"] = _zipf_ranks(rng, n, c.vocab, c.zipf)
        elif c.kind == "multi_valued":
            out[c.name, "len"] = rng.integers(0, c.max_len + 1, n)
            out[c.name, "rank"] = _zipf_ranks(rng, (n, c.max_len), c.vocab, c.zipf)
    out["logit"] = planted_logit(model, out)
    return out


def planted_logit(model: TableModel, rows: dict) -> np.ndarray:
    """The planted logit of drawn rows (the keys :func:`_draw` writes)."""
    logit = np.full(len(rows["row"]), model.bias)
    hour = (rows["time"] // 3600) % 24
    weekend = (rows["time"] // 86400 + 3) % 7 >= 5  # 1970-01-01 was a Thursday (Monday = 0)
    for c in model.columns:
        if c.kind in ("categorical", "group"):
            slot = rows[c.name, "rank"] % len(c.main)
            logit += np.where(rows[c.name, "missing"], c.missing_effect, c.main[slot])
        elif c.kind == "numeric":
            x = np.log1p(rows[c.name, "value"])
            bump = c.amp * np.exp(-0.5 * ((x - c.center) / c.width) ** 2)
            logit += np.where(rows[c.name, "missing"], c.missing_effect, bump)
        elif c.kind == "datetime":
            logit += c.hour_amp * np.cos(2 * np.pi * (hour - c.hour_peak) / 24) + c.weekend * weekend
        elif c.kind == "multi_valued":
            length = rows[c.name, "len"]
            held = np.arange(c.max_len) < length[:, None]
            total = (c.main[rows[c.name, "rank"] % len(c.main)] * held).sum(axis=1)
            logit += np.where(length == 0, c.missing_effect, total / np.maximum(length, 1))
    for a, b in model.pairs:
        va, vb = (_vectors(model.column(name), rows) for name in (a, b))
        logit += (va * vb).sum(axis=1)
    for num, cat, slopes in model.crosses:
        present = ~rows[num, "missing"] & ~rows[cat, "missing"]
        slot = rows[cat, "rank"] % len(slopes)
        logit += present * np.log1p(rows[num, "value"]) * slopes[slot] / 4
    return logit


def _vectors(c: ColumnModel, rows: dict) -> np.ndarray:
    return c.factors[rows[c.name, "rank"] % len(c.factors)] * ~rows[c.name, "missing"][:, None]


def generate_rows(model: TableModel, seed: int, index: int, rows: int, time_order: str) -> dict:
    """Block ``index`` (rows ``[index * GEN_BLOCK, (index + 1) * GEN_BLOCK)``) with labels drawn from the model."""
    out = _draw(model, seed, 2, index, GEN_BLOCK, rows, time_order)
    u = np.random.default_rng([seed, 3, index]).random(GEN_BLOCK)
    out["label"] = (u < click_probability(out["logit"])).astype(np.int8)
    return out


def iterate_table_rows(
    model: TableModel, rows: int, seed: int, chunk_rows: int = 1 << 17, time_order: str = "sorted"
) -> Iterator[dict]:
    """Yield the first ``rows`` rows for ``seed`` in chunks of ``chunk_rows`` (the last one shorter)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    pending: list[dict] = []
    have = done = index = 0
    while done < rows:
        want = min(chunk_rows, rows - done)
        while have < want:
            pending.append(generate_rows(model, seed, index, rows, time_order))
            index += 1
            have += GEN_BLOCK
        merged = pending[0] if len(pending) == 1 else {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        yield {k: v[:want] for k, v in merged.items()}
        pending = [{k: v[want:] for k, v in merged.items()}] if have > want else []
        have -= want
        done += want


# ---------------------------------------------------------------------------------------------------- formatting


def value_text(key: int, ranks: np.ndarray) -> np.ndarray:
    """(N,) bytes ``S8``: the 8-hex-character text of value ``ranks`` of the column with ``key`` (any seed)."""
    salt = splitmix64(HASH_SALT + np.uint64(key))
    hashes = (splitmix64(np.asarray(ranks).astype(np.uint64) ^ salt) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    nibbles = (hashes[..., None] >> np.arange(28, -4, -4, dtype=np.uint32)) & np.uint32(0xF)
    return _HEX[nibbles].reshape(-1).view("S8").reshape(hashes.shape)


def _strings(texts: np.ndarray, width: int, valid: np.ndarray) -> pa.Array:
    """A string array of fixed-width ASCII ``texts`` (N,), null where not ``valid``."""
    offsets = np.zeros(len(valid) + 1, dtype=np.int32)
    np.cumsum(valid * width, out=offsets[1:])
    data = np.ascontiguousarray(texts[valid]).tobytes()
    validity = pa.array(valid).buffers()[1] if not valid.all() else None  # Arrow's validity bits: 1 = present
    return pa.StringArray.from_buffers(len(valid), pa.py_buffer(offsets), pa.py_buffer(data), validity)


def format_rows(model: TableModel, rows: dict) -> pa.Table:
    """The rows as a table of the file's columns (types fixed whatever the rows, so chunks share a schema)."""
    spec = model.spec
    n = len(rows["row"])
    columns = {}
    for c in model.columns:
        if c.kind == "label":
            arr = pc.if_else(pa.array(rows["label"].astype(bool)), spec.positive[0], spec.negative[0])
        elif c.kind == "numeric":
            value = rows[c.name, "value"]
            arr = pa.array(value.astype(np.int64) if c.integer else value, mask=rows[c.name, "missing"])
        elif c.kind in ("categorical", "group"):
            arr = _strings(value_text(c.key, rows[c.name, "rank"]), 8, ~rows[c.name, "missing"])
        elif c.kind == "datetime":
            seconds = pa.array(rows["time"], pa.int64())
            arr = seconds if c.format == "unix" else pc.strftime(seconds.cast(pa.timestamp("s")), format=c.format)
        elif c.kind == "multi_valued":
            length = rows[c.name, "len"]
            held = np.arange(c.max_len) < length[:, None]
            values = _strings(value_text(c.key, rows[c.name, "rank"][held]), 8, np.ones(int(held.sum()), bool))
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(length, out=offsets[1:])
            lists = pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(length == 0))
            arr = pc.binary_join(lists, c.separator)
        elif c.kind == "ignore":
            arr = pa.array(rows["row"] + 1, pa.int64())
        else:
            arr = pa.nulls(n, pa.string())
        columns[c.name] = arr
    return pa.table(columns)


def _header_line(names: list[str], delimiter: str) -> bytes:
    """A CSV header, each name quoted only when it holds the delimiter, a quote or a line break."""

    def quote(name: str) -> str:
        if any(ch in name for ch in (delimiter, '"', "\n", "\r")):
            return '"' + name.replace('"', '""') + '"'
        return name

    return (delimiter.join(quote(n) for n in names) + "\n").encode()


# ------------------------------------------------------------------------------------------------------- writing


def generate_table(
    path: str | Path,
    spec: TableSpec,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 1 << 17,
    time_order: str = "sorted",
    ctr: float = BASE_CTR,
    progress: bool = False,
    oracle: bool = True,
) -> Path:
    """Write ``rows`` synthetic rows of the declared table ``spec`` to ``path``.

    CSV (the spec's delimiter, a header line when ``spec.header``; gzip when ``path`` ends in ``.gz``) or Parquet
    (row groups of ``PARQUET_ROW_GROUP`` rows) by ``spec.format``. Memory is bounded by ``chunk_rows`` (plus 9
    bytes per row for the oracle sidecar); the file is written to a temporary name and renamed at the end.

    Args:
        path: output file.
        spec: the declared table (e.g. ``ctr.data.prepare.table_spec(cfg.data)``).
        rows: number of rows.
        seed: the planted model and all draws depend only on it (and on the columns' names).
        chunk_rows: rows formatted and written at once; does not change the output.
        time_order: ``sorted`` (event times increase with the row) or ``shuffled`` (drawn independently).
        ctr: mean planted click probability.
        progress: show a tqdm bar on stderr.
        oracle: also write each row's label and planted click probability to
            :func:`ctr.data.generate.oracle_path` ``(path)`` (an old sidecar is removed first).

    Returns:
        ``path`` as a Path.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if time_order not in TIME_ORDERS:
        raise ValueError(f"time_order must be one of {', '.join(TIME_ORDERS)}, got {time_order!r}")
    if spec.format not in ("csv", "parquet"):
        raise ValueError(f"spec.format {spec.format!r}: generate_table writes csv or parquet")
    model = build_table_model(spec, seed, ctr)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    from tqdm import tqdm

    bar = tqdm(total=rows, unit="rows", desc=f"generate {path.name}", disable=not progress, file=sys.stderr)
    oracle_path(path).unlink(missing_ok=True)
    labels, probs = [], []
    chunks = iterate_table_rows(model, rows, seed, chunk_rows, time_order)

    def tables() -> Iterator[pa.Table]:
        for chunk in chunks:
            if oracle:
                labels.append(chunk["label"])
                probs.append(click_probability(chunk["logit"]))
            bar.update(len(chunk["label"]))
            yield format_rows(model, chunk)

    try:
        empty = format_rows(model, next(iterate_table_rows(model, 1, seed, 1, time_order))).slice(0, 0)
        if spec.format == "parquet":
            _write_parquet(tmp, empty.schema, tables())
        else:
            _write_csv(tmp, path.suffix == ".gz", spec, empty.schema, tables())
        os.replace(tmp, path)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    if oracle:
        write_oracle(
            path,
            np.concatenate(labels or [np.zeros(0, np.int8)]),
            np.concatenate(probs or [np.zeros(0)]),
            first_line=2 if spec.format == "csv" and spec.header else 1,
            layout=oracle_layout(spec),
        )
    return path


def oracle_layout(spec: TableSpec) -> dict:
    """How :func:`ctr.data.generate.read_oracle` reads the labels of a generated table back (its sidecar's
    ``layout``)."""
    return {
        "format": spec.format,
        "delimiter": spec.delimiter,
        "header": spec.header,
        "column_names": list(spec.column_names),
        "label": spec.label,
        "positive": list(spec.positive),
        "negative": list(spec.negative),
    }


def _write_csv(tmp: Path, gzip: bool, spec: TableSpec, schema: pa.Schema, tables: Iterator[pa.Table]) -> None:
    options = pacsv.WriteOptions(include_header=False, delimiter=spec.delimiter, quoting_style="none")
    with pa.CompressedOutputStream(str(tmp), "gzip") if gzip else pa.OSFile(str(tmp), "wb") as sink:
        if spec.header:
            sink.write(_header_line(schema.names, spec.delimiter))
        writer = pacsv.CSVWriter(sink, schema, write_options=options)
        for table in tables:
            writer.write_table(table)
        writer.close()


def _write_parquet(tmp: Path, schema: pa.Schema, tables: Iterator[pa.Table]) -> None:
    with pq.ParquetWriter(str(tmp), schema) as writer:
        pending: list[pa.Table] = []
        have = 0
        for table in tables:
            pending.append(table)
            have += len(table)
            while have >= PARQUET_ROW_GROUP:
                merged = pa.concat_tables(pending).combine_chunks()
                writer.write_table(merged.slice(0, PARQUET_ROW_GROUP), row_group_size=PARQUET_ROW_GROUP)
                pending, have = [merged.slice(PARQUET_ROW_GROUP)], have - PARQUET_ROW_GROUP
        if have:
            writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=PARQUET_ROW_GROUP)


# ----------------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    from ctr.config import load_config
    from ctr.data.prepare import table_spec

    parser = argparse.ArgumentParser(description="Write synthetic rows of a declared table (CSV or Parquet).")
    parser.add_argument("out", help="output file (.gz for gzip CSV)")
    parser.add_argument("--dataset", help="a dataset preset (configs/datasets/<name>.yaml)")
    parser.add_argument("--config", action="append", default=[], help="YAML file with a data: block (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--chunk-rows", type=int, default=1 << 17)
    parser.add_argument("--time-order", choices=TIME_ORDERS, default="sorted")
    parser.add_argument("--ctr", type=float, default=BASE_CTR, help="mean click probability")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-oracle", action="store_true", help="no sidecar with the planted click probabilities")
    args = parser.parse_args(argv)
    overrides = ([f"data.dataset={args.dataset}"] if args.dataset else []) + args.set
    spec = table_spec(load_config(args.config, overrides).data)
    if spec is None:
        parser.error("the data format is criteo: use python -m ctr.data.generate")
    generate_table(
        args.out,
        spec,
        args.rows,
        args.seed,
        args.chunk_rows,
        args.time_order,
        args.ctr,
        progress=not args.quiet,
        oracle=not args.no_oracle,
    )


if __name__ == "__main__":
    main()
