"""Raw rows held in memory (a pandas DataFrame or a pyarrow Table) as :class:`ctr.data.criteo.RawBatch` es, checked
as the rows of a file of the same format are.

Columns are found by name: for the Criteo format ``I1 .. I13`` and ``C1 .. C26`` (``label`` optional), for a
declared table its declared columns (the label, group and weight optional); other columns are ignored. A value may
be a number or text; a missing value is a null, a NaN or an empty string. ``RawBatch.lines`` holds each row's
0-based position in the frame, and a bad row is named by it (``frame row 2, column I3: '1.5' is not an integer``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ctr.data.criteo import (
    COLUMNS,
    FEATURE_COLUMNS,
    LABEL,
    MIN_BATCH_ROWS,
    BadRowReport,
    KeyCodec,
    RawBatch,
    _check_batch,
    _convert_stream,
    _InvalidRows,
    _LineState,
)
from ctr.data.table import TableSpec, _as_bytes, _check_columns, _convert
from ctr.errors import DataError

FRAME = "frame"  # how problems name the rows' source


def as_table(frame: Any) -> pa.Table:
    """A pandas DataFrame, pyarrow Table or RecordBatch as a pyarrow Table (the DataFrame's index is dropped).

    Raises:
        TypeError: ``frame`` is none of those.
        DataError: a DataFrame column holds values Arrow cannot hold in one column (e.g. numbers mixed with text).
    """
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    if isinstance(frame, pd.DataFrame):
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise DataError(f"{FRAME}: {str(e).splitlines()[0]}") from None
    raise TypeError(f"expected a pandas DataFrame or a pyarrow Table, got {type(frame).__name__}")


def frame_rows(
    frame: Any,
    table: TableSpec | None,
    codec: KeyCodec,
    on_bad_rows: str = "error",
    report: BadRowReport | None = None,
    chunk_rows: int = MIN_BATCH_ROWS,
) -> Iterator[RawBatch]:
    """The good rows of ``frame`` in batches of ``chunk_rows`` rows (fewer where bad rows are skipped).

    Args:
        frame: a pandas DataFrame or a pyarrow Table of raw columns (see the module docstring).
        table: the declared table the columns are read as, or None for the Criteo format.
        codec: maps categorical values to keys (the encoder's, so that keys match its vocabularies).
        on_bad_rows: ``"error"`` (the first bad row raises :class:`DataError`) or ``"skip"`` (counted in
            ``report``).
        report: receives skipped rows (a fresh one is used if None).
        chunk_rows: rows converted at once.

    Raises:
        DataError: a needed column is missing (naming it and listing the frame's columns), or a bad row.
    """
    data = as_table(frame)
    report = report if report is not None else BadRowReport()
    present = data.column_names
    if table is None:
        names = COLUMNS if LABEL in present else FEATURE_COLUMNS
        missing = [c for c in names if c not in present]
        if missing:
            raise DataError(
                f"{FRAME}: no column {missing[0]!r} of the Criteo format; the frame has: {', '.join(present)}"
            )
    else:
        _check_columns(FRAME, dataclasses.replace(table, extra_columns="ignore"), present, require_label=False)
        names = [c for c in table.read_columns if c in present]
    for start in range(0, data.num_rows, chunk_rows):
        part = data.slice(start, chunk_rows).select(names)
        if table is None:
            yield _criteo_rows(part, start, codec, on_bad_rows, report)
        else:
            lines = start + np.arange(part.num_rows, dtype=np.int64)
            yield _convert(FRAME, part, lines, table, codec, [], on_bad_rows, report, "row")


def _criteo_rows(part: pa.Table, start: int, codec: KeyCodec, on_bad_rows: str, report: BadRowReport) -> RawBatch:
    """Rows of the Criteo columns, as their text, through the checks and conversion of the Criteo file reader."""
    text = pa.RecordBatch.from_arrays([_as_bytes(part.column(c)) for c in part.column_names], names=part.column_names)
    state = _LineState(next_line=start)
    checked = _check_batch(
        FRAME, [text], _InvalidRows(), state, on_bad_rows, report, final=True, names=part.column_names, unit="row"
    )
    [batch] = _convert_stream(iter([checked]), codec)
    return batch
