"""Raw click logs (Criteo text, or a declared CSV/TSV/Parquet table) -> cached, encoded Parquet splits plus
``schema.json``.

Command line: ``python prepare.py [--config FILE ...] [--data PATH] [--set KEY=VALUE ...]``.

``prepare_data(cfg)`` makes two streaming passes with bounded memory:

1. **fit**: parse the raw file once (:func:`ctr.data.criteo.read_criteo` or :func:`ctr.data.table.read_table`),
   assign each row to a split, factorize
   each categorical column per batch, fit the encoders on train rows (counting each distinct value once per
   batch), and append the parsed, factorized rows to a compact temporary file, so pass 2 parses no text;
2. **encode**: stream the temporary file through the fitted encoders (one vocabulary lookup per distinct value
   per batch) into ``<split>.parquet`` (row groups of ``ROW_GROUP_ROWS``, written on a background thread).

For a directory with train/valid/test files, pass 1 reads the train file, and the valid and test files are
encoded straight from text in pass 2.

Everything is written into a temporary directory that is renamed to its final name at the very end, so an
interrupted run never leaves a directory that looks complete. The final directory name holds a hash of the
source fingerprint and of the options that change the output, so a later run with the same data and options
reuses it.

Source fingerprint: for each raw file its size, mtime (ns) and the SHA-256 of its first and last MiB.

Output directory::

    schema.json                 Schema.to_json: fields and fitted stats, options, source, rows, bad rows
    train.parquet, valid.parquet, test.parquet
        <field>            int32 id for id fields (in [0, vocab_size))
        <field>            float32 for dense fields, plus <field>__missing (bool)
        label              int8 (0/1)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctr.config import DataConfig
from ctr.data.cache_claim import TEMP_PREFIX, Claim, remove_stale_temp_dirs, write_owner
from ctr.data.criteo import CAT_COLUMNS, INT_COLUMNS, BadRowReport, KeyCodec, RawBatch, prefetch, read_criteo
from ctr.data.encoders import EncodedBatch, FactorizedBatch, TableEncoder, factorize_batch
from ctr.data.split import SPLITS, assign_splits, find_split_files
from ctr.data.table import TableSpec, parse_table_spec, read_table
from ctr.errors import CTRError, DataError, printable, quoted
from ctr.types import Field, Schema, name_problem

if TYPE_CHECKING:  # torch is imported only where tensors are made (encode_raw)
    from ctr.types import Batch

PREPARE_VERSION = 2  # bump when the prepared layout or an encoder changes: old caches are then ignored
ROW_GROUP_ROWS = 1 << 16
FINGERPRINT_BYTES = 1 << 20
SCHEMA_FILE = "schema.json"
GROUP_COLUMN = "__group"  # prepared splits of tables with data.group: the int64 group key of each row
WEIGHT_COLUMN = "__weight"  # prepared splits of tables with data.weight: the float32 example weight of each row


@dataclass
class PreparedData:
    """A prepared (cached) data directory and its schema."""

    dir: Path
    schema: Schema

    def path(self, split: str) -> Path:
        """The Parquet file of ``split``."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.dir / f"{split}.parquet"

    @classmethod
    def open(cls, directory: str | Path) -> PreparedData:
        """A prepared directory written by :func:`prepare_data` (e.g. found through a run's saved schema)."""
        directory = Path(directory)
        schema = Schema.from_json(directory / SCHEMA_FILE)
        for split in SPLITS:
            if not (directory / f"{split}.parquet").is_file():
                raise DataError(f"{directory}: {split}.parquet is missing; not a prepared data directory")
        return cls(directory, schema)


# ------------------------------------------------------------------------------------------------ configuration


def fingerprint_file(path: Path) -> dict[str, Any]:
    """Size, mtime (ns) and SHA-256 of the first and last ``FINGERPRINT_BYTES`` of a file."""
    st = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if st.st_size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": digest.hexdigest()}


