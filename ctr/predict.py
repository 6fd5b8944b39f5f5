"""Scoring new raw rows with a trained run, with or without their label column.

``python predict.py --run DIR --data FILE --out FILE [--carry COL ...] [--batch-size N]`` streams a raw file of the
run's data format into Parquet (or CSV when ``FILE`` ends in ``.csv``): ``row`` (the 0-based data row of the input),
``probability``, and the ``--carry`` columns copied from the input. The file is read, encoded and scored in chunks
of ``CHUNK_ROWS`` rows, so memory does not grow with it, and the output is written chunk by chunk to a temporary
file renamed at the end. ``SavedRun.predict(frame)`` scores a DataFrame or pyarrow Table held in memory.

Both go through :class:`Scorer`: the run's fitted encoder (a value unseen in the run's train data maps to the
out-of-vocabulary id), then eval-mode forward passes of ``batch_size`` rows. Bad rows follow the run's
``data.on_bad_rows``: ``error`` stops at the first, naming its line (or row) and column; ``skip`` leaves them out of
the file's output (the ``row`` numbers of the others are unchanged) and gives them NaN in a frame's result.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctr.data.criteo import MIN_BATCH_ROWS, BadRowReport, RawBatch, prefetch
from ctr.data.frame import as_table, frame_rows
from ctr.data.loader import iterate_batches, tensors_from_encoded
from ctr.data.prepare import progress_bar, raw_encoder, read_rows_of
from ctr.data.table import TableSpec
from ctr.errors import CTRError, DataError
from ctr.train.evaluation import predict_logits
from ctr.train.io import atomic_write
from ctr.types import Batch

if TYPE_CHECKING:
    from ctr.train.saved_run import SavedRun

CHUNK_ROWS = MIN_BATCH_ROWS  # rows read, encoded and scored at once (a text file's chunk ends at a block's end)
OUTPUT_COLUMNS = ("row", "probability")


class Scorer:
    """Raw rows -> click probabilities with a saved run.

    Args:
        run: the trained run.

    Attributes:
        encoder: the run's fitted encoder (built once: large vocabularies take a while to index).
        table: the declared table that raw rows are read as (None: the Criteo format); columns the training data
            did not have are ignored, since new data may add some (an id to carry, say).
    """

    def __init__(self, run: SavedRun) -> None:
        self.run = run
        self.encoder, table = raw_encoder(run.schema, run.path)
        self.table = None if table is None else dataclasses.replace(table, extra_columns="ignore")

    def probabilities(self, raw: RawBatch, batch_size: int | None = None) -> np.ndarray:
        """(N,) float64 click probabilities of the rows of ``raw``, in order, in forward passes of ``batch_size``
        rows (default: the run's ``train.eval_batch_size``)."""
        return self.score(self.encode(raw), batch_size)

    def encode(self, raw: RawBatch) -> Batch | None:
        """The rows of ``raw`` as model inputs (None when there are none)."""
        return tensors_from_encoded([self.encoder.transform(raw)], self.run.schema) if len(raw) else None

    def score(self, tensors: Batch | None, batch_size: int | None = None) -> np.ndarray:
        """(N,) float64 click probabilities of :meth:`encode`'s rows."""
        if tensors is None:
            return np.zeros(0)
        cfg = self.run.config.train
        batches = iterate_batches(tensors, batch_size or cfg.eval_batch_size, shuffle=False, seed=0, epoch=0)
        logits, _, _ = predict_logits(self.run.model, batches, self.run.device, cfg.precision)
        return 1.0 / (1.0 + np.exp(-logits))


def predict_frame(run: SavedRun, frame: Any, batch_size: int | None = None, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(N,) float64 click probabilities of the N rows of a DataFrame or pyarrow Table, in order; NaN for rows
    skipped as bad (``data.on_bad_rows: skip``). See :mod:`ctr.data.frame` for the columns it reads.

    Raises:
        DataError: a needed column is missing, or a bad row (with ``data.on_bad_rows: error``).
    """
    _check_batch_size(batch_size)
    scorer = run.scorer
    data = as_table(frame)
    prob = np.full(data.num_rows, np.nan)
    report = BadRowReport()
    codec = scorer.encoder.codec
    for raw in frame_rows(data, scorer.table, codec, run.config.data.on_bad_rows, report, chunk_rows):
        prob[raw.lines] = scorer.probabilities(raw, batch_size)
    if report.count:
        print(f"ctr.data: {report.summary()}", file=sys.stderr)
    return prob


def predict_file(
    run: SavedRun,
    data: str | Path,
    out: str | Path,
    carry: Sequence[str] = (),
    batch_size: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    block_size: int | None = None,
    progress: bool = True,
) -> int:
    """Score every good row of a raw file of the run's data format, with or without its label column, into ``out``.

    Args:
        run: the trained run.
        data: the raw file (any file the run's data format reads: Criteo text with 40 or 39 columns, a declared
            CSV/TSV or Parquet table with or without its label column; ``.gz`` works).
        out: Parquet, or CSV when it ends in ``.csv``: ``row``, ``probability`` and the ``carry`` columns.
        carry: columns of ``data`` copied into ``out`` (as text from text files, as stored from Parquet).
        batch_size: rows per forward pass (default: the run's ``train.eval_batch_size``).
        chunk_rows: rows read, encoded and scored at once.
        block_size: bytes per read block of a text file (default: the run's ``data.block_size``).
        progress: a tqdm bar on stderr.

    Returns:
        The number of rows written.

    Raises:
        DataError: no such file or column, a bad row (with ``data.on_bad_rows: error``), or no good row.
        CTRError: a carried column has the name of an output column, or a bad ``batch_size``.
    """
    _check_batch_size(batch_size)
    data, out = Path(data), Path(out)
    if not data.is_file():
        raise DataError(f"{data}: file not found")
    for name in carry:
        if name in OUTPUT_COLUMNS:
            raise CTRError(f"--carry {name}: the output has its own {name!r} column; carry other columns")
    scorer = run.scorer
    cfg = run.config.data
    report = BadRowReport()
    read = dict(
        block_size=block_size or cfg.block_size,
        on_bad_rows=cfg.on_bad_rows,
        report=report,
        codec=scorer.encoder.codec,
        min_rows=chunk_rows,
        require_label=False,
        carry=tuple(dict.fromkeys(carry)),
    )
    first = first_data_line(scorer.table)
    written = 0

    def write(tmp: str) -> None:
        nonlocal written
        with (
            _PredictionSink(tmp, out.suffix == ".csv", carry) as sink,
            progress_bar(progress, f"predict {data.name}") as bar,
            closing(read_rows_of(data, scorer.table, **read)) as batches,
        ):
            # a chunk is read and encoded in a background thread while the one before is scored
            for raw, tensors in prefetch(((raw, scorer.encode(raw)) for raw in batches), depth=1):
                sink.write(raw.lines - first, scorer.score(tensors, batch_size), raw.carry)
                written += len(raw)
                bar.update(len(raw))
        if report.count:
            if written == 0:
                raise DataError(f"{data}: no row could be scored; {report.summary()}")
            print(f"ctr.data: {report.summary()}", file=sys.stderr)

    atomic_write(out, write)
    return written


def first_data_line(table: TableSpec | None) -> int:
    """The number the readers give a file's first data row: 2 in a CSV file with a header line, else 1."""
    return 2 if table is not None and table.format == "csv" and table.header else 1


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise CTRError(f"batch size must be >= 1, got {batch_size}")


class _PredictionSink:
    """Chunks of predictions appended to a Parquet or CSV file. Carried text columns are written as UTF-8 strings
    (bytes that are not UTF-8 replaced), other carried columns as they are."""

    def __init__(self, path: str, csv: bool, carry: Sequence[str]) -> None:
        self.path, self.csv, self.carry = path, csv, list(dict.fromkeys(carry))
        self.writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def __enter__(self) -> _PredictionSink:
        return self

    def write(self, rows: np.ndarray, prob: np.ndarray, carried: pa.Table | None) -> None:
        """(N,) int64 0-based row numbers, (N,) probabilities and the N rows of the carried columns."""
        columns = {"row": pa.array(rows, pa.int64()), "probability": pa.array(prob, pa.float64())}
        for name in self.carry:
            columns[name] = _as_output(carried.column(name))
        self._append(pa.table(columns))

    def _append(self, table: pa.Table) -> None:
        if self.writer is None:
            cls = pacsv.CSVWriter if self.csv else pq.ParquetWriter
            self.writer = cls(self.path, table.schema)
        self.writer.write_table(table)

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.writer is None and exc_type is None:  # no rows: a file with the columns and no row
            empty = {"row": pa.array([], pa.int64()), "probability": pa.array([], pa.float64())}
            self._append(pa.table({**empty, **{name: pa.array([], pa.string()) for name in self.carry}}))
        if self.writer is not None:
            self.writer.close()


def _as_output(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """A carried column as written: text read as bytes becomes UTF-8 strings, anything else is kept."""
    if not pa.types.is_binary(column.type):
        return column
    try:
        return column.cast(pa.string())
    except pa.ArrowInvalid:  # bytes that are not UTF-8
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in column.to_pylist()], pa.string())
