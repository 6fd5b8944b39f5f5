"""Declared tabular click logs: headered CSV/TSV (plain or ``.gz``) and Parquet, any columns.

A dataset is declared, not coded: ``data.format``, ``data.label``, ``data.columns`` (see ``configs/base.yaml`` and
the presets in ``configs/datasets/``) say how to read each column. :func:`parse_table_spec` checks the declaration
once; :func:`read_table` streams a file's good rows as :class:`ctr.data.criteo.RawBatch` es, the same rows the
Criteo reader yields, so preparation, encoders and the cache are shared:

* ``numeric`` columns become rows of ``RawBatch.ints`` (float64 values, 0 where missing, plus the missing flags);
* ``categorical`` columns and the parts derived from ``datetime`` columns (``<column>_hour``, ``_weekday``,
  ``_weekend``) become rows of ``RawBatch.cats`` (:class:`KeyCodec` keys of their text, 0 where empty);
* ``ignore`` columns are not read.

Numeric columns come first in the model's field order, then categorical ones, each in declaration order.

Bad input (a wrong column count, a label value that is not declared, a non-number in a numeric column, an
unparseable timestamp, a header without a declared column) raises :class:`DataError` naming the file, the line
(CSV) or row (Parquet) and the column, or with ``on_bad_rows="skip"`` is counted in the :class:`BadRowReport`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctr.data.criteo import (
    BadRowReport,
    KeyCodec,
    RawBatch,
    _column_count_reason,
    _InvalidRows,
    _line_numbers,
    _LineState,
    _report,
    binary_buffers,
    format_problem,
    prefetch,
    reader_args,
)
from ctr.data.read_failures import READ_FAILURES, SPANNING_REASON, csv_read_error, read_error
from ctr.errors import DataError, printable, quoted
from ctr.types import name_problem

FORMATS = ("criteo", "csv", "parquet")
KINDS = ("numeric", "categorical", "multi_valued", "datetime", "ignore")
POOLINGS = ("mean", "sum")
NUMERIC_TRANSFORMS = ("log2_bucket", "log_standard", "quantile_bucket", "minmax", "none")
DATETIME_PARTS = ("hour", "weekday", "weekend")
MIN_BATCH_ROWS = 1 << 16
# parsed blocks the parser may run ahead: more than one coalesced batch (MIN_BATCH_ROWS rows, several blocks) so
# that it keeps parsing while the caller converts a batch, instead of stalling every batch
PARSE_AHEAD = 16


@dataclass(frozen=True)
class ColumnSpec:
    """How one declared column is read and encoded.

    Attributes:
        name: the column's name in the file.
        kind: ``numeric``, ``categorical``, ``datetime`` or ``ignore``.
        transform: numeric only: one of :data:`NUMERIC_TRANSFORMS`.
        min_count: numeric ``log2_bucket`` and categorical vocabularies: values seen fewer times in train share
            the out-of-vocabulary id.
        buckets: numeric ``quantile_bucket``: the number of buckets; categorical: hash values into this many
            buckets instead of a vocabulary (0 = vocabulary).
        format: datetime only: a ``strptime`` format (``%y%m%d%H`` for Avazu's ``hour``) or ``unix`` (seconds).
        derive: datetime only: the parts to derive, each a categorical field ``<name>_<part>``.
        separator: multi_valued only: the string between a cell's values (``^`` by default).
        max_len: multi_valued only: the most values a cell may hold.
        truncate: multi_valued only: keep a longer cell's first ``max_len`` values instead of rejecting the row.
        pooling: multi_valued only: ``mean`` or ``sum`` of the values' embeddings, one field embedding.
    """

    name: str
    kind: str
    transform: str = ""
    min_count: int = 0
    buckets: int = 0
    format: str = ""
    derive: tuple[str, ...] = ()
    separator: str = "^"
    max_len: int = 0
    truncate: bool = False
    pooling: str = "mean"


@dataclass(frozen=True)
class TableSpec:
    """A declared table: file format, label and columns (see :func:`parse_table_spec`)."""

    format: str
    delimiter: str
    header: bool
    column_names: tuple[str, ...]
    label: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    columns: tuple[ColumnSpec, ...]
    extra_columns: str
    group: str | None = None
    time_column: str | None = None
    weight: str | None = None

    @property
    def numeric(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[ColumnSpec]:
        """Categorical columns and datetime columns (each of those gives one field per derived part)."""
        return [c for c in self.columns if c.kind in ("categorical", "datetime")]

    @property
    def numeric_names(self) -> list[str]:
        return [c.name for c in self.numeric]

    @property
    def categorical_names(self) -> list[str]:
        """Field names in model order: a datetime column contributes ``<name>_<part>`` per derived part."""
        out = []
        for c in self.categorical:
            out += [f"{c.name}_{p}" for p in c.derive] if c.kind == "datetime" else [c.name]
        return out

    @property
    def multi(self) -> list[ColumnSpec]:
        """Multi-valued columns, each one field after the categorical ones."""
        return [c for c in self.columns if c.kind == "multi_valued"]

    @property
    def read_columns(self) -> list[str]:
        """Columns read from the file: the label, the declared non-ignored ones, the group column."""
        names = [self.label] + [c.name for c in self.columns if c.kind != "ignore"]
        extra = [c for c in (self.group, self.weight) if c and c not in names]
        return names + list(dict.fromkeys(extra))

    def to_dict(self) -> dict[str, Any]:
        """The declaration as saved in ``schema.json`` (and hashed into the cache key)."""
        return {
            "format": self.format,
            "delimiter": self.delimiter,
            "header": self.header,
            "column_names": list(self.column_names),
            "label": {"name": self.label, "positive": list(self.positive), "negative": list(self.negative)},
            "columns": {c.name: _column_dict(c) for c in self.columns},
            "extra_columns": self.extra_columns,
            "group": self.group,
            "split_by_time": self.time_column,
            "weight": self.weight,
        }


def _column_dict(c: ColumnSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": c.kind}
    if c.kind == "numeric":
        d.update(transform=c.transform, min_count=c.min_count, buckets=c.buckets)
    elif c.kind == "categorical":
        d.update(min_count=c.min_count, buckets=c.buckets)
    elif c.kind == "datetime":
        d.update(format=c.format, derive=list(c.derive), min_count=c.min_count)
    elif c.kind == "multi_valued":
        d.update(
            separator=c.separator,
            max_len=c.max_len,
            truncate=c.truncate,
            pooling=c.pooling,
            min_count=c.min_count,
            buckets=c.buckets,
        )
    return d


def parse_table_spec(
    data: Any,
    *,
    min_count: int,
    numeric_transform: str,
    quantile_buckets: int,
) -> TableSpec:
    """Check a ``data:`` section's table declaration (``format``, ``label``, ``columns`` ...).

    Args:
        data: the config's DataConfig (or the same keys as a saved mapping).
        min_count, numeric_transform, quantile_buckets: the defaults of columns that do not set their own.

    Raises:
        DataError: an unknown kind, transform, option or datetime part, a label without values, no columns.
    """
    get = data.get if isinstance(data, dict) else lambda k, d=None: getattr(data, k, d)
    fmt = get("format")
    if fmt not in ("csv", "parquet"):
        raise DataError(f"data.format {fmt!r} has no column declaration; use csv or parquet")
    label = get("label") or {}
    if isinstance(label, str):
        label = {"name": label}
    if not isinstance(label, dict) or not isinstance(label.get("name"), str):
        raise DataError(f"data.label must be a column name or {{name, positive, negative}}, got {label!r}")
    unknown = set(label) - {"name", "positive", "negative"}
    if unknown:
        raise DataError(f"data.label: unknown key {sorted(unknown)[0]!r}; valid: name, positive, negative")
    positive = tuple(str(v) for v in label.get("positive", ["1"]))
    negative = tuple(str(v) for v in label.get("negative", ["0"]))
    if not positive or not negative or set(positive) & set(negative):
        raise DataError(
            f"data.label: positive {list(positive)} and negative {list(negative)} must be disjoint, non-empty"
        )
    raw_columns = get("columns") or {}
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise DataError("data.columns must map each column name to its kind (numeric, categorical, datetime, ignore)")
    columns = tuple(
        _parse_column(name, value, min_count, numeric_transform, quantile_buckets)
        for name, value in raw_columns.items()
    )
    if label["name"] in raw_columns:
        raise DataError(f"data.columns: {label['name']!r} is the label column; do not declare it as a feature")
    if not any(c.kind != "ignore" for c in columns):
        raise DataError("data.columns: every column is ignored; declare at least one feature")
    extra = get("extra_columns", "error")
    if extra not in ("error", "ignore"):
        raise DataError(f"data.extra_columns {extra!r} is not one of: error, ignore")
    names = tuple(get("column_names") or ())
    header = bool(get("header", True))
    if fmt == "csv" and not header and not names:
        raise DataError("data.header is false: list the file's columns in order in data.column_names")
    delimiter = get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"data.delimiter must be one character, got {delimiter!r}")
    group = get("group")
    if group is not None and (not isinstance(group, str) or group == label["name"]):
        raise DataError(f"data.group must name a column other than the label, got {group!r}")
    time = get("split_by_time")
    kinds = {c.name: c.kind for c in columns}
    if time is not None and kinds.get(time) not in ("datetime", "numeric"):
        raise DataError(f"data.split_by_time {time!r} must name a datetime or numeric column of data.columns")
    weight = get("weight")
    if weight is not None and (not isinstance(weight, str) or weight == label["name"]):
        raise DataError(f"data.weight must name a column other than the label, got {weight!r}")
    return TableSpec(
        fmt, delimiter, header, names, label["name"], positive, negative, columns, extra, group, time, weight
    )


def _parse_column(name: str, value: Any, min_count: int, transform: str, buckets: int) -> ColumnSpec:
    where = f"data.columns.{name}"
    opts = {"kind": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if opts is None or opts.get("kind") not in KINDS:
        raise DataError(f"{where}: expected a kind ({', '.join(KINDS)}) or a mapping with 'kind', got {value!r}")
    kind = opts.pop("kind")
    if kind != "ignore" and name_problem(name) is not None:  # the column becomes a field of the same name
        raise DataError(f"data.columns: column {quoted(str(name))}: {name_problem(name)}; declare it as ignore")
    valid = {
        "numeric": {"transform", "min_count", "buckets"},
        "categorical": {"min_count", "buckets"},
        "datetime": {"format", "derive", "min_count"},
        "multi_valued": {"separator", "max_len", "truncate", "pooling", "min_count", "buckets"},
        "ignore": set(),
    }[kind]
    for key in opts:
        if key not in valid:
            raise DataError(
                f"{where}: unknown option {key!r} for kind {kind}; valid: {', '.join(sorted(valid)) or 'none'}"
            )
    spec = ColumnSpec(name, kind, min_count=int(opts.get("min_count", min_count)))
    if kind == "numeric":
        t = opts.get("transform", transform)
        if t not in NUMERIC_TRANSFORMS:
            raise DataError(f"{where}: transform {t!r} is not one of: {', '.join(NUMERIC_TRANSFORMS)}")
        spec = ColumnSpec(name, kind, t, spec.min_count, int(opts.get("buckets", buckets)))
    elif kind == "categorical":
        spec = ColumnSpec(name, kind, "", spec.min_count, int(opts.get("buckets", 0)))
        if spec.buckets < 0:
            raise DataError(f"{where}: buckets must be >= 0 (0 = vocabulary), got {spec.buckets}")
    elif kind == "datetime":
        fmt = opts.get("format")
        derive = tuple(opts.get("derive", DATETIME_PARTS))
        if not isinstance(fmt, str) or not fmt:
            raise DataError(f"{where}: a datetime column needs a format (a strptime format such as %y%m%d%H, or unix)")
        bad = [p for p in derive if p not in DATETIME_PARTS]
        if bad or not derive:
            raise DataError(f"{where}: derive {list(derive)} must be a non-empty subset of {', '.join(DATETIME_PARTS)}")
        spec = ColumnSpec(name, kind, "", spec.min_count, 0, fmt, derive)
    elif kind == "multi_valued":
        sep, max_len, pooling = opts.get("separator", "^"), opts.get("max_len", 20), opts.get("pooling", "mean")
        if not isinstance(sep, str) or not sep:
            raise DataError(f"{where}: separator must be a non-empty string, got {sep!r}")
        if not isinstance(max_len, int) or max_len < 1:
            raise DataError(f"{where}: max_len must be an integer >= 1, got {max_len!r}")
        if pooling not in POOLINGS:
            raise DataError(f"{where}: pooling {pooling!r} is not one of: {', '.join(POOLINGS)}")
        n_buckets = int(opts.get("buckets", 0))
        truncate = bool(opts.get("truncate", False))
        spec = ColumnSpec(name, kind, "", spec.min_count, n_buckets, "", (), sep, max_len, truncate, pooling)
    return spec


# ------------------------------------------------------------------------------------------------------- reading


def read_table(
    path: str | Path,
    spec: TableSpec,
    block_size: int = 1 << 20,
    on_bad_rows: str = "error",
    report: BadRowReport | None = None,
    codec: KeyCodec | None = None,
    min_rows: int = MIN_BATCH_ROWS,
    require_label: bool = True,
    carry: tuple[str, ...] = (),
) -> Iterator[RawBatch]:
    """Stream the good rows of a declared CSV/TSV or Parquet file as RawBatches (see the module docstring).

    ``RawBatch.lines`` holds each row's 1-based line in a CSV file (the header is line 1) or its 1-based row
    in a Parquet file; they are exact across blocks and after skipped rows.

    ``require_label=False`` reads rows to score: the label, group and weight columns may be absent (a CSV file
    without a header then has one column fewer than ``data.column_names``: no label); absent labels read as 0.
    ``carry`` names columns of the file kept as they are read in ``RawBatch.carry``.
    """
    path, report, codec = reader_args(path, on_bad_rows, report, codec)
    read = (block_size, on_bad_rows, report, codec, min_rows, require_label, tuple(carry))
    if spec.format == "parquet":
        return _read_parquet(path, spec, *read)
    return _read_csv(path, spec, *read)


def _check_columns(
    path: Path, spec: TableSpec, present: list[str], require_label: bool = True, carry: tuple[str, ...] = ()
) -> None:
    """Every declared column is in the file (the label, group and weight only with ``require_label``), and every
    ``carry`` column; undeclared ones are an error unless ``extra_columns: ignore``."""
    outcomes = [spec.label, spec.group, spec.weight] if require_label else []
    declared_names = [*outcomes, *(c.name for c in spec.columns)]
    twice = [c for c in [spec.label, spec.group, spec.weight, *(c.name for c in spec.columns)] if present.count(c) > 1]
    if twice:  # which of the columns of that name is meant cannot be told
        raise DataError(f"{path}: the header has {present.count(twice[0])} columns named {quoted(twice[0])}")
    missing = [c for c in declared_names if c and c not in present]
    unknown = [c for c in carry if c not in present]
    if unknown:
        raise DataError(f"{path}: no column {unknown[0]!r} to carry; the file has: {_shown_names(present)}")
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} (declared in data.columns/data.label); the file has: {_shown_names(present)}"
        )
    declared = {spec.label, spec.group, spec.weight, *(c.name for c in spec.columns)}
    extra = [c for c in present if c not in declared]
    if extra and spec.extra_columns == "error":
        raise DataError(
            f"{path}: columns not declared in data.columns: {_shown_names(extra)} "
            "(declare them, e.g. as ignore, or set data.extra_columns: ignore)"
        )


def _read_csv(
    path: Path,
    spec: TableSpec,
    block_size: int,
    on_bad_rows: str,
    report: BadRowReport,
    codec: KeyCodec,
    min_rows: int,
    require_label: bool = True,
    carry: tuple[str, ...] = (),
) -> Iterator[RawBatch]:
    names = list(spec.column_names) if spec.column_names else None
    parse_probe = pacsv.ParseOptions(delimiter=spec.delimiter, invalid_row_handler=lambda row: "skip")
    try:
        if names and not require_label and spec.label in names:  # rows to score: the first row's width decides
            auto = pacsv.ReadOptions(autogenerate_column_names=True, block_size=block_size, use_threads=False)
            width = len(pacsv.open_csv(str(path), read_options=auto, parse_options=parse_probe).schema.names)
            if width == len(names) - 1:
                names.remove(spec.label)
    except READ_FAILURES as e:
        raise read_error(path, e, 1, block_size) from None
    read = pacsv.ReadOptions(column_names=names, block_size=block_size, use_threads=False)
    present = names or _header_names(path, spec.delimiter, block_size)
    _check_columns(path, spec, present, require_label, carry)
    invalid = _InvalidRows()
    parse = pacsv.ParseOptions(delimiter=spec.delimiter, invalid_row_handler=invalid, ignore_empty_lines=False)
    # every column, the ones not used included: a line break in any of them means a quoted value ran over lines
    schema = pa.schema([(c, pa.binary()) for c in present])
    convert = pacsv.ConvertOptions(column_types=dict(zip(schema.names, schema.types)), strings_can_be_null=False)
    state = _LineState(next_line=2 if spec.header else 1)
    pending: list[pa.RecordBatch] = []
    rows = 0

    def flush(final: bool) -> RawBatch:
        table = pa.Table.from_batches(pending, schema=schema).combine_chunks()
        lines = _line_numbers(table.num_rows, invalid.lines, state)
        last = int(lines[-1]) if len(lines) else state.next_line - 1
        state.next_line = last + 1
        new_invalid = [ln for ln in invalid.lines[state.invalid_done :] if final or ln <= last]
        state.invalid_done += len(new_invalid)
        if final and new_invalid:
            state.next_line = max(state.next_line, new_invalid[-1] + 1)
        spanning = _first_spanning_row(table, lines, [ln for ln in new_invalid if ln in invalid.spanning])
        if spanning is not None:  # pyarrow counts rows, not lines: numbers after such a row are wrong, so stop there
            keep = lines < spanning[0]
            table, lines, new_invalid = table.filter(keep), lines[keep], [ln for ln in new_invalid if ln < spanning[0]]
        problems = [(ln, None, _column_count_reason(invalid, ln, str(len(present)))) for ln in new_invalid]
        out = _convert(path, table, lines, spec, codec, problems, on_bad_rows, report, "line", carry)
        if spanning is not None:  # not skippable: after an unterminated quote no line can be trusted
            raise DataError(format_problem(str(path), *spanning, SPANNING_REASON))
        return out

    try:  # opening parses the first block: the lines before a failure there come first too
        reader = pacsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
    except READ_FAILURES as e:
        if "Empty CSV file" in str(e):  # a header without a line end, and no rows
            return
        flush(final=False)  # the lines before the failure come first: a bad one is the file's first problem
        raise csv_read_error(path, e, state.next_line, block_size, spec.delimiter, present, on_bad_rows) from None
    if reader.schema.names != present:
        raise DataError(f"{path} line 1: cannot read the header line (a quoted name holding a line break?)")
    batches = prefetch(iter(reader), depth=PARSE_AHEAD)  # parse (GIL released) overlaps conversion
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except READ_FAILURES as e:
            flush(final=False)  # the lines before the failure come first: a bad one is the file's first problem
            raise csv_read_error(path, e, state.next_line, block_size, spec.delimiter, present, on_bad_rows) from None
        pending.append(batch)
        rows += batch.num_rows
        if rows >= min_rows:
            out = flush(final=False)
            pending, rows = [], 0
            if len(out):
                yield out
    out = flush(final=True)
    if len(out):
        yield out


def _shown_names(names: list[str]) -> str:
    """Column names of a file as a message lists them: escaped (:func:`ctr.errors.printable`), at most 20."""
    shown = ", ".join(printable(n, 40) for n in names[:20])
    return shown + (f", ... ({len(names)} columns)" if len(names) > 20 else "")


def _header_names(path: Path, delimiter: str, block_size: int) -> list[str]:
    """The column names of a CSV file's header line, parsed by pyarrow on their own: no data row is read yet, so a
    bad row is reported by the row reader, in line order, after the header has been checked."""
    try:
        with pa.input_stream(str(path), compression="detect") as f:
            head = f.read(block_size)
        end = _LINE_END.search(head)
        if end is None and len(head) == block_size:
            reason = f"the line is longer than data.block_size ({block_size} bytes); raise data.block_size"
            raise DataError(f"{path} line 1: {reason}")
        line = head if end is None else head[: end.start()]
        parse = pacsv.ParseOptions(delimiter=delimiter)
        return pacsv.read_csv(io.BytesIO(line + b"\n"), parse_options=parse).column_names
    except UnicodeDecodeError:
        raise DataError(f"{path} line 1: the header line is not UTF-8 text") from None
    except READ_FAILURES as e:
        raise read_error(path, e, 1, block_size) from None


_LINE_END = re.compile(rb"\r\n|\r|\n")
UNIX_RANGE = (-62135596800, 253402300799)  # unix seconds of the years 1 to 9999, the times a datetime can hold


def _first_spanning_row(table: pa.Table, lines: np.ndarray, spanning_invalid: list[int]) -> tuple[int, str] | None:
    """The line and column of the first row that runs over several lines, or None: a row of ``table`` (binary
    columns, one chunk each, no nulls; ``lines`` its (N,) line numbers) with a cell holding a line break, or a
    row of a wrong width in ``spanning_invalid`` (column ``""``: none). Only a quoted value holds a line break,
    and pyarrow reads an unterminated quote as a value running on to the end of the file, rows and all."""
    found = [(ln, "") for ln in spanning_invalid[:1]]
    for name, column in zip(table.column_names, table.columns):
        if not column.num_chunks or not len(column):
            continue
        offsets, data = binary_buffers(column.chunks[0])
        cut = data[offsets[0] : offsets[-1]]
        hits = np.flatnonzero((cut == 10) | (cut == 13))  # \n, \r
        if hits.size:
            row = int(np.searchsorted(offsets, offsets[0] + hits[0], side="right")) - 1
            found.append((int(lines[row]), name))
    return min(found, key=lambda f: f[0]) if found else None


def _read_parquet(
    path: Path,
    spec: TableSpec,
    block_size: int,
    on_bad_rows: str,
    report: BadRowReport,
    codec: KeyCodec,
    min_rows: int,
    require_label: bool = True,
    carry: tuple[str, ...] = (),
) -> Iterator[RawBatch]:
    try:
        file = pq.ParquetFile(path)
    except READ_FAILURES as e:
        raise DataError(f"{path}: cannot read as Parquet ({printable(str(e).splitlines()[0])})") from None
    present = file.schema_arrow.names
    _check_columns(path, spec, present, require_label, carry)
    wanted = [c for c in spec.read_columns if c in present]
    wanted += [c for c in carry if c not in wanted]
    types = dict(zip(present, file.schema_arrow.types))
    nested = [c for c in wanted if not _readable(types[c])]
    if nested:
        raise DataError(f"{path}: column {quoted(nested[0])} holds {types[nested[0]]}, not numbers, text or times")
    start = 1
    batches = file.iter_batches(batch_size=min_rows, columns=wanted, use_threads=False)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except READ_FAILURES as e:  # a corrupt page or row group
            message = printable(str(e).splitlines()[0])
            raise DataError(f"{path}: cannot read as Parquet from row {start} on ({message})") from None
        table = pa.Table.from_batches([batch]).combine_chunks()
        lines = start + np.arange(table.num_rows, dtype=np.int64)
        start += table.num_rows
        out = _convert(path, table, lines, spec, codec, [], on_bad_rows, report, "row", carry)
        if len(out):
            yield out


# ---------------------------------------------------------------------------------------------------- conversion


def _convert(
    path: Path,
    table: pa.Table,
    lines: np.ndarray,
    spec: TableSpec,
    codec: KeyCodec,
    problems: list[tuple[int, str | None, str]],
    on_bad_rows: str,
    report: BadRowReport,
    unit: str,
    carry: tuple[str, ...] = (),
) -> RawBatch:
    """Label, numbers and keys of a block of rows; every bad cell is a problem of its line and column. Rows to
    score may lack the label (read as the first negative value), group and weight columns."""
    n = table.num_rows
    bad = np.zeros(n, dtype=bool)
    if spec.label not in table.column_names:
        table = table.append_column(spec.label, pa.repeat(pa.scalar(spec.negative[0].encode(), pa.binary()), n))

    def flag(rows: np.ndarray, column: str, reason: Any) -> None:
        for i in np.flatnonzero(rows & ~bad):
            problems.append((int(lines[i]), column, reason(i)))
        bad[rows] = True

    label = _as_bytes(table.column(spec.label))
    pos = pc.is_in(label, value_set=pa.array([v.encode() for v in spec.positive], pa.binary()))
    neg = pc.is_in(label, value_set=pa.array([v.encode() for v in spec.negative], pa.binary()))
    pos, neg = pos.to_numpy(zero_copy_only=False), neg.to_numpy(zero_copy_only=False)
    flag(
        ~(pos | neg),
        spec.label,
        lambda i: f"label {_cell(label, i)} is not one of {list(spec.positive) + list(spec.negative)}",
    )
    ints = np.zeros((len(spec.numeric), n), dtype=np.float64)
    missing = np.zeros((len(spec.numeric), n), dtype=bool)
    for j, col in enumerate(spec.numeric):
        arr = table.column(col.name)
        ints[j], missing[j], not_number = _numbers(arr)
        flag(not_number, col.name, lambda i, arr=arr: _not_a_number(arr, i))
    time = None
    if spec.time_column is not None:
        time_spec = next(c for c in spec.columns if c.name == spec.time_column)
        arr = table.column(time_spec.name)
        if time_spec.kind == "numeric":
            time, no_time, unparsed = _numbers(arr)
        else:
            time, no_time, unparsed = _seconds(arr, time_spec)
        flag(no_time & ~unparsed, time_spec.name, lambda i: "no time value (data.split_by_time needs one per row)")
    cats = np.zeros((len(spec.categorical_names), n), dtype=np.int64)
    j = 0
    for col in spec.categorical:
        arr = table.column(col.name)
        if col.kind == "categorical":
            cats[j] = codec.encode(_as_bytes(arr))
            j += 1
            continue
        parts, unparsed = _datetime_parts(arr, col)
        flag(unparsed, col.name, lambda i, arr=arr, col=col: f"{_cell(arr, i)} does not match format {col.format!r}")
        for part in parts:
            cats[j] = codec.encode(part.cast(pa.binary()))
            j += 1
    multi = []
    for col in spec.multi:
        arr = table.column(col.name)
        keys, too_long = _multi_keys(_as_bytes(arr), col, codec)
        flag(too_long, col.name, lambda i, col=col: f"more than max_len={col.max_len} values")
        multi.append(keys)
    group = None if spec.group not in table.column_names else codec.encode(_as_bytes(table.column(spec.group)))
    weight = None
    if spec.weight in table.column_names:
        weight, no_weight, not_number = _numbers(table.column(spec.weight))
        flag(not_number, spec.weight, lambda i: f"weight {_not_a_number(table.column(spec.weight), i)}")
        flag(no_weight | (weight < 0), spec.weight, lambda i: "a weight must be a number >= 0")
    _report(path, problems, on_bad_rows, report, unit)
    kept = table.select(list(carry)) if carry else None
    batch = RawBatch(lines, pos.astype(np.int8), ints, missing, cats, group, time, multi, weight, kept)
    return batch.take(~bad) if bad.any() else batch


def _multi_keys(text: pa.Array, col: ColumnSpec, codec: KeyCodec) -> tuple[np.ndarray, np.ndarray]:
    """(N, max_len) int64 keys of each cell's values in order (0 after the last value and for empty values), and
    the rows with more than ``max_len`` values (kept truncated when ``col.truncate``)."""
    lists = pc.split_pattern(text, col.separator)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    empty = pc.equal(pc.binary_length(text), 0).to_numpy(zero_copy_only=False)
    counts[empty] = 0  # an empty cell holds no value (split gives one empty string)
    too_long = np.zeros(len(counts), dtype=bool) if col.truncate else counts > col.max_len
    values = pc.list_flatten(lists)
    keys = codec.encode(values.cast(pa.binary()))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(np.arange(len(counts)), counts)
    flat_counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.ones(len(keys), dtype=bool)
    if empty.any():  # drop the empty string of each empty cell from the flattened values
        first = np.cumsum(flat_counts) - flat_counts
        keep[first[empty]] = False
    keys = keys[keep]
    position = np.arange(len(keys)) - starts
    out = np.zeros((len(counts), col.max_len), dtype=np.int64)
    inside = position < col.max_len
    out[rows[inside], position[inside]] = keys[inside]
    return out, too_long


def _as_bytes(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as non-null binary values (CSV cells as read, other types through their text; null -> empty)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if _is_bytes(arr.type):  # binary of any width, bytes kept as they are (UTF-8 or not)
        arr = arr.cast(pa.binary())
    elif not (pa.types.is_binary(arr.type) or pa.types.is_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(b"" if pa.types.is_binary(arr.type) else "", arr.type))
    return arr.cast(pa.binary())


def _is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_large_string(t)


def _readable(t: pa.DataType) -> bool:
    """Whether a Parquet column of type ``t`` holds scalars that a declared column can read (through their text
    when not numbers or strings); lists, structs and maps do not."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    scalar = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal, pa.types.is_null)
    textual = (pa.types.is_string, pa.types.is_binary, pa.types.is_temporal, _is_bytes)
    return any(test(t) for test in (*scalar, *textual))


def _as_text(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as non-null strings; a cell whose bytes are not UTF-8 gets U+FFFD for them (so it parses as no
    number or time: such a cell is reported, never read as something else)."""
    raw = _as_bytes(arr)
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([v.decode("utf-8", "replace") for v in raw.to_pylist()], pa.string())


def _cell(arr: pa.ChunkedArray | pa.Array, i: int) -> str:
    """Cell ``i`` as a message shows it (:func:`ctr.errors.quoted`)."""
    return quoted(_as_bytes(arr)[i].as_py())


# what a numeric cell of text may hold: a decimal number, optionally signed, with optional fraction and exponent,
# spaces or tabs around it allowed (pyarrow's own cast takes no spaces, pandas' takes more than these)
NUMBER = r"^[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*$"


def _not_a_number(arr: pa.ChunkedArray | pa.Array, i: int) -> str:
    """Why cell ``i``, flagged by :func:`_numbers`, is bad."""
    cell = arr[i]
    try:
        float(cell.as_py() if isinstance(cell.as_py(), (str, bytes)) else str(cell.as_py()))
    except ValueError:
        return f"{_cell(arr, i)} is not a number"
    return f"{_cell(arr, i)} is not a finite number"


def _numbers(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float64 with 0 where missing or bad, missing, bad) of one column. A bad cell is text that is not a
    :data:`NUMBER`, or a value that is not finite (``nan``, ``inf``, beyond float64's range): its statistics
    would make a whole column's encoding NaN."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        missing = arr.is_null().to_numpy(zero_copy_only=False)
        wide = pc.cast(arr, pa.float64(), safe=False)  # integers beyond 2**53 round, as any float feature does
        values = pc.fill_null(wide, 0.0).to_numpy(zero_copy_only=False)
    else:
        raw = _as_bytes(arr)
        missing = pc.equal(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False)
        try:  # the common case: every cell a plain number, which pyarrow's cast takes as it is
            values = pc.cast(pc.if_else(missing, b"0", raw), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            number = pc.match_substring_regex(raw, NUMBER).to_numpy(zero_copy_only=False)
            plain = pc.ascii_trim(pc.if_else(number, raw, b"0").cast(pa.string()), " \t")  # ASCII: a valid string
            values = pc.cast(plain, pa.float64()).to_numpy(zero_copy_only=False)
            values = np.where(number, values, np.nan)  # bad: flagged as not finite below
    bad = ~np.isfinite(values) & ~missing
    return np.where(missing | bad, 0.0, values), missing, bad


def _seconds(arr: pa.ChunkedArray | pa.Array, col: ColumnSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds since the epoch as float64, missing, did not parse) of a datetime column."""
    ts, missing, unparsed = _timestamps(arr, col)
    seconds = pc.fill_null(pc.cast(pc.cast(ts, pa.timestamp("s")), pa.int64()), 0)
    return seconds.to_numpy(zero_copy_only=False).astype(np.float64), missing, unparsed


def _timestamps(arr: pa.ChunkedArray | pa.Array, col: ColumnSpec) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Timestamps of a datetime column (null where missing or unparseable), missing, and the rows that did not
    parse."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_timestamp(arr.type):
        ts, missing = arr, arr.is_null().to_numpy(zero_copy_only=False)
    else:
        text = _as_text(arr)
        missing = pc.equal(text, "").to_numpy(zero_copy_only=False)
        if col.format == "unix":
            seconds, _, not_number = _numbers(text)
            not_number |= (seconds < UNIX_RANGE[0]) | (seconds > UNIX_RANGE[1])
            ts = pa.array(np.where(not_number, 0, seconds).astype("int64"), pa.int64()).cast(pa.timestamp("s"))
            ts = pc.if_else(pa.array(missing | not_number), pa.scalar(None, pa.timestamp("s")), ts)
        else:
            coded = pc.dictionary_encode(text)  # click logs repeat timestamps: parse each distinct text once
            parsed = pc.strptime(coded.dictionary, format=col.format, unit="s", error_is_null=True)
            ts = pc.if_else(missing, pa.scalar(None, pa.timestamp("s")), parsed.take(coded.indices))
    unparsed = ts.is_null().to_numpy(zero_copy_only=False) & ~missing
    return ts, missing, unparsed


def _datetime_parts(arr: pa.ChunkedArray | pa.Array, col: ColumnSpec) -> tuple[list[pa.Array], np.ndarray]:
    """The derived parts of a datetime column as strings ("" where missing) and the rows that did not parse."""
    ts, _, unparsed = _timestamps(arr, col)
    weekday = pc.day_of_week(ts)  # Monday = 0
    values = {
        "hour": pc.hour(ts),
        "weekday": weekday,
        "weekend": pc.cast(pc.greater_equal(weekday, 5), pa.int8()),
    }
    return [pc.fill_null(pc.cast(values[p], pa.string()), "") for p in col.derive], unparsed