def preparation_options(cfg: DataConfig, directory: bool) -> dict[str, Any]:
    """The options that change prepared data (and so the cache key); block size and loader options do not."""
    opts: dict[str, Any] = {
        "version": PREPARE_VERSION,
        "min_count": cfg.min_count,
        "numeric_transform": cfg.numeric_transform,
        "on_bad_rows": cfg.on_bad_rows,
    }
    table = table_spec(cfg)
    if table is not None:  # Criteo's layout is fixed; a declared table's declaration is part of the output
        opts["table"] = table.to_dict()
    if cfg.numeric_transform == "quantile_bucket":
        opts["quantile_buckets"] = cfg.quantile_buckets
    if not directory:
        opts["split_seed"] = cfg.split_seed
        opts["split"] = [float(s) for s in cfg.split]
    return opts


def table_spec(cfg: DataConfig | dict[str, Any]) -> TableSpec | None:
    """The declared table of a data config (or of a saved schema's options); None for the Criteo format."""
    if isinstance(cfg, dict):
        if "table" not in cfg:
            return None
        return parse_table_spec(cfg["table"], min_count=0, numeric_transform="none", quantile_buckets=2)
    if cfg.format == "criteo":
        return None
    return parse_table_spec(
        cfg, min_count=cfg.min_count, numeric_transform=cfg.numeric_transform, quantile_buckets=cfg.quantile_buckets
    )


def read_rows_of(path: Path, table: TableSpec | None, **read: Any) -> Iterator[RawBatch]:
    """The good rows of a raw file: Criteo's reader, or the declared table's."""
    return read_criteo(path, **read) if table is None else read_table(path, table, **read)


def resolve_source(cfg: DataConfig) -> tuple[Path, dict[str, Path]]:
    """The raw path (the bundled sample when ``cfg.path`` is None) and its files: ``{"all": file}`` or per split."""
    if cfg.path is None:
        from ctr.data.generate import default_data_path

        raw = default_data_path()
    else:
        raw = Path(cfg.path).expanduser()
    if raw.is_dir():
        return raw, find_split_files(raw)
    if not raw.is_file():
        raise DataError(f"data.path {raw}: no such file or directory")
    return raw, {"all": raw}


