"""The raw Criteo format and a streaming reader for it.

A raw Criteo file (Kaggle ``train.txt``, Criteo 1TB ``day_N``) has no header; each line is
``label \\t I1 .. I13 \\t C1 .. C26``: a 0/1 click label, 13 integer counts and 26 categorical values (32-bit
hashes written as 8 hex characters; values of any other length work as well, see :class:`KeyCodec`). An empty
cell is a missing value. Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ctr.data.read_failures import READ_FAILURES, read_error
from ctr.errors import DataError, quoted

NUM_INT = 13
NUM_CAT = 26
NUM_COLUMNS = 1 + NUM_INT + NUM_CAT
LABEL = "label"
INT_COLUMNS = [f"I{i}" for i in range(1, NUM_INT + 1)]
CAT_COLUMNS = [f"C{i}" for i in range(1, NUM_CAT + 1)]
COLUMNS = [LABEL, *INT_COLUMNS, *CAT_COLUMNS]
FEATURE_COLUMNS = COLUMNS[1:]  # the layout of rows to score: no label column

MAX_EXAMPLES = 10  # bad rows kept (with line numbers and reasons) in a skip report
MIN_BATCH_ROWS = 1 << 16  # pyarrow record batches are coalesced into batches of at least this many rows
_MAX_DIGITS = 18  # longer integer cells are checked against the int64 range one by one
_TOP_BYTE = np.uint64(56)
_MIN_TOP = np.uint64(8)  # top byte of a key: 0 table, 1-7 length of a short value, >= 8 an 8-byte value
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)  # masks of the low n bytes
_SHORT_TOP = np.array([n << 56 if 0 < n < 8 else 0 for n in range(9)], dtype=np.uint64)  # a short value's length
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class RawBatch:
    """Good rows of a raw file, parsed. Per-column arrays are laid out (columns, N) so each column is contiguous.

    Attributes:
        lines: (N,) int64 1-based line numbers in the file.
        label: (N,) int8 in {0, 1}.
        ints: (NUM_INT, N) int64 values, 0 where missing.
        int_missing: (NUM_INT, N) bool, True where the cell was empty.
        cats: (NUM_CAT, N) int64 categorical keys from :class:`KeyCodec`; 0 where the cell was empty.
        group: (N,) int64 key of each row's group column (declared tables with ``data.group``), or None.
        time: (N,) float64 time of each row (declared tables with ``data.split_by_time``: seconds for a datetime
            column, the value for a numeric one), or None.
        multi: per multi-valued column of a declared table, (N, max_len) int64 keys of its values (0 = none).
        weight: (N,) float64 example weights (declared tables with ``data.weight``), or None.
        carry: (N rows) raw columns asked for by the reader's ``carry`` (to copy into predictions), or None.
    """

    lines: np.ndarray
    label: np.ndarray
    ints: np.ndarray
    int_missing: np.ndarray
    cats: np.ndarray
    group: np.ndarray | None = None
    time: np.ndarray | None = None
    multi: list[np.ndarray] = field(default_factory=list)
    weight: np.ndarray | None = None
    carry: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def take(self, rows: np.ndarray) -> RawBatch:
        """The rows selected by ``rows`` (a bool mask, an index array or a slice), in order."""
        group = None if self.group is None else self.group[rows]
        time = None if self.time is None else self.time[rows]
        return RawBatch(
            self.lines[rows],
            self.label[rows],
            self.ints[:, rows],
            self.int_missing[:, rows],
            self.cats[:, rows],
            group,
            time,
            [m[rows] for m in self.multi],
            None if self.weight is None else self.weight[rows],
            None if self.carry is None else _take_table(self.carry, rows),
        )


def _take_table(table: pa.Table, rows: np.ndarray | slice) -> pa.Table:
    """The rows of an Arrow table selected as :meth:`RawBatch.take` selects them."""
    if isinstance(rows, slice):
        start, stop, step = rows.indices(table.num_rows)
        if step == 1:
            return table.slice(start, max(stop - start, 0))
        rows = np.arange(start, stop, step)
    rows = np.asarray(rows)
    return table.filter(pa.array(rows)) if rows.dtype == bool else table.take(pa.array(rows))


@dataclass
class BadRowReport:
    """Rows skipped with ``on_bad_rows="skip"``: how many, and the first ``MAX_EXAMPLES`` with their reasons."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, line: int, column: str | None, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"file": file, "line": int(line), "column": column, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": list(self.examples)}

    def summary(self) -> str:
        """One line for the console, e.g. ``skipped 3 bad rows (train.txt line 17, column I3: ...; ...)``."""
        if not self.count:
            return "no bad rows"
        shown = "; ".join(format_problem(e["file"], e["line"], e["column"], e["reason"]) for e in self.examples[:3])
        more = ", ..." if self.count > 3 else ""
        return f"skipped {self.count} bad row{'s' if self.count > 1 else ''} ({shown}{more})"


