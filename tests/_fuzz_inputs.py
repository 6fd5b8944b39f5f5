"""Hypothesis strategies for the fuzz tests: raw Criteo text and declared CSV/TSV files, mostly well-formed rows
with one fault here and there (a bad label, number or width, a quoting error, a field longer than a read block),
then maybe a fault of the whole file (a BOM, inserted random bytes, a NUL, a cut, or random bytes instead)."""

from __future__ import annotations

from _raw_oracle import BOM
from hypothesis import strategies as st

JUNK = st.sampled_from([b"", b" ", b"\x00", b"\x1b[31m", b"\xef\xbb\xbf", b"\xff\xfe", b'"', b"nan", b"-", b"1.5"])
LINE_ENDS = st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"])
BLOCK_SIZES = st.sampled_from([1 << 16, 4096, 1024])
# a row is well formed, or has one fault of the kind named (most rows of a real file are fine)
ROW_FAULTS = st.sampled_from([None, None, None, None, None, "label", "number", "width", "quote", "long"])


def no_breaks(data: bytes, delimiter: bytes = b"\t") -> bytes:
    return data.translate(None, b"\n\r" + delimiter)


def text_cells(delimiter: bytes = b"\t") -> st.SearchStrategy[bytes]:
    """Categorical cells: short binary or unicode (NULs, control characters included)."""
    short = st.one_of(st.binary(max_size=10), st.text(max_size=8).map(str.encode))
    return short.map(lambda b: no_breaks(b, delimiter))


LONG_CELLS = st.integers(200, 3000).map(lambda n: b"v" * n)  # longer than a small block, with the rest of a line


GOOD_INTEGERS = st.one_of(
    st.just(b""),
    st.integers(-1000, 1000).map(lambda v: str(v).encode()),
    st.integers(-(1 << 63), (1 << 63) - 1).map(lambda v: str(v).encode()),
    st.sampled_from([b"-0", b"007", b"9223372036854775807", b"-9223372036854775808"]),
    st.integers(18, 40).map(lambda n: b"-" + b"0" * n + b"42"),  # long, but in range
)
BAD_INTEGERS = st.one_of(
    st.integers(1 << 63, 1 << 80).map(lambda v: str(v).encode()),  # outside int64
    st.integers(-(1 << 80), -(1 << 63) - 1).map(lambda v: str(v).encode()),
    st.sampled_from([b"+1", b" 1", b"1 ", b"0x1f", b"1e3"]),
    st.integers(4000, 6000).map(lambda n: b"7" * n),  # more digits than Python's int() takes from text
    JUNK,
)
GOOD_NUMBERS = st.one_of(
    st.just(b""),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: repr(v).encode()),
    st.integers(-(1 << 80), 1 << 80).map(lambda v: str(v).encode()),
    st.sampled_from([b" 2", b"2\t", b"+.5", b"5.", b"-1e-400", b"1E+3", b"00012"]),
)
BAD_NUMBERS = st.one_of(
    st.sampled_from([b"1e400", b"-1e309", b"inf", b"-Infinity", b"NaN", b"1,5", b"1_0", b"0x10", b"1e", b"--1"]),
    st.integers(400, 6000).map(lambda n: b"7" * n),  # beyond float64
    JUNK,
)
LABELS = st.sampled_from([b"0", b"1"])
BAD_LABELS = st.one_of(JUNK, st.binary(max_size=3))


@st.composite
def mutated(draw: st.DrawFn, content: bytes) -> bytes:
    """``content`` as it is, or hit by one fault: a BOM, random bytes, NULs, a cut, or random bytes instead."""
    fault = draw(st.sampled_from(["none", "none", "none", "bom", "insert", "nul", "cut", "random"]))
    at = draw(st.integers(0, len(content)))
    if fault == "bom":
        return BOM + content
    if fault == "insert":
        return content[:at] + draw(st.binary(min_size=1, max_size=20)) + content[at:]
    if fault == "nul":
        return content[:at] + b"\x00" + content[at:]
    if fault == "cut":
        return content[:at]
    if fault == "random":
        return draw(st.binary(max_size=300))
    return content


def join_lines(draw: st.DrawFn, lines: list[bytes]) -> bytes:
    out = b"".join(line + draw(LINE_ENDS) for line in lines)
    return out if draw(st.booleans()) else out.removesuffix(b"\n").removesuffix(b"\r")


def with_width(draw: st.DrawFn, cells: list[bytes], fault: str | None) -> list[bytes]:
    """``cells``, or (a ``width`` fault) one more, one fewer, or only the first."""
    if fault != "width":
        return cells
    return draw(st.sampled_from([cells + [b"x"], cells[:-1], cells[:1]]))


@st.composite
def criteo_rows(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        fault = draw(ROW_FAULTS)
        ints = [draw(GOOD_INTEGERS) for _ in range(13)]
        if fault == "number":
            ints[draw(st.integers(0, 12))] = draw(BAD_INTEGERS)
        label = draw(BAD_LABELS if fault == "label" else LABELS)
        cats = [draw(text_cells()) for _ in range(26)]
        if fault == "long":
            cats[draw(st.integers(0, 25))] = draw(LONG_CELLS)
        cells = [label, *ints, *cats]
        lines.append(b"\t".join(with_width(draw, cells, fault)))
    return draw(mutated(join_lines(draw, lines)))


CSV_KINDS = {"y": "label", "n": "numeric", "c": "categorical", "i": "ignore"}


def csv_cell(draw: st.DrawFn, raw: bytes, delimiter: bytes, fault: bool) -> bytes:
    """A cell written as a correct writer would (quoted when it must be, or at random), or with a quoting
    error: an unterminated quote, or text after the closing quote."""
    style = draw(st.sampled_from(["open", "stray"] if fault else ["plain", "plain", "quoted"]))
    if style == "open":
        return b'"' + raw
    if style == "stray":
        return b'"' + raw.replace(b'"', b'""') + b'"x'
    if style == "quoted" or any(ch in raw for ch in (delimiter, b'"', b"\n", b"\r")):
        return b'"' + raw.replace(b'"', b'""') + b'"'
    return raw


@st.composite
def csv_rows(draw: st.DrawFn, delimiter: bytes) -> bytes:
    lines = [delimiter.join(h.encode() for h in CSV_KINDS)]
    for _ in range(draw(st.integers(0, 6))):
        fault = draw(ROW_FAULTS)
        label = no_breaks(draw(BAD_LABELS if fault == "label" else LABELS), b"")
        value = no_breaks(draw(BAD_NUMBERS if fault == "number" else GOOD_NUMBERS), b"")
        category = draw(st.one_of(text_cells(b""), text_cells(b""), st.binary(max_size=8)))  # maybe a line break
        category = draw(LONG_CELLS) if fault == "long" else category
        raw = [label, value, category, b"ig"]
        quote_fault = draw(st.integers(0, 3)) if fault == "quote" else -1
        cells = [csv_cell(draw, c, delimiter, j == quote_fault) for j, c in enumerate(raw)]
        lines.append(delimiter.join(with_width(draw, cells, fault)))
    return draw(mutated(join_lines(draw, lines)))


ON_BAD_ROWS = st.sampled_from(["error", "skip"])
COMPRESSION = st.sampled_from(["", "", "", "gz", "cut"])