def cache_root(cfg: DataConfig, raw: Path) -> Path:
    """``cfg.cache_dir``, else ``.ctr_cache`` beside the raw file (inside a split directory)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return (raw if raw.is_dir() else raw.parent) / ".ctr_cache"


# ---------------------------------------------------------------------------------------------------- prepare


def prepare_data(cfg: DataConfig, progress: bool = True) -> PreparedData:
    """Prepare (or reuse the cached preparation of) the data described by ``cfg``.

    Args:
        cfg: data options; ``cfg.path`` is a raw Criteo file (split by ``split_seed``/``split``), a directory with
            train/valid/test files, or None for the bundled generated sample.
        progress: tqdm bars on stderr.

    Returns:
        PreparedData with the directory and its Schema.

    Raises:
        DataError: unreadable or malformed input (with file, line and column), or no usable rows.
    """
    raw, files = resolve_source(cfg)
    options = preparation_options(cfg, directory="all" not in files)
    source = {
        "path": str(raw.resolve()),
        "kind": "file" if "all" in files else "directory",
        "files": {k: {"name": p.name, **fingerprint_file(p)} for k, p in files.items()},
        "fingerprint": "size, mtime_ns and sha256 of the first and last MiB of each file",
    }
    key_text = json.dumps({"files": source["files"], "options": options}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    root = cache_root(cfg, raw)
    final = root / f"{raw.name}-{key}"
    if (final / SCHEMA_FILE).is_file():
        _log(progress, f"using prepared data {final}")
        return PreparedData.open(final)
    tmp = root / f"{TEMP_PREFIX}{raw.name}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    claim = Claim(root / f".{raw.name}-{key}.lock", lambda pid: _log(progress, f"waiting for process {pid}"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        claim.acquire()
    except OSError as e:
        raise DataError(
            f"cannot write prepared data under {root} ({e.strerror}); set data.cache_dir to a writable directory"
        ) from None
    try:  # one preparation of this cache at a time: a process that waited here reuses the holder's cache
        if (final / SCHEMA_FILE).is_file():
            _log(progress, f"using prepared data {final}")
            return PreparedData.open(final)
        for stale in remove_stale_temp_dirs(root):
            _log(progress, f"removed {stale.name}, left by a preparation that was killed")
        schema = _prepare_into(tmp, final, files, cfg, source, options, progress)
    finally:
        claim.release()
    _log(progress, f"prepared {', '.join(f'{s} {n:,}' for s, n in schema.rows.items())} rows into {final}")
    return PreparedData(final, schema)


def _prepare_into(
    tmp: Path,
    final: Path,
    files: dict[str, Path],
    cfg: DataConfig,
    source: dict[str, Any],
    options: dict[str, Any],
    progress: bool,
) -> Schema:
    """:func:`write_prepared` into the temporary directory ``tmp`` (owned by this process), made durable and then
    renamed to ``final``; on any failure ``tmp`` is removed, so no half-written directory is ever reused.

    Raises:
        CTRError: writing failed (a full disk, a quota, a read-only file system), naming ``final``.
    """
    try:
        tmp.mkdir()
        write_owner(tmp)
        schema = write_prepared(tmp, files, cfg, source, options, progress)
        _sync_tree(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another host's process (no shared lock) finished first: keep its cache
            if not (final / SCHEMA_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return PreparedData.open(final).schema
    except OSError as e:  # the readers turn every read failure into a DataError: this one is the cache's
        shutil.rmtree(tmp, ignore_errors=True)
        reason = os.strerror(e.errno) if e.errno else printable(str(e))
        full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a full disk, or over quota
        hint = "free some space" if full else "check that it is writable"
        raise CTRError(f"{final}: cannot write the prepared data ({reason}); {hint} or set data.cache_dir") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return schema


def _sync_tree(directory: Path) -> None:
    """fsync every file of ``directory`` and the directory itself, so that after the rename a crash cannot leave a
    complete-looking cache whose files were never written to disk."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if os.name == "posix":  # directories cannot be opened for fsync elsewhere
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_prepared(
    out: Path,
    files: dict[str, Path],
    cfg: DataConfig,
    source: dict[str, Any],
    options: dict[str, Any],
    progress: bool = False,
) -> Schema:
    """The two passes: fit on train (keeping parsed rows in a temporary file), then encode every split to Parquet."""
    codec = KeyCodec()
    table = table_spec(cfg)
    if table is None:
        encoder = TableEncoder.criteo(cfg.min_count, cfg.numeric_transform, cfg.quantile_buckets, codec)
    else:
        encoder = TableEncoder.for_table(table, codec)
    report = BadRowReport()
    rows = {s: 0 for s in SPLITS}
    read = dict(block_size=cfg.block_size, on_bad_rows=cfg.on_bad_rows, report=report, codec=codec)

    # pass 1: fit on train rows; keep the parsed rows (and their split) in a temporary file
    single = "all" in files
    first = files["all"] if single else files["train"]
    first_print = source["files"]["all" if single else "train"]
    if single and table is not None and table.time_column is not None:
        with unchanged(first, first_print):
            options["time_thresholds"] = time_thresholds(first, table, cfg.split, read, progress)
    inter = out / ".rows.tmp"
    with (
        unchanged(first, first_print),
        open(inter, "wb") as sink,
        progress_bar(progress, f"fit {first.name}") as bar,
        closing(read_rows_of(first, table, **read)) as raw,
    ):
        for raw_batch in raw:
            split = assign_rows(raw_batch, options) if single else np.zeros(len(raw_batch), np.int8)
            batch = factorize_batch(raw_batch)
            write_rows(sink, batch, split)
            encoder.partial_fit_factorized(batch, split == 0 if single else None)
            counts = np.bincount(split, minlength=len(SPLITS))
            for s, name in enumerate(SPLITS):
                rows[name] += int(counts[s])
            bar.update(len(batch))
    if rows["train"] == 0:
        detail = f"; {report.summary()}" if report.count else ""
        raise DataError(f"{first}: no train rows{detail}")
    empty = [s for s in SPLITS if single and rows[s] == 0]
    if empty and "time_thresholds" in options:
        raise DataError(
            f"{first}: the temporal split leaves no {empty[0]} rows (too few distinct values of "
            f"{table.time_column!r} for the fractions {cfg.split}); change data.split or use the line split"
        )
    fields = encoder.finish()

    # pass 2: encode the kept rows into the split files (and, for a directory, the valid and test files)
    wanted = SPLITS if single else ("train",)
    group = table is not None and table.group is not None
    weight = table is not None and table.weight is not None
    with (
        _ParquetSplits(out, fields, wanted, group, weight) as writers,
        progress_bar(progress, "encode", sum(rows.values())) as bar,
        closing(read_rows(inter)) as kept,
    ):
        for batch, split in kept:
            writers.write(encoder.transform_factorized(batch), split)
            bar.update(len(batch))
    inter.unlink()
    for split in SPLITS:
        if split not in wanted:
            with (
                unchanged(files[split], source["files"][split]),
                _ParquetSplits(out, fields, (split,), group, weight) as writers,
                progress_bar(progress, f"encode {split}") as bar,
                closing(read_rows_of(files[split], table, **read)) as batches,
            ):
                for batch in batches:
                    writers.write(encoder.transform(batch), None)
                    bar.update(len(batch))
    rows = _parquet_rows(out)
    if report.count:
        print(f"ctr.data: {report.summary()}", file=sys.stderr)
    schema = Schema(fields=fields, config=options, source=source, rows=rows, bad_rows=report.to_dict())
    schema.to_json(out / SCHEMA_FILE)
    return schema


