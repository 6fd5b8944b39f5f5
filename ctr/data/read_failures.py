"""Failures of pyarrow's text reader and of decompression, as :class:`DataError` s that name the file and line.

pyarrow's own messages are never passed on raw: they can quote a whole line of the file (control characters,
bytes that are not UTF-8, megabytes of one field), and they count rows, not the lines a user can look up.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ctr.errors import DataError, printable

READ_FAILURES = (pa.ArrowException, OSError)  # what pyarrow's reader raises for unreadable text or compression
_WIDTH_ERROR = re.compile(r"Row #(\d+): Expected (\d+) columns, got (\d+)")
_BOM = "\xef\xbb\xbf"  # a UTF-8 byte order mark, as latin-1 text
SPANNING_REASON = "a quoted value holds a line break (an unterminated quote?); values cannot span lines"


def read_error(path: Path, error: BaseException, line: int, block_size: int) -> DataError:
    """The DataError for ``error``, raised by pyarrow's streaming reader after it handed over every line before
    ``line`` (1-based; a header counts), each a row of its own (Criteo text: no quoting)."""
    message = str(error)
    width = _WIDTH_ERROR.search(message)
    if width is not None:
        return DataError(f"{path} line {width[1]}: {_not_utf8(width[2], width[3])}")
    if "straddl" in message:  # a row does not fit in one block
        return DataError(f"{path} line {line}: {_too_long(block_size)}")
    if isinstance(error, OSError):  # the decompressing stream (which reads ahead of the lines handed over)
        if "runcated" in message:
            return DataError(f"{path}: the file is truncated (its compressed data ends early)")
        return DataError(f"{path}: cannot decompress the file ({printable(message)})")
    if "Empty CSV file" in message:
        return DataError(f"{path}: the file is empty (a header line is expected)")
    return DataError(f"{path} line {line}: cannot read as delimited text ({printable(message.splitlines()[0])})")


def csv_read_error(
    path: Path, error: BaseException, line: int, block_size: int, delimiter: str, names: list[str], on_bad_rows: str
) -> DataError:
    """:func:`read_error` for a CSV file, ``line`` being the first line after the rows handed over and checked.

    pyarrow numbers rows, not lines (a quoted value may run over lines), and a row too long for a block has no
    number at all; so the rows from ``line`` on are read again, by Python's csv module (whose quoting pyarrow's
    matches), up to the one pyarrow failed on. A row before it that runs over several lines or (unless skipping)
    has a wrong width is the file's first problem, and is reported instead.
    """
    message = str(error)
    width = _WIDTH_ERROR.search(message)
    if width is None and "straddl" not in message:
        return read_error(path, error, line, block_size)
    failing = None if width is None else int(width[1]) - line + 1  # pyarrow's row, counted from ``line``
    found = _find_row(path, delimiter, len(names), line, failing, block_size, on_bad_rows == "skip")
    if found is None:  # the file could not be read again: pyarrow's own numbers
        return read_error(path, error, line, block_size)
    at, cells, is_failing = found
    broken = [j for j, c in enumerate(cells) if "\n" in c or "\r" in c]
    if broken:
        column = f", column {names[broken[0]]}" if len(cells) == len(names) else ""
        return DataError(f"{path} line {at}{column}: {SPANNING_REASON}")
    if width is not None and is_failing:
        return DataError(f"{path} line {at}: {_not_utf8(width[2], width[3])}")
    if cells and len(cells) != len(names):  # an earlier row of a wrong width (not skipping)
        reason = f"expected {len(names)} columns, got {len(cells)}"
        return DataError(f"{path} line {at}: {reason} (set data.on_bad_rows=skip to skip bad rows)")
    return DataError(f"{path} line {at}: {_too_long(block_size)}")


def _not_utf8(expected: str, got: str) -> str:
    # a row of the wrong width that pyarrow could not hand to the invalid-row handler: its text is not UTF-8
    return f"expected {expected} columns, got {got}, in a line that is not UTF-8 text (such a line cannot be skipped)"


def _too_long(block_size: int) -> str:
    return f"the line is longer than data.block_size ({block_size} bytes); raise data.block_size"


def _find_row(
    path: Path, delimiter: str, width: int, line: int, failing: int | None, block_size: int, skip: bool
) -> tuple[int, list[str], bool] | None:
    """The line and cells of the first row from line ``line`` on that runs over several lines, has a wrong width
    (unless ``skip``), is the ``failing``-th (then True), or (``failing`` None) may not fit in a block; None when
    there is none or the file cannot be read again. Cells hold the row's bytes as latin-1 characters."""
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(max(limit, 4 * block_size))  # a field may be as long as a block, and more
        with pa.input_stream(str(path), compression="detect") as raw:
            text = io.TextIOWrapper(raw, encoding="latin-1", newline="")  # each byte a character; lines as pyarrow's
            lines = itertools.islice(text, line - 1, None)
            if line == 1:
                lines = (t.removeprefix(_BOM) if i == 0 else t for i, t in enumerate(lines))
            size = [0]

            def counted() -> Iterator[str]:
                for t in lines:
                    size[0] += len(t)
                    yield t

            reader = csv.reader(counted(), delimiter=delimiter, strict=False)
            start = line
            for n, cells in enumerate(reader, 1):
                end = line - 1 + reader.line_num
                spans = end > start or any("\n" in c or "\r" in c for c in cells)
                wrong = bool(cells) and len(cells) != width and not skip
                long = failing is None and size[0] + 1 >= block_size
                if spans or wrong or long or n == failing:
                    return start, cells, n == failing
                start, size[0] = end + 1, 0
    except (*READ_FAILURES, csv.Error):
        pass
    finally:
        csv.field_size_limit(limit)
    return None