def format_problem(file: str, line: int, column: str | None, reason: str, unit: str = "line") -> str:
    """``train.txt line 17, column I3: 'abc' is not an integer`` (``unit``: ``row`` for Parquet rows)."""
    where = f"{file} {unit} {line}" + (f", column {column}" if column else "")
    return f"{where}: {reason}"


class KeyCodec:
    """Maps categorical values to int64 keys and back, vectorised.

    The key of a value is its bytes where that fits: a value of exactly 8 bytes (every Criteo hash) whose last
    byte is not a control character (>= 8) is its own key, the bytes read as a little-endian integer; a value
    of 1 to 7 bytes is its bytes in the low 7 bytes with its length in the top byte. Other values (longer, or
    8 bytes ending in a byte < 8) get small keys (top byte 0) from a table that grows as they are met; each
    distinct one is looked up once per call. The empty value (missing) is key 0. Table keys are only meaningful
    within one process; what is saved is :meth:`text_of`.
    """

    def __init__(self) -> None:
        self._odd: dict[bytes, int] = {}
        self._odd_values: list[bytes] = []

    def encode(self, arr: pa.Array) -> np.ndarray:
        """(N,) binary array without nulls -> (N,) int64 keys."""
        offsets, data = binary_buffers(arr)
        lengths = np.diff(offsets)
        start = offsets[0]
        eight = lengths == 8
        n8 = int(np.count_nonzero(eight))
        if n8 == np.count_nonzero(lengths) and offsets[-1] - start == 8 * n8:  # only 8-byte and empty cells
            keys = np.zeros(len(lengths), dtype=np.uint64)
            keys[eight] = np.frombuffer(data, dtype="<u8", count=n8, offset=start)
            odd = eight & ((keys >> _TOP_BYTE) < _MIN_TOP)
        else:  # every cell at once: its first 8 bytes, cut to its length, with a short value's length on top
            upto8 = np.minimum(lengths, 8)
            keys = np.take(
                _unaligned_u64(data), offsets[:-1]
            )  # take, not []: the faster gather on this view (docs/benchmarks.md)
            keys &= _LOW_BYTES.take(upto8)
            keys |= _SHORT_TOP.take(upto8)
            odd = (lengths > 8) | (eight & ((keys >> _TOP_BYTE) < _MIN_TOP))
        if odd.any():
            rows = np.flatnonzero(odd)
            coded = pc.dictionary_encode(arr.take(pa.array(rows)))
            distinct = np.array([self._odd_key(v) for v in coded.dictionary.to_pylist()], dtype=np.uint64)
            keys[rows] = distinct[coded.indices.to_numpy()]
        return keys.view(np.int64)

    def _odd_key(self, value: bytes) -> int:
        key = self._odd.get(value)
        if key is None:
            key = self._odd[value] = len(self._odd_values) + 1
            self._odd_values.append(value)
        return key

    def key_of(self, text: str) -> int:
        """The key of one value (as saved in a schema)."""
        raw = text.encode("utf-8", "surrogateescape")
        if not raw:
            return 0
        if len(raw) < 8:
            return (len(raw) << 56) | int.from_bytes(raw, "little")
        if len(raw) == 8 and raw[-1] >= _MIN_TOP:
            return int(np.frombuffer(raw, dtype="<u8")[0].view(np.int64))
        return self._odd_key(raw)

    def keys_of(self, texts: list[str]) -> np.ndarray:
        """:meth:`key_of` for many values; (N,) int64. 8-character ASCII values are converted in one go."""
        blob = "".join(texts).encode("utf-8", "surrogateescape")
        if len(blob) == 8 * len(texts) and all(len(t) == 8 for t in texts):
            keys = np.frombuffer(blob, dtype="<u8").copy()
            if np.all((keys >> _TOP_BYTE) >= _MIN_TOP):
                return keys.view(np.int64)
        return np.array([self.key_of(t) for t in texts], dtype=np.int64)

    def text_of(self, key: int) -> str:
        """The value of one key, as text that survives JSON (undecodable bytes become surrogate escapes)."""
        key = int(key) & 0xFFFFFFFFFFFFFFFF
        top = key >> 56
        if top == 0:
            raw = self._odd_values[key - 1] if key else b""
        elif top < _MIN_TOP:
            raw = key.to_bytes(8, "little")[:top]
        else:
            raw = key.to_bytes(8, "little")
        return raw.decode("utf-8", "surrogateescape")

    def texts_of(self, keys: np.ndarray) -> list[str]:
        """:meth:`text_of` for many keys; the 8-byte ones decoded in one go."""
        keys = np.asarray(keys, dtype=np.int64)
        if keys.size and np.all((keys.view(np.uint64) >> _TOP_BYTE) >= _MIN_TOP):
            blob = keys.astype("<i8").tobytes()
            return [blob[i : i + 8].decode("utf-8", "surrogateescape") for i in range(0, len(blob), 8)]
        return [self.text_of(k) for k in keys]