@contextmanager
def unchanged(path: Path, before: dict[str, Any]) -> Iterator[None]:
    """A block that reads the raw file ``path``, after which (and after a failure to read it) the file must still
    have the fingerprint ``before``, taken when preparation started: rows of a file that grew, shrank or was
    rewritten meanwhile would mix two versions of it under a cache key of neither.

    Raises:
        DataError: the file changed or was removed (this replaces a read error that the change explains).
    """
    try:
        yield
    except DataError:
        check_unchanged(path, before)
        raise
    check_unchanged(path, before)


def check_unchanged(path: Path, before: dict[str, Any]) -> None:
    """Raise DataError unless ``path`` still has the fingerprint ``before`` (see :func:`fingerprint_file`)."""
    try:
        now = fingerprint_file(path)
    except OSError:
        raise DataError(f"{path}: the file was removed while it was being prepared") from None
    changes = [f"size {before['size']:,} -> {now['size']:,} bytes"] if now["size"] != before["size"] else []
    changes += ["modification time"] if now["mtime_ns"] != before["mtime_ns"] else []
    changes += ["contents"] if now["head_tail_sha256"] != before["head_tail_sha256"] else []
    if changes:
        raise DataError(
            f"{path}: the file changed while it was being prepared ({', '.join(changes)}); "
            "prepare it again once nothing writes to it"
        )


# ----------------------------------------------------------------------------------------- intermediate file


_INT32 = np.iinfo(np.int32)


def _narrowest(size: int) -> type:
    """The smallest unsigned dtype whose values index ``size`` items."""
    return np.uint8 if size <= 1 << 8 else np.uint16 if size <= 1 << 16 else np.uint32


