"""Independent parses of the raw formats ctr reads, for the fuzz tests (``test_fuzz_readers.py``).

Each parser takes a file's (decompressed) bytes and says, without pyarrow, what its good rows hold and where its
problems are: Criteo text through ``bytes.split`` and ``re``, CSV/TSV through Python's ``csv`` module, Parquet
tables from the Python values they were written from. The rules are the documented ones: lines end with
``\\n``, ``\\r\\n`` or ``\\r``; a leading UTF-8 BOM is not data; integers are decimal int64; numbers are decimal
(spaces and tabs around them allowed) and finite; CSV values cannot span lines.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field

BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_INTEGER = re.compile(rb"-?[0-9]+")
_NUMBER = re.compile(rb"[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*")


@dataclass
class Row:
    """A good row: its 1-based line (or Parquet row), label, numeric (value, missing) pairs, categorical bytes."""

    line: int
    label: int
    numbers: list[tuple[float, bool]]
    cats: list[bytes]


@dataclass
class Problem:
    """A bad line: a message must name ``line`` and one of ``columns`` (None: no column named); a ``fatal`` one
    stops the read even with ``on_bad_rows="skip"``."""

    line: int
    columns: tuple[str | None, ...]
    fatal: bool = False


@dataclass
class Parsed:
    rows: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    long_lines: list[int] = field(default_factory=list)  # lines that may not fit in one read block
    file_error: bool = False  # nothing can be read (no header, an empty CSV file, no Parquet footer)

    def allowed_errors(self, on_bad_rows: str) -> list[Problem]:
        """The errors a read may stop with; none means the read must succeed: the first problem (only when not
        skipping), or the first fatal one, or - as pyarrow stops at a fatal line before handing over the earlier
        lines of its block - a problem between them; or a line too long for a block before these."""
        fatal = [p for p in self.problems if p.fatal][:1]
        if on_bad_rows == "skip":
            stops = fatal
        else:
            stops = [p for p in self.problems if p.line <= fatal[0].line] if fatal else self.problems[:1]
        limit = max((p.line for p in stops), default=math.inf)
        return stops + [Problem(n, (None,)) for n in self.long_lines if n <= limit]

    def good_rows(self, on_bad_rows: str) -> list[Row]:
        return self.rows if on_bad_rows == "skip" or not self.problems else []


def split_lines(content: bytes) -> list[bytes]:
    """Lines without their ends; a final line end does not start another line."""
    lines = _LINE_END.split(content)
    return lines[:-1] if lines and lines[-1] == b"" else lines


def may_straddle(line: bytes, block_size: int) -> bool:
    """A line (with its end) longer than a block may make pyarrow stop; a shorter one never does."""
    return len(line) + 2 >= block_size


def integer(cell: bytes) -> int | None:
    """The int64 of a Criteo integer cell, or None when it is not one."""
    if not _INTEGER.fullmatch(cell) or len(cell.lstrip(b"-").lstrip(b"0")) > 19:
        return None
    value = int(cell)
    return value if -(1 << 63) <= value < (1 << 63) else None


def number(cell: bytes) -> float | None:
    """The finite float of a numeric text cell, or None when it is not one."""
    if not _NUMBER.fullmatch(cell):
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


def parse_criteo(content: bytes, block_size: int, n_int: int = 13, n_cat: int = 26) -> Parsed:
    """Criteo text: ``label \\t I1..I13 \\t C1..C26`` per line."""
    out = Parsed()
    for n, line in enumerate(split_lines(content.removeprefix(BOM)), 1):
        if may_straddle(line, block_size):
            out.long_lines.append(n)
        cells = line.split(b"\t")
        if len(cells) != 1 + n_int + n_cat:
            out.problems.append(Problem(n, (None,), fatal=not _utf8(line)))
            continue
        if cells[0] not in (b"0", b"1"):
            out.problems.append(Problem(n, (None,) if not any(cells) else ("label",)))
            continue
        ints = [integer(c) for c in cells[1 : 1 + n_int]]
        bad = [j for j, (c, v) in enumerate(zip(cells[1 : 1 + n_int], ints)) if c and v is None]
        if bad:
            out.problems.append(Problem(n, (f"I{bad[0] + 1}",)))
            continue
        numbers = [(v or 0, not c) for c, v in zip(cells[1 : 1 + n_int], ints)]
        out.rows.append(Row(n, int(cells[0]), numbers, cells[1 + n_int :]))
    return out


def parse_csv(content: bytes, delimiter: str, header: list[str], kinds: dict[str, str], block_size: int) -> Parsed:
    """A declared CSV/TSV with a header line; ``kinds`` maps column -> label/numeric/categorical/ignore."""
    content = content.removeprefix(BOM)
    out = Parsed()
    physical = split_lines(content)
    out.long_lines = [n for n, line in enumerate(physical, 1) if may_straddle(line, block_size)]
    reader = csv.reader(io.StringIO(content.decode("latin-1"), newline=""), delimiter=delimiter, strict=False)
    records, last = [], 0
    for cells in reader:
        records.append((last + 1, reader.line_num, [c.encode("latin-1") for c in cells]))
        last = reader.line_num
    if not records or records[0][1] != 1 or records[0][2] != [h.encode() for h in header]:
        out.file_error = True  # no header, or not the declared one
        return out
    names = list(kinds)
    for start, end, cells in records[1:]:
        width_ok = len(cells) == len(header)
        broken = [j for j, c in enumerate(cells) if b"\n" in c or b"\r" in c]
        # a quoted value ran over a line end: to another line, or (a value the reader sees) the file's end
        if end > start or broken and width_ok:
            column = header[broken[0]] if width_ok and broken else None
            out.problems.append(Problem(start, (column,), fatal=True))
            break  # no later line number can be trusted
        if not cells:  # an empty line: a row of empty cells
            out.problems.append(Problem(start, (None, names[0])))
            continue
        if not width_ok:
            out.problems.append(Problem(start, (None,), fatal=not _utf8(physical[start - 1])))
            continue
        row = dict(zip(header, cells))
        label = next(c for c in names if kinds[c] == "label")
        if row[label] not in (b"0", b"1"):
            out.problems.append(Problem(start, (label,)))
            continue
        numeric = [c for c in names if kinds[c] == "numeric"]
        values = [number(row[c]) for c in numeric]
        bad = [c for c, v in zip(numeric, values) if row[c] and v is None]
        if bad:
            out.problems.append(Problem(start, (bad[0],)))
            continue
        numbers = [(v or 0.0, not row[c]) for c, v in zip(numeric, values)]
        cats = [row[c] for c in names if kinds[c] == "categorical"]
        out.rows.append(Row(start, int(row[label]), numbers, cats))
    return out


def parse_values(label: tuple[str, list], numeric: dict[str, list], cats: list[list]) -> Parsed:
    """A Parquet table from the Python values it was written from (None: null): the label column's name and
    values, the numeric columns' values by name, the categorical columns' values."""
    label_name, label = label
    out = Parsed()
    for i in range(len(label)):
        n = i + 1
        if not _label_ok(label[i]):
            out.problems.append(Problem(n, (label_name,)))
            continue
        values = {c: _parquet_number(col[i]) for c, col in numeric.items()}
        bad = [c for c, col in numeric.items() if col[i] not in (None, "", b"") and values[c] is None]
        if bad:
            out.problems.append(Problem(n, (bad[0],)))
            continue
        numbers = [(values[c] or 0.0, col[i] in (None, "", b"")) for c, col in numeric.items()]
        texts = [
            b"" if col[i] is None else col[i] if isinstance(col[i], bytes) else str(col[i]).encode() for col in cats
        ]
        out.rows.append(Row(n, int(float(label[i])), numbers, texts))
    return out


def _label_ok(value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return False  # a bool reads as "true"/"false"
    if isinstance(value, (int, float)):
        return value in (0, 1)
    return value in ("0", "1", b"0", b"1")


def _parquet_number(value: object) -> float | None:
    if isinstance(value, (bytes, str)):
        return number(value if isinstance(value, bytes) else value.encode())
    if value is None:
        return None
    return float(value) if math.isfinite(float(value)) else None


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
