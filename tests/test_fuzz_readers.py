"""Fuzzed input for every reader (Criteo text, declared CSV and TSV, Parquet; gzip of the text ones).

Property: a generated file either reads to exactly the rows an independent parse finds (``_raw_oracle``), or
fails with a DataError whose one printable line names the file, and the line (row) and column of the first
problem; no other exception. Inputs mix well-formed rows with the faults of real files: random bytes, truncated
lines and files, NUL bytes, CR and CRLF line ends, a UTF-8 BOM, fields longer than a read block, wrong column
counts, integers outside int64, non-finite numbers and quoting errors.

CI runs ``max_examples=40`` per property. A longer run: ``CTR_FUZZ_EXAMPLES=2000 python -m pytest
tests/test_fuzz_readers.py`` (the ``ctr-fuzz`` hypothesis profile reads the variable).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _fuzz_checks import prepare_and_check, read_and_check, write
from _fuzz_inputs import (
    BAD_NUMBERS,
    BLOCK_SIZES,
    COMPRESSION,
    CSV_KINDS,
    GOOD_NUMBERS,
    ON_BAD_ROWS,
    criteo_rows,
    csv_rows,
)
from _raw_oracle import parse_criteo, parse_csv, parse_values
from _tiny import config_section
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ctr.data.criteo import CAT_COLUMNS, INT_COLUMNS, read_criteo
from ctr.data.table import parse_table_spec, read_table
from ctr.errors import DataError

settings.register_profile(
    "ctr-fuzz",
    max_examples=int(os.environ.get("CTR_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
    database=None,  # nothing written into the working tree; a failure prints its @reproduce_failure blob
)
FUZZ = settings.get_profile("ctr-fuzz")
# pyarrow cannot decode the text of a bad row that is not UTF-8 for its invalid-row handler: it prints that as an
# "exception ignored" and stops with an error, which the reader reports with the line
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

# ------------------------------------------------------------------------------------------------------ properties


@FUZZ
@given(
    content=criteo_rows(), block_size=BLOCK_SIZES, on_bad_rows=ON_BAD_ROWS, gz=COMPRESSION, min_rows=st.integers(1, 4)
)
# regressions the fuzzing found: random bytes (pyarrow's own message quoted raw bytes and counted no line); a
# batch whose every row is skipped (IndexError); a bad line before a line that is not UTF-8 in one block (the
# later one was named); an integer beyond 2**53 (checked as a float); 5000 digits (int() refuses them)
@example(content=bytes(range(256)) * 3, block_size=1 << 16, on_bad_rows="skip", gz="", min_rows=1)
@example(
    content=b"0" + b"\t" * 13 + b"9223372036854775808" + b"\t" * 26,
    block_size=1024,
    on_bad_rows="skip",
    gz="",
    min_rows=1,
)
@example(
    content=b"0" + b"\t" * 38 + b"\n0" + b"\t" * 40 + b"\x80",
    block_size=1 << 16,
    on_bad_rows="error",
    gz="",
    min_rows=1,
)
@example(
    content=b"0" + b"\t" * 13 + b"9007199254740993" + b"\t" * 26,
    block_size=1024,
    on_bad_rows="error",
    gz="",
    min_rows=1,
)
@example(content=b"0\t" + b"7" * 5000 + b"\t" * 38, block_size=1 << 16, on_bad_rows="error", gz="", min_rows=1)
def test_criteo_text_reads_as_parsed_or_names_the_problem(
    content: bytes, block_size: int, on_bad_rows: str, gz: str, min_rows: int
) -> None:
    parsed = parse_criteo(content, block_size)
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), "day.txt", content, gz)

        def read(p, **kw):
            return read_criteo(p, block_size=block_size, min_rows=min_rows, **kw)

        read_and_check(read, path, parsed, on_bad_rows, gz)


def csv_spec(delimiter: str, fmt: str = "csv"):
    columns = {c: k for c, k in CSV_KINDS.items() if k != "label"}
    data = {"format": fmt, "label": "y", "columns": columns, "delimiter": delimiter}
    return parse_table_spec(data, min_count=1, numeric_transform="none", quantile_buckets=2)


CSV_FILES = st.sampled_from([",", "\t"]).flatmap(lambda d: st.tuples(st.just(d), csv_rows(d.encode())))


@FUZZ
@given(file=CSV_FILES, block_size=BLOCK_SIZES, on_bad_rows=ON_BAD_ROWS, gz=COMPRESSION, min_rows=st.integers(1, 4))
# regressions the fuzzing found: an unterminated quote swallowing the rest of the file into one value (silently);
# a header that is not UTF-8 (UnicodeDecodeError); a header without a line end (no rows, not "empty"); a line
# that is not UTF-8 after an unterminated quote (named by pyarrow's row number, not its line); the same with a
# row of a wrong width between them; an unterminated quote in the last line
@example(file=(",", b'y,n,c,i\n1,2,"abc\n0,3,d,i\n'), block_size=1 << 16, on_bad_rows="skip", gz="", min_rows=1)
@example(file=(",", b"\x80y,n,c,i\n"), block_size=1 << 16, on_bad_rows="error", gz="", min_rows=1)
@example(file=(",", b"y,n,c,i"), block_size=1 << 16, on_bad_rows="error", gz="", min_rows=1)
@example(
    file=(",", b'y,n,c,i\n0,,,"ig\n0,,,"ig"\n0,,,ig\n0,,\x80'), block_size=1024, on_bad_rows="skip", gz="", min_rows=1
)
@example(
    file=(",", b'y,n,c,i\n0,,,ig\n"0,,,ig\n"0",,,ig\n0,,,ig,x\n0,,,ig\n0,,\x80,ig,x'),
    block_size=1 << 16,
    on_bad_rows="error",
    gz="",
    min_rows=1,
)
@example(file=(",", b'y,n,c,i\n0,,,"ig\n'), block_size=1 << 16, on_bad_rows="error", gz="", min_rows=1)
@example(file=(",", b'y,n,c,i\n0,,,ig\n"0,,,ig\n'), block_size=1 << 16, on_bad_rows="skip", gz="", min_rows=1)
def test_declared_csv_and_tsv_read_as_parsed_or_name_the_problem(
    file: tuple[str, bytes], block_size: int, on_bad_rows: str, gz: str, min_rows: int
) -> None:
    delimiter, content = file
    parsed = parse_csv(content, delimiter, list(CSV_KINDS), CSV_KINDS, block_size)
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), "log.csv" if delimiter == "," else "log.tsv", content, gz)

        def read(p, **kw):
            return read_table(p, csv_spec(delimiter), block_size=block_size, min_rows=min_rows, **kw)

        read_and_check(read, path, parsed, on_bad_rows, gz)


@st.composite
def parquet_columns(draw: st.DrawFn) -> tuple[list, list, list, list[pa.DataType]]:
    n = draw(st.integers(0, 8))
    kind = draw(st.sampled_from(["int", "float", "str"]))
    labels = {
        "int": st.sampled_from([0, 1, 2]),
        "float": st.sampled_from([0.0, 1.0, 0.5, None]),
        "str": st.sampled_from(["0", "1", "x", None]),
    }[kind]
    label = [draw(labels) for _ in range(n)]
    number_kind = draw(st.sampled_from(["float", "int", "str"]))
    numbers = {
        "float": st.one_of(st.none(), st.floats()),
        "int": st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1)),
        "str": st.one_of(st.none(), st.one_of(GOOD_NUMBERS, BAD_NUMBERS).map(lambda b: b.decode("latin-1"))),
    }[number_kind]
    numeric = [draw(numbers) for _ in range(n)]
    cat_kind = draw(st.sampled_from(["str", "binary", "large_binary", "int"]))
    cats = {
        "str": st.one_of(st.none(), st.text(max_size=6)),
        "binary": st.one_of(st.none(), st.binary(max_size=6)),
        "large_binary": st.one_of(st.none(), st.binary(max_size=6)),
        "int": st.one_of(st.none(), st.integers(-1000, 1000)),
    }[cat_kind]
    cat = [draw(cats) for _ in range(n)]
    types = [
        {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind],
        {"float": pa.float64(), "int": pa.int64(), "str": pa.string()}[number_kind],
        {"str": pa.string(), "binary": pa.binary(), "large_binary": pa.large_binary(), "int": pa.int64()}[cat_kind],
    ]
    return label, numeric, cat, types


@FUZZ
@given(
    columns=parquet_columns(),
    on_bad_rows=ON_BAD_ROWS,
    cut=st.sampled_from([0, 0, 0, 1, 17]),
    min_rows=st.integers(1, 4),
)
# regression the fuzzing found: bytes that are not UTF-8 in a large_binary column (ArrowInvalid)
@example(
    columns=([1], [1.5], [b"\x80"], [pa.int64(), pa.float64(), pa.large_binary()]),
    on_bad_rows="error",
    cut=0,
    min_rows=1,
)
def test_parquet_reads_as_written_or_names_the_problem(columns, on_bad_rows: str, cut: int, min_rows: int) -> None:
    label, numeric, cat, types = columns
    table = pa.table({"y": pa.array(label, types[0]), "n0": pa.array(numeric, types[1]), "c": pa.array(cat, types[2])})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=3)
    parsed = parse_values(("y", label), {"n0": numeric}, [cat])
    parsed.file_error = cut > 0  # a cut file has no footer
    spec = parse_table_spec(
        {"format": "parquet", "label": "y", "columns": {"n0": "numeric", "c": "categorical"}},
        min_count=1,
        numeric_transform="none",
        quantile_buckets=2,
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "log.parquet"
        data = buffer.getvalue()
        path.write_bytes(data[: len(data) - cut])

        def read(p, **kw):
            return read_table(p, spec, min_rows=min_rows, **kw)

        read_and_check(read, path, parsed, on_bad_rows)


@FUZZ
@given(content=criteo_rows(), block_size=BLOCK_SIZES, on_bad_rows=ON_BAD_ROWS, gz=COMPRESSION)
def test_criteo_text_prepares_to_the_parsed_values_or_names_the_problem(
    content: bytes, block_size: int, on_bad_rows: str, gz: str
) -> None:
    parsed = parse_criteo(content, block_size)
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), "day.txt", content, gz)
        changes = dict(block_size=block_size, on_bad_rows=on_bad_rows, min_count=1, numeric_transform="none")
        cfg = config_section("data", path=str(path), cache_dir=str(Path(d) / "cache"), **changes)
        prepare_and_check(cfg, path, parsed, INT_COLUMNS, CAT_COLUMNS, gz)


@FUZZ
@given(content=csv_rows(b","), block_size=BLOCK_SIZES, on_bad_rows=ON_BAD_ROWS, gz=COMPRESSION)
def test_declared_csv_prepares_to_the_parsed_values_or_names_the_problem(
    content: bytes, block_size: int, on_bad_rows: str, gz: str
) -> None:
    parsed = parse_csv(content, ",", list(CSV_KINDS), CSV_KINDS, block_size)
    with tempfile.TemporaryDirectory() as d:
        path = write(Path(d), "log.csv", content, gz)
        columns = {"n": "numeric", "c": "categorical", "i": "ignore"}
        declared = dict(format="csv", label={"name": "y"}, columns=columns, min_count=1, numeric_transform="none")
        changes = dict(block_size=block_size, on_bad_rows=on_bad_rows, **declared)
        cfg = config_section("data", path=str(path), cache_dir=str(Path(d) / "cache"), **changes)
        prepare_and_check(cfg, path, parsed, ["n"], ["c"], gz)


def corrupt_pages(data: bytes) -> bytes:
    return data[:4] + bytes(50) + data[54:]  # the first page header, after the magic bytes


@pytest.mark.parametrize(
    "n0, edit, message",
    [
        (pa.array([[1], [2]]), None, "column 'n0' holds list<element: int64>, not numbers, text or times"),
        (pa.array([{"a": 1}, {"a": 2}]), None, "column 'n0' holds struct<a: int64>, not numbers, text or times"),
        (pa.array([1.0, float("nan")]), None, "row 2, column n0: 'nan' is not a finite number"),
        (pa.array([1.0, 2.0]), corrupt_pages, "cannot read as Parquet from row 1 on"),
        (pa.array([2**64 - 1, 7], pa.uint64()), None, None),  # beyond 2**53: rounds, as a float feature does
    ],
)
def test_parquet_columns_that_cannot_be_read_name_the_column(tmp_path: Path, n0, edit, message) -> None:
    """Regressions: nested types and a corrupt page raised pyarrow's errors, NaN passed as a value, and a uint64
    beyond 2**53 failed to convert."""
    buffer = io.BytesIO()
    pq.write_table(pa.table({"y": [0, 1], "n0": n0, "c": ["a", "b"]}), buffer)
    path = tmp_path / "log.parquet"
    path.write_bytes(edit(buffer.getvalue()) if edit else buffer.getvalue())
    spec = parse_table_spec(
        {"format": "parquet", "label": "y", "columns": {"n0": "numeric", "c": "categorical"}},
        min_count=1,
        numeric_transform="none",
        quantile_buckets=2,
    )
    if message is None:
        (batch,) = read_table(path, spec)
        assert batch.ints.tolist() == [[float(2**64 - 1), 7.0]]
        return
    with pytest.raises(DataError) as e:
        list(read_table(path, spec))
    assert str(e.value).startswith(f"{path}") and message in str(e.value)


@pytest.mark.parametrize("cell, message", [(b"14102\x8000", "'14102\ufffd00' does not match format '%y%m%d%H'")])
def test_a_datetime_cell_that_is_not_utf8_is_a_bad_cell(tmp_path: Path, cell: bytes, message: str) -> None:
    """Regression: such a cell raised UnicodeEncodeError (its text was kept as surrogate escapes)."""
    path = tmp_path / "log.csv"
    path.write_bytes(b"y,when\n1,14102100\n0," + cell + b"\n")
    columns = {"when": {"kind": "datetime", "format": "%y%m%d%H"}}
    spec = parse_table_spec(
        {"format": "csv", "label": "y", "columns": columns}, min_count=1, numeric_transform="none", quantile_buckets=2
    )
    with pytest.raises(DataError, match=f"log.csv line 3, column when: {message}"):
        list(read_table(path, spec))


@pytest.mark.parametrize("name", ["day.txt", "log.csv", "log.parquet"])
def test_random_bytes_are_refused_without_echoing_them(tmp_path: Path, name: str) -> None:
    """A file of random bytes (every byte value, escape sequences included) fails with one printable line."""
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4 + b"\x1b[2J\x1b]0;title\x07")
    spec = csv_spec(",") if name.endswith("csv") else csv_spec(",", "parquet")
    read = read_criteo if name.endswith("txt") else lambda p, **kw: read_table(p, spec, **kw)
    for on_bad_rows in ("error", "skip"):
        with pytest.raises(DataError) as e:
            list(read(path, on_bad_rows=on_bad_rows))
        assert str(e.value).isprintable() and str(e.value).startswith(str(path))