def write_rows(sink: Any, batch: FactorizedBatch, split: np.ndarray) -> None:
    """Append parsed rows to pass 1's temporary file, as raw little-endian arrays (a private format, kept small).

    Each batch is a header (int64: n, bytes per numeric value, numeric rows Fi, categorical columns Fc, 1 when
    a group column follows, the rows M of stacked multi-valued keys, 1 when weights follow, then the Fc uniques'
    lengths), then split (n int8), label (n int8), the group keys (n int64, if any), the multi-valued keys (M x n
    int64), the weights (n float64, if any), ints (Fi x n: int32 when they are integers that
    fit, else int64 or float64), int_missing (Fi rows of n bits), per categorical column its codes (n values of
    the narrowest unsigned type) and its uniques.
    """
    n = len(batch)
    if n == 0:
        return
    ints = batch.ints
    if ints.dtype.kind == "i" and ints.size and _INT32.min <= ints.min() and ints.max() <= _INT32.max:
        ints = ints.astype(np.int32)
    width = -8 if ints.dtype.kind == "f" else ints.itemsize  # negative: float64
    sizes = [len(u) for u in batch.uniques]
    has_group = int(batch.group is not None)
    multi_rows = 0 if batch.multi is None else len(batch.multi)
    has_weight = int(batch.weight is not None)
    header = [n, width, len(ints), len(sizes), has_group, multi_rows, has_weight, *sizes]
    sink.write(np.array(header, dtype=np.int64).tobytes())
    sink.write(np.ascontiguousarray(split).data)
    sink.write(np.ascontiguousarray(batch.label).data)
    if has_group:
        sink.write(np.ascontiguousarray(batch.group, dtype=np.int64).data)
    if multi_rows:
        sink.write(np.ascontiguousarray(batch.multi, dtype=np.int64).data)
    if has_weight:
        sink.write(np.ascontiguousarray(batch.weight, dtype=np.float64).data)
    sink.write(np.ascontiguousarray(ints).data)
    sink.write(np.ascontiguousarray(np.packbits(batch.int_missing, axis=1, bitorder="little")).data)
    for codes, uniques in zip(batch.codes, batch.uniques):
        sink.write(np.ascontiguousarray(codes, dtype=_narrowest(len(uniques))).data)
        sink.write(np.ascontiguousarray(uniques).data)