def _unaligned_u64(data: np.ndarray) -> np.ndarray:
    """A uint64 view of ``data`` starting at every byte and at its end (so ``view[i]`` is bytes ``i .. i + 7``,
    zero-padded)."""
    padded = np.concatenate([data, np.zeros(8, np.uint8)])
    return np.ndarray(shape=(len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))


def binary_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (N + 1,) int32 and data (uint8) of a binary/string array with no nulls, zero-copy."""
    if arr.null_count:
        raise ValueError("binary array with nulls")
    _, offsets, data = arr.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets, data


def parse_ints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strictly parse a binary column of decimal integers: optional ``-`` then digits; empty means missing.

    Anything else (``1.5``, ``+1``, `` 1``, ``0x1f``, values outside int64) is bad: nothing is coerced.

    Returns:
        values (N,) int64 with 0 where missing or bad, missing (N,) bool, bad (K,) int64 sorted row indices.
    """
    missing, bad = check_ints(arr)
    return convert_ints(arr, missing | bad), missing, np.flatnonzero(bad)


def check_ints(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The validation half of :func:`parse_ints`: (N,) bool masks of missing and of bad cells."""
    offsets, data = binary_buffers(arr)
    lengths = np.diff(offsets)
    missing = lengths == 0
    start = int(offsets[0])
    bad = np.zeros(len(arr), dtype=bool)
    odd = np.flatnonzero((data[start : offsets[-1]] - np.uint8(48)) > 9) + start  # bytes that are not digits
    if odd.size:
        cell = np.searchsorted(offsets, odd, side="right") - 1
        ok = (data[odd] == 45) & (offsets[cell] == odd) & (lengths[cell] >= 2)  # a leading minus sign
        bad[cell[~ok]] = True
    for i in np.flatnonzero((lengths > _MAX_DIGITS) & ~bad):  # digits only, but maybe out of range
        text = bytes(data[offsets[i] : offsets[i + 1]])
        # over 19 digits after leading zeros is out of range, and int() refuses texts of over 4300 digits
        if len(text.lstrip(b"-").lstrip(b"0")) > 19 or not -(1 << 63) <= int(text) < (1 << 63):
            bad[i] = True
    return missing, bad


def convert_ints(arr: pa.Array, skip: np.ndarray) -> np.ndarray:
    """The conversion half of :func:`parse_ints`: cells that passed :func:`check_ints` as (N,) int64, 0 where
    ``skip`` (missing or bad)."""
    n = len(arr)
    if not skip.any():
        return _int64_values(arr.cast(pa.int64()), n)
    bitmap = pa.py_buffer(np.packbits(~skip, bitorder="little"))
    masked = pa.Array.from_buffers(pa.binary(), n, [bitmap, *arr.buffers()[1:]], offset=arr.offset)
    return np.where(skip, 0, _int64_values(masked.cast(pa.int64()), n))  # null slots hold garbage


def _int64_values(arr: pa.Array, n: int) -> np.ndarray:
    """The data buffer of an int64 array as numpy, zero-copy (whatever the validity)."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int64, count=n, offset=arr.offset * 8)


def _cell_text(arr: pa.Array, i: int) -> str:
    return arr[i].as_py().decode("utf-8", "replace")


class _InvalidRows:
    """invalid_row_handler for pyarrow: records rows with a wrong number of columns and skips them; ``spanning``
    holds those that run over several lines (a quoted value with a line break, in CSV)."""

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.texts: dict[int, str] = {}
        self.columns: dict[int, int] = {}
        self.spanning: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, row: Any) -> str:
        with self._lock:
            self.lines.append(row.number)
            if "\n" in row.text or "\r" in row.text:
                self.spanning.append(row.number)
            if len(self.texts) < 100:
                self.texts[row.number] = row.text
                self.columns[row.number] = row.actual_columns
        return "skip"


def prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``it`` in a background thread, ``depth`` items ahead (pyarrow parses without holding the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer
            q.put((done, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # stops an upstream _prefetch too

    thread = threading.Thread(target=work, daemon=True, name="criteo-reader")
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def open_record_batches(
    path: str | Path, block_size: int, handler: Any, names: list[str] = COLUMNS
) -> Iterator[pa.RecordBatch]:
    """pyarrow's serial streaming CSV reader over a raw file: every column as binary, no quoting, no header.

    Serial reading (``use_threads=False``) is what makes ``InvalidRow.number`` exact (with threads pyarrow
    reports no row numbers); :func:`read_criteo` overlaps it with the caller's work through a background thread.
    ``names``: ``COLUMNS``, or ``FEATURE_COLUMNS`` for a file without the label column.

    Raises:
        DataError: no such file. Failures to read (``READ_FAILURES``) are raised as they are, for the caller,
            which knows how many lines were read and which of them were bad, to name the line.
    """
    read = pacsv.ReadOptions(column_names=names, block_size=block_size, use_threads=False)
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, ignore_empty_lines=False, invalid_row_handler=handler)
    convert = pacsv.ConvertOptions(column_types={n: pa.binary() for n in names}, strings_can_be_null=False)
    try:
        reader = pacsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            return
        raise
    try:
        yield from reader
    finally:
        reader.close()


def read_criteo(
    path: str | Path,
    block_size: int = 1 << 20,
    on_bad_rows: str = "error",
    report: BadRowReport | None = None,
    codec: KeyCodec | None = None,
    min_rows: int = MIN_BATCH_ROWS,
    require_label: bool = True,
    carry: tuple[str, ...] = (),
) -> Iterator[RawBatch]:
    """Stream the good rows of a raw Criteo file (plain or ``.gz``) as :class:`RawBatch` es.

    Bad rows are a wrong number of columns (an empty line included), a label other than ``0``/``1`` and a cell
    of an ``I`` column that is not a decimal integer. With ``on_bad_rows="error"`` the first one raises
    :class:`DataError` naming the file, its 1-based line number and the column; with ``"skip"`` they are
    dropped and counted in ``report``. Line numbers are exact across blocks and after skipped rows.

    Args:
        path: the raw file.
        block_size: bytes per pyarrow read block.
        on_bad_rows: ``"error"`` or ``"skip"``.
        report: receives skipped rows (a fresh one is used if None).
        codec: maps categorical values to keys (a fresh one if None; share one across files to share keys).
        min_rows: pyarrow batches are coalesced until at least this many rows (fewer at the end).
        require_label: False for rows to score: the file may also lack the label column (39 columns instead of
            40, decided per file by :func:`criteo_layout`); its rows then get label 0.
        carry: columns (of ``COLUMNS``) kept as raw text in ``RawBatch.carry``.

    Returns:
        An iterator of RawBatch of at least ``min_rows`` rows except the last, rows in file order. Text is
        parsed (by pyarrow, serially) and checked in a background thread, one batch ahead of the caller.
    """
    path, report, codec = reader_args(path, on_bad_rows, report, codec)
    names = COLUMNS if require_label else criteo_layout(path, block_size, on_bad_rows)
    unknown = [c for c in carry if c not in names]
    if unknown:
        raise DataError(f"{path}: no column {unknown[0]!r} to carry; the file has: {', '.join(names)}")
    checked = _check_stream(path, block_size, on_bad_rows, report, min_rows, names)
    return _convert_stream(prefetch(checked), codec, carry)


def criteo_layout(path: Path, block_size: int, on_bad_rows: str) -> list[str]:
    """The columns of a raw Criteo file that may lack its label: ``COLUMNS`` when its first line has 40
    tab-separated columns, ``FEATURE_COLUMNS`` when it has 39 (with ``on_bad_rows="skip"``: the first line of
    the first block that has either; lines of the other count are then bad rows).

    Raises:
        DataError: no such line, naming the first line and its column count.
    """
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(block_size)
    lines = head.split(b"\n")
    lines = lines[:-1] if len(head) == block_size or not lines[-1] else lines  # a cut or empty last piece
    if not lines:  # an empty file, or a first line longer than a block: the reader reports it
        return COLUMNS
    counts = [line.count(b"\t") + 1 for line in (lines[:1] if on_bad_rows == "error" else lines)]
    for count in counts:
        if count in (NUM_COLUMNS, NUM_COLUMNS - 1):
            return COLUMNS if count == NUM_COLUMNS else FEATURE_COLUMNS
    layouts = f"{NUM_COLUMNS} tab-separated columns (with the label) or {NUM_COLUMNS - 1} (without)"
    if on_bad_rows == "error":
        raise DataError(f"{path} line 1: expected {layouts}, got {counts[0]}")
    raise DataError(f"{path}: no line of the first {len(head)} bytes has {layouts}; line 1 has {counts[0]}")


def reader_args(
    path: str | Path, on_bad_rows: str, report: BadRowReport | None, codec: KeyCodec | None
) -> tuple[Path, BadRowReport, KeyCodec]:
    """The checked path, report and codec of a raw-file reader (fresh ones when None)."""
    if on_bad_rows not in ("error", "skip"):
        raise ValueError(f"on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path, report if report is not None else BadRowReport(), codec or KeyCodec()


@dataclass
class _CheckedBatch:
    """Good rows after stage 1 (pyarrow parsing and validation), before conversion to numbers and keys."""

    lines: np.ndarray  # (N,) int64
    table: pa.Table  # (N rows) the 40 binary columns, one chunk each (a label of 0 in rows to score)
    label: np.ndarray  # (N,) int8
    int_missing: np.ndarray  # (NUM_INT, N) bool


def _convert_stream(
    checked: Iterator[_CheckedBatch], codec: KeyCodec, carry: tuple[str, ...] = ()
) -> Iterator[RawBatch]:
    """Stage 2, in the caller's thread (so it overlaps with stage 1 of the next batch): integers and keys."""
    try:
        for c in checked:
            cols = c.table.columns
            ints = np.empty(c.int_missing.shape, dtype=np.int64)
            for j in range(NUM_INT):
                ints[j] = convert_ints(cols[1 + j].chunks[0], c.int_missing[j])
            cats = np.empty((NUM_CAT, len(c.lines)), dtype=np.int64)
            for j in range(NUM_CAT):
                cats[j] = codec.encode(cols[1 + NUM_INT + j].chunks[0])
            kept = c.table.select(list(carry)) if carry else None
            yield RawBatch(c.lines, c.label, ints, c.int_missing, cats, carry=kept)
    finally:
        close = getattr(checked, "close", None)
        if close is not None:
            close()


def _check_stream(
    path: Path, block_size: int, on_bad_rows: str, report: BadRowReport, min_rows: int, names: list[str] = COLUMNS
) -> Iterator[_CheckedBatch]:
    invalid = _InvalidRows()
    state = _LineState()
    pending: list[pa.RecordBatch] = []
    rows = 0
    batches = open_record_batches(path, block_size, invalid, names)  # same thread: exact row numbers
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except READ_FAILURES as e:
            # the lines read before the failure come first: a bad one among them is the file's first problem
            _check_batch(path, pending, invalid, state, on_bad_rows, report, final=True, names=names)
            raise read_error(path, e, state.next_line, block_size) from None
        pending.append(batch)
        rows += batch.num_rows
        unreported = invalid.lines[state.invalid_done : state.invalid_done + 1]
        if on_bad_rows == "error" and rows == 0 and unreported and unreported[0] == state.next_line:
            _check_batch(path, pending, invalid, state, on_bad_rows, report, final=True, names=names)  # raises
        if rows >= min_rows:
            checked = _check_batch(path, pending, invalid, state, on_bad_rows, report, final=False, names=names)
            pending, rows = [], 0
            if len(checked.lines):  # skipping may leave none (an empty table has no chunks to convert)
                yield checked
    last = _check_batch(path, pending, invalid, state, on_bad_rows, report, final=True, names=names)
    if len(last.lines):
        yield last


@dataclass
class _LineState:
    next_line: int = 1  # line number of the next row pyarrow hands over, ignoring skipped invalid rows
    invalid_done: int = 0  # entries of _InvalidRows.lines already reported


def _line_numbers(n: int, invalid: list[int], state: _LineState) -> np.ndarray:
    """Exact 1-based line numbers of the next ``n`` good rows, given the sorted line numbers of skipped rows."""
    start = state.next_line
    inv = np.asarray(invalid[state.invalid_done :], dtype=np.int64)
    inv = inv[inv >= start]
    if inv.size == 0 or n == 0:
        return start + np.arange(n, dtype=np.int64)
    good_before = inv - start - np.arange(len(inv))  # good rows before each skipped line
    i = np.arange(n, dtype=np.int64)
    return start + i + np.searchsorted(good_before, i, side="right")


def _check_batch(
    path: Path,
    batches: list[pa.RecordBatch],
    invalid: _InvalidRows,
    state: _LineState,
    on_bad_rows: str,
    report: BadRowReport,
    final: bool,
    names: list[str] = COLUMNS,
    unit: str = "line",
) -> _CheckedBatch:
    """Line numbers and every bad-row check of the coalesced pyarrow batches (of the columns ``names``); raises
    or drops bad rows. ``unit`` names what the numbers count in messages (``line``, or ``row`` of a frame)."""
    table = pa.Table.from_batches(batches) if batches else None
    n = table.num_rows if table is not None else 0
    lines = _line_numbers(n, invalid.lines, state)
    last_line = int(lines[-1]) if n else state.next_line - 1
    state.next_line = last_line + 1
    # rows with a wrong column count up to this batch's last row (or all remaining ones at the end of the file)
    new_invalid = [ln for ln in invalid.lines[state.invalid_done :] if final or ln <= last_line]
    state.invalid_done += len(new_invalid)
    if final and new_invalid:
        state.next_line = max(state.next_line, new_invalid[-1] + 1)
    expected = f"{len(names)} tab-separated"
    problems: list[tuple[int, str | None, str]] = [
        (ln, None, _column_count_reason(invalid, ln, expected)) for ln in new_invalid
    ]
    if n == 0:
        empty = _CheckedBatch(
            lines,
            pa.table({c: pa.array([], pa.binary()) for c in COLUMNS}),
            np.zeros(0, np.int8),
            np.zeros((NUM_INT, 0), bool),
        )
        _report(path, problems, on_bad_rows, report, unit)
        return empty
    table = table.combine_chunks()
    if names[0] != LABEL:
        table = _with_zero_label(table)
    cols = table.columns
    bad = np.zeros(n, dtype=bool)
    offsets, data = binary_buffers(cols[0].chunks[0])
    one_char = np.diff(offsets) == 1
    label_byte = np.zeros(n, dtype=np.uint8)
    label_byte[one_char] = data[offsets[:-1][one_char]]
    label_ok = one_char & ((label_byte == 48) | (label_byte == 49))
    for i in np.flatnonzero(~label_ok):
        bad[i] = True
        reason = _label_reason(table, i)
        problems.append((int(lines[i]), None if reason == "empty line" else LABEL, reason))
    int_missing = np.empty((NUM_INT, n), dtype=bool)
    for j in range(NUM_INT):
        arr = cols[1 + j].chunks[0]
        int_missing[j], bad_cells = check_ints(arr)
        for i in np.flatnonzero(bad_cells):
            if not bad[i]:
                problems.append((int(lines[i]), INT_COLUMNS[j], _int_reason(arr, i)))
            bad[i] = True
    checked = _CheckedBatch(lines, table, (label_byte - 48).astype(np.int8), int_missing)
    _report(path, problems, on_bad_rows, report, unit)
    if bad.any():  # skip mode: keep the good rows
        keep = ~bad
        checked = _CheckedBatch(
            lines[keep], table.filter(pa.array(keep)).combine_chunks(), checked.label[keep], int_missing[:, keep]
        )
    return checked


def _with_zero_label(table: pa.Table) -> pa.Table:
    """Rows to score (no label column) with a label column of ``0``, left empty where every cell is (pyarrow
    reads an empty line as such a row), so that the label check reports an empty line as it does with labels."""
    empty = np.ones(table.num_rows, dtype=bool)
    for col in table.columns:
        empty &= np.diff(binary_buffers(col.chunks[0])[0]) == 0
    label = pc.if_else(pa.array(empty), pa.scalar(b"", pa.binary()), pa.scalar(b"0", pa.binary()))
    return table.add_column(0, LABEL, label)


def _report(
    path: Path, problems: list[tuple[int, str | None, str]], on_bad_rows: str, report: BadRowReport, unit: str = "line"
) -> None:
    """Raise for the first problem (``on_bad_rows="error"``) or add them all to ``report``; ``unit`` names what
    the numbers count (``line``, or ``row`` for Parquet)."""
    if not problems:
        return
    problems.sort(key=lambda p: p[0])
    if on_bad_rows == "error":
        line, column, reason = problems[0]
        hint = " (set data.on_bad_rows=skip to skip bad rows)"
        raise DataError(format_problem(str(path), line, column, reason, unit) + hint)
    for line, column, reason in problems:
        report.add(str(path), line, column, reason)


def _column_count_reason(invalid: _InvalidRows, line: int, expected: str = f"{NUM_COLUMNS} tab-separated") -> str:
    got = invalid.columns.get(line)
    text = invalid.texts.get(line)
    shown = f": {quoted(text)}" if text is not None else ""
    count = f", got {got}" if got is not None else ""
    return f"expected {expected} columns{count}{shown}"


def _label_reason(table: pa.Table, i: int) -> str:
    row = [table.column(k)[i].as_py() for k in range(table.num_columns)]
    if not any(row):
        return "empty line"  # pyarrow reads it as a row of empty cells
    return f"label {quoted(row[0])} is not 0 or 1"


def _int_reason(arr: pa.Array, i: int) -> str:
    text = _cell_text(arr, i)
    if _INTEGER.fullmatch(text):
        return f"{quoted(text)} is outside the int64 range"
    return f"{quoted(text)} is not an integer"