def read_rows(path: Path) -> Iterator[tuple[FactorizedBatch, np.ndarray]]:
    """The batches written by :func:`write_rows`, with their (N,) int8 splits (read one batch ahead)."""

    def batches() -> Iterator[tuple[FactorizedBatch, np.ndarray]]:
        with open(path, "rb") as f:
            while head := f.read(8 * 7):
                n, width, n_int, n_cat, has_group, multi_rows, has_weight = np.frombuffer(head, np.int64).tolist()
                sizes = np.fromfile(f, np.int64, n_cat).tolist()
                split = np.fromfile(f, np.int8, n)
                label = np.fromfile(f, np.int8, n)
                group = np.fromfile(f, np.int64, n) if has_group else None
                multi = np.fromfile(f, np.int64, multi_rows * n).reshape(multi_rows, n) if multi_rows else None
                weight = np.fromfile(f, np.float64, n) if has_weight else None
                dtype = {4: np.int32, 8: np.int64, -8: np.float64}[width]
                ints = np.fromfile(f, dtype, n_int * n).reshape(n_int, n)
                ints = ints.astype(np.int64) if width == 4 else ints
                bits = np.fromfile(f, np.uint8, n_int * ((n + 7) // 8)).reshape(n_int, (n + 7) // 8)
                missing = np.unpackbits(bits, axis=1, count=n, bitorder="little").view(np.bool_)
                codes, uniques = [], []
                for size in sizes:
                    codes.append(np.fromfile(f, _narrowest(size), n))
                    uniques.append(np.fromfile(f, np.int64, size))
                yield FactorizedBatch(label, ints, missing, codes, uniques, group, multi, weight), split

    return prefetch(batches())


# ---------------------------------------------------------------------------------------------------- parquet


def parquet_schema(fields: Sequence[Field], group: bool = False, weight: bool = False) -> pa.Schema:
    """Columns of a prepared split: ids int32, dense float32 plus ``__missing`` bool, multi-valued fields as
    fixed-size lists of ``max_len`` int32 ids (-1 after the last value), ``label`` int8, and with ``group`` the
    int64 group keys ``__group``, with ``weight`` the float32 example weights ``__weight``; no nulls."""
    cols = [pa.field(f.name, pa.int32(), nullable=False) for f in fields if f.encoding == "id"]
    for f in fields:
        if f.encoding == "dense":
            cols += [
                pa.field(f.name, pa.float32(), nullable=False),
                pa.field(f"{f.name}__missing", pa.bool_(), nullable=False),
            ]
    for f in fields:
        if f.encoding == "multi":
            cols.append(pa.field(f.name, pa.list_(pa.int32(), int(f.stats["max_len"])), nullable=False))
    cols.append(pa.field("label", pa.int8(), nullable=False))
    if group:
        cols.append(pa.field(GROUP_COLUMN, pa.int64(), nullable=False))
    if weight:
        cols.append(pa.field(WEIGHT_COLUMN, pa.float32(), nullable=False))
    return pa.schema(cols)


class _ParquetSplits:
    """``<split>.parquet`` writers fed with encoded rows; row groups of ``ROW_GROUP_ROWS`` written on a thread."""

    def __init__(self, out: Path, fields: Sequence[Field], splits: Sequence[str], group: bool, weight: bool) -> None:
        self.out = out
        self.splits = list(splits)
        self.schema = parquet_schema(fields, group, weight)
        self.id_names = [f.name for f in fields if f.encoding == "id"]
        self.dense_names = [f.name for f in fields if f.encoding == "dense"]
        self.multi_lens = [(f.name, int(f.stats["max_len"])) for f in fields if f.encoding == "multi"]
        self._pending: dict[str, list[EncodedBatch]] = {s: [] for s in self.splits}
        self._have = {s: 0 for s in self.splits}
        self.rows = {s: 0 for s in self.splits}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._files: list[pa.NativeFile] = []
        self._pool = ThreadPoolExecutor(1)
        self._inflight: list[Future] = []

    def __enter__(self) -> _ParquetSplits:
        for s in self.splits:
            # an OSFile sink, not a path: the faster writer (docs/benchmarks.md); nobody reads column statistics
            self._files.append(pa.OSFile(str(self.out / f"{s}.parquet"), "wb"))
            self._writers[s] = pq.ParquetWriter(
                self._files[-1],
                self.schema,
                compression="none",
                use_dictionary=False,
                write_statistics=False,
                write_batch_size=ROW_GROUP_ROWS,
                data_page_size=1 << 22,
            )
        return self

    def write(self, batch: EncodedBatch, split: np.ndarray | None) -> None:
        """Rows of ``batch``; ``split`` (N,) int8 indexes ``SPLITS``, or None when all go to the only split."""
        if split is None:
            self._add(self.splits[0], batch)
            return
        for s, name in enumerate(SPLITS):
            if name in self._pending:
                rows = np.flatnonzero(split == s)
                self._add(name, EncodedBatch(*(a if a is None else np.take(a, rows, axis=-1) for a in batch.columns())))

    def _add(self, split: str, batch: EncodedBatch) -> None:
        if len(batch) == 0:
            return
        self._pending[split].append(batch)
        self._have[split] += len(batch)
        self.rows[split] += len(batch)
        while self._have[split] >= ROW_GROUP_ROWS:
            head, self._pending[split], self._have[split] = _split_rows(self._pending[split], ROW_GROUP_ROWS)
            self._flush(split, head)

    def _flush(self, split: str, parts: list[EncodedBatch]) -> None:
        table = _to_table(parts, self.schema, self.id_names, self.dense_names, self.multi_lens)
        while len(self._inflight) >= 2:
            self._inflight.pop(0).result()
        self._inflight.append(
            self._pool.submit(self._writers[split].write_table, table, row_group_size=max(len(table), 1))
        )

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                for s in self.splits:
                    if self._have[s]:
                        self._flush(s, self._pending[s])
            for f in self._inflight:
                f.result()
        finally:
            self._pool.shutdown()
            for w in self._writers.values():
                w.close()
            for f in self._files:
                f.close()


def _parquet_rows(out: Path) -> dict[str, int]:
    return {s: pq.ParquetFile(out / f"{s}.parquet").metadata.num_rows for s in SPLITS}


def _split_rows(parts: list[EncodedBatch], n: int) -> tuple[list[EncodedBatch], list[EncodedBatch], int]:
    """The first ``n`` rows of ``parts`` and the rest (with its row count)."""
    head: list[EncodedBatch] = []
    need = n
    while need:
        b = parts.pop(0)
        if len(b) <= need:
            head.append(b)
            need -= len(b)
        else:
            head.append(_slice_encoded(b, 0, need))
            parts.insert(0, _slice_encoded(b, need, len(b)))
            need = 0
    return head, parts, sum(len(p) for p in parts)


def _slice_encoded(b: EncodedBatch, start: int, stop: int) -> EncodedBatch:
    return EncodedBatch(*(a if a is None else a[..., start:stop] for a in b.columns()))


def _to_table(
    parts: list[EncodedBatch],
    schema: pa.Schema,
    id_names: list[str],
    dense_names: list[str],
    multi_lens: list[tuple[str, int]],
) -> pa.Table:
    """One table over ``parts`` without copying them together (each column has one chunk per part)."""

    def column(get: Any) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array(np.ascontiguousarray(get(p))) for p in parts])

    cols: dict[str, Any] = {}
    for j, name in enumerate(id_names):
        cols[name] = column(lambda p, j=j: p.ids[j])
    for j, name in enumerate(dense_names):
        cols[name] = column(lambda p, j=j: p.dense[j])
        cols[f"{name}__missing"] = column(lambda p, j=j: p.dense_missing[j])
    start = 0
    for name, length in multi_lens:
        cols[name] = pa.chunked_array(
            [
                pa.FixedSizeListArray.from_arrays(
                    np.ascontiguousarray(p.multi[start : start + length].T).ravel(), length
                )
                for p in parts
            ]
        )
        start += length
    cols["label"] = column(lambda p: p.label)
    if GROUP_COLUMN in schema.names:
        cols[GROUP_COLUMN] = column(lambda p: p.group)
    if WEIGHT_COLUMN in schema.names:
        cols[WEIGHT_COLUMN] = column(lambda p: p.weight)
    return pa.table(cols, schema=schema)


# ----------------------------------------------------------------------------------------------- evaluation


def encode_raw(
    path: str | Path,
    schema: Schema,
    split: str | None = None,
    split_seed: int = 2018,
    split_fracs: Sequence[float] = (0.8, 0.1, 0.1),
    on_bad_rows: str = "error",
    block_size: int = 1 << 20,
    report: BadRowReport | None = None,
) -> Batch:
    """Apply a saved schema to a raw file of its format: values unseen in its train data map to OOV.

    Args:
        path: raw file (Criteo text, or a table of the schema's declared format).
        schema: the schema of prepared data (e.g. saved in a run directory).
        split: None for every row, or keep only the rows that the single-file split rule with ``split_seed`` and
            ``split_fracs`` assigns to this split (how a run's own test split is rebuilt from its raw file).
        on_bad_rows: ``"error"`` or ``"skip"`` (skipped rows are counted in ``report`` and printed).

    Returns:
        Batch of the kept rows in file order.

    Raises:
        DataError: a bad row (with ``on_bad_rows="error"``), or no row with the Criteo layout.
    """
    from ctr.data.loader import tensors_from_encoded

    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    encoder, table = raw_encoder(schema, path)
    report = report if report is not None else BadRowReport()
    parts: list[EncodedBatch] = []
    read = dict(block_size=block_size, on_bad_rows=on_bad_rows, report=report, codec=encoder.codec)
    rule = schema.config if "time_thresholds" in schema.config else {"split_seed": split_seed, "split": split_fracs}
    with closing(read_rows_of(Path(path), table, **read)) as batches:
        for batch in batches:
            if split is not None:
                batch = batch.take(assign_rows(batch, rule) == SPLITS.index(split))
            parts.append(encoder.transform(batch))
    if report.count:
        if not any(len(p) for p in parts):
            layout = "raw Criteo" if table is None else "declared"
            raise DataError(f"{path}: no row has the {layout} layout; {report.summary()}")
        print(f"ctr.data: {report.summary()}", file=sys.stderr)
    return tensors_from_encoded(parts, schema)


def raw_encoder(schema: Schema, where: str | Path) -> tuple[TableEncoder, TableSpec | None]:
    """The fitted encoder of a saved schema and the declared table its raw data is read as (None: Criteo's).

    Raises:
        DataError: the schema's fields are not the columns its data format reads (``where`` names the data).
    """
    encoder = TableEncoder.from_fields(schema.fields)
    table = table_spec(schema.config)
    if table is None:
        columns = (INT_COLUMNS, CAT_COLUMNS, [])
    else:
        columns = (table.numeric_names, table.categorical_names, [c.name for c in table.multi])
    fields = ([f.name for f in encoder.numeric], [f.name for f in encoder.categorical], [f.name for f in encoder.multi])
    if [list(c) for c in columns] != [list(f) for f in fields]:
        raise DataError(f"{where}: the schema's fields {fields} are not the columns its data format reads {columns}")
    return encoder, table


def encode_source_split(schema: Schema, split: str, on_bad_rows: str | None = None) -> Batch:
    """Rebuild one split of a schema's own raw source (same split rule) with the saved schema."""
    src = schema.source
    files = src.get("files", {})
    on_bad = on_bad_rows or schema.config.get("on_bad_rows", "error")
    if src.get("kind") == "directory":
        name = files[split]["name"]
        if name_problem(name) is not None:  # joined to a directory: a bare file name, never a path out of it
            raise DataError(f"the schema's source file {quoted(str(name))} of {split}: {name_problem(name)}")
        return encode_raw(Path(src["path"]) / name, schema, on_bad_rows=on_bad)
    cfg = schema.config
    return encode_raw(src["path"], schema, split, cfg["split_seed"], cfg["split"], on_bad_rows=on_bad)


# ---------------------------------------------------------------------------------------------------- splits


def assign_rows(batch: RawBatch, rule: dict[str, Any]) -> np.ndarray:
    """(N,) int8 split of each row of a single raw file: by its time against ``rule["time_thresholds"]`` (train
    up to the first, valid up to the second, test after) or by a seeded hash of its line number."""
    if "time_thresholds" in rule:
        return np.searchsorted(np.asarray(rule["time_thresholds"]), batch.time, side="left").astype(np.int8)
    return assign_splits(batch.lines, rule["split_seed"], rule["split"])


def time_thresholds(
    path: Path, table: TableSpec, fractions: Sequence[float], read: dict[str, Any], progress: bool
) -> list[float]:
    """The time values at which the cumulative share of rows first reaches the train and train + valid fractions.

    One extra streaming pass counts the rows per distinct time value (memory grows with distinct times, not rows);
    rows sharing a time value stay in one split, so the shares are as close to the fractions as the data allows.
    """
    times: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    held = 0
    with progress_bar(progress, f"times {path.name}") as bar, closing(read_rows_of(path, table, **read)) as batches:
        for batch in batches:
            t, c = np.unique(batch.time, return_counts=True)
            times.append(t)
            counts.append(c)
            held += len(t)
            if held > 1 << 20:
                merged = pd.Series(np.concatenate(counts)).groupby(np.concatenate(times)).sum()
                times, counts, held = [merged.index.to_numpy()], [merged.to_numpy()], len(merged)
            bar.update(len(batch))
    if not times:
        raise DataError(f"{path}: no rows to split by time")
    merged = pd.Series(np.concatenate(counts)).groupby(np.concatenate(times)).sum()
    cum = np.cumsum(merged.to_numpy()) / merged.sum()
    frac = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    cuts = np.searchsorted(cum, np.cumsum(frac)[:2] - 1e-12, side="left")
    return [float(merged.index[min(c, len(merged) - 1)]) for c in cuts]


# ---------------------------------------------------------------------------------------------------- helpers


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"ctr.data: {message}", file=sys.stderr)


def progress_bar(progress: bool, desc: str, total: int | None = None) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="rows", unit_scale=True, disable=not progress, file=sys.stderr, leave=False
    )
