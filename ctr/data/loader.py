"""Batches straight from columnar tensors: a seeded permutation and ``index_select``, no per-sample Dataset.

``load_split`` reads a prepared split into memory; ``iterate_batches`` walks it in a per-epoch seeded order,
sharded across DDP ranks. ``stream_batches`` is for splits larger than memory: Parquet row groups in a seeded
order through a bounded shuffle buffer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctr.data.prepare import GROUP_COLUMN, WEIGHT_COLUMN
from ctr.types import Batch, Schema

if TYPE_CHECKING:
    from ctr.data.encoders import EncodedBatch
    from ctr.data.prepare import PreparedData


_STACK_ROWS = 1 << 14  # rows per cache-sized block when interleaving columns


def _stack_columns(columns: Sequence[np.ndarray], n: int, dtype: np.dtype) -> torch.Tensor:
    """F columns of N values -> (N, F) tensor of ``dtype``, filled block by block so each block stays in cache."""
    out = np.empty((n, len(columns)), dtype=dtype)
    for start in range(0, n, _STACK_ROWS):
        block = out[start : start + _STACK_ROWS]  # (rows, F), stays in cache while its columns are written
        for j, col in enumerate(columns):
            block[:, j] = col[start : start + _STACK_ROWS]
    return torch.from_numpy(out)


def tensors_from_table(table: pa.Table, schema: Schema) -> Batch:
    """A prepared Parquet table (see :func:`ctr.data.prepare.parquet_schema`) as Batch."""
    n = table.num_rows

    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    ids = _stack_columns([col(f.name) for f in schema.id_fields], n, np.int64)
    dense = _stack_columns([col(f.name) for f in schema.dense_fields], n, np.float32)
    missing = _stack_columns([col(f"{f.name}__missing") for f in schema.dense_fields], n, np.bool_)
    label = torch.from_numpy(col("label").astype(np.float32))
    group, weight = (
        torch.from_numpy(col(name).astype(dtype)) if name in table.column_names else None
        for name, dtype in ((GROUP_COLUMN, np.int64), (WEIGHT_COLUMN, np.float32))
    )
    multi = [
        table.column(f.name).combine_chunks().flatten().to_numpy().reshape(n, int(f.stats["max_len"]))
        for f in schema.multi_fields
    ]
    return Batch(ids, dense, missing, label, group, _stack_multi(multi, n), weight)


def _stack_multi(fields: Sequence[np.ndarray], n: int) -> torch.Tensor | None:
    """(N, L_j) id arrays of the multi-valued fields -> (N, Fm, max L_j) int64, -1 beyond each field's length."""
    if not fields:
        return None
    out = np.full((n, len(fields), max(f.shape[1] for f in fields)), -1, dtype=np.int64)
    for j, f in enumerate(fields):
        out[:, j, : f.shape[1]] = f
    return torch.from_numpy(out)


def tensors_from_encoded(parts: Sequence[EncodedBatch], schema: Schema) -> Batch:
    """Encoded batches (per-column arrays, see :class:`ctr.data.encoders.EncodedBatch`) as Batch."""
    fc, fn = len(schema.id_fields), len(schema.dense_fields)
    ids = np.concatenate([p.ids for p in parts], axis=1) if parts else np.zeros((fc, 0), np.int32)
    dense = np.concatenate([p.dense for p in parts], axis=1) if parts else np.zeros((fn, 0), np.float32)
    missing = np.concatenate([p.dense_missing for p in parts], axis=1) if parts else np.zeros((fn, 0), bool)
    label = np.concatenate([p.label for p in parts]) if parts else np.zeros(0, np.int8)
    group, weight = (
        torch.from_numpy(np.concatenate([getattr(p, k) for p in parts]).astype(dtype))
        if parts and getattr(parts[0], k) is not None
        else None
        for k, dtype in (("group", np.int64), ("weight", np.float32))
    )
    n = len(label)
    multi, start = [], 0
    for f in schema.multi_fields:
        length = int(f.stats["max_len"])
        rows = [p.multi[start : start + length] for p in parts]
        multi.append(np.concatenate(rows, axis=1).T if rows else np.zeros((0, length), np.int32))
        start += length
    return Batch(
        _stack_columns(ids, n, np.int64),
        _stack_columns(dense, n, np.float32),
        _stack_columns(missing, n, np.bool_),
        torch.from_numpy(label.astype(np.float32)),
        group,
        _stack_multi(multi, n),
        weight,
    )


def load_split(prepared: PreparedData, split: str) -> Batch:
    """Read one prepared split into memory."""
    return tensors_from_table(pq.read_table(prepared.path(split), use_threads=False), prepared.schema)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch.Generator seeded from (seed, epoch) through numpy's SeedSequence (no collisions between pairs)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def shard_indices(n: int, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's row indices for one epoch: a disjoint, equal-sized part of a seeded permutation of ``range(n)``.

    With ``world_size > 1`` the last ``n % world_size`` rows of the permutation are left out this epoch, so
    every rank gets ``n // world_size`` rows (and DDP ranks run the same number of steps).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    order = torch.randperm(n, generator=epoch_generator(seed, epoch)) if shuffle else torch.arange(n)
    per = n // world_size
    return order[rank * per : (rank + 1) * per]


def iterate_batches(
    t: Batch,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    skip: int = 0,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows of an in-memory split.

    Every row of this rank's shard comes exactly once per epoch; the order depends only on (seed, epoch).
    Unshuffled single-process iteration yields zero-copy slices.

    Args:
        t: the split.
        batch_size: rows per batch (the last one may be smaller unless ``drop_last``).
        shuffle: permute rows with a generator seeded from (seed, epoch).
        rank, world_size: DDP sharding (see :func:`shard_indices`).
        skip: leave out the epoch's first ``skip`` batches (continuing an epoch after an interruption).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(t)
    if not shuffle and world_size == 1:
        stop = n - n % batch_size if drop_last else n
        for start in range(skip * batch_size, stop, batch_size):
            yield t.rows(slice(start, min(start + batch_size, n)))
        return
    index = shard_indices(n, shuffle, seed, epoch, rank, world_size)
    stop = len(index) - len(index) % batch_size if drop_last else len(index)
    for start in range(skip * batch_size, stop, batch_size):
        yield t.rows(index[start : start + batch_size])


def stream_batches(
    prepared: PreparedData,
    split: str,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Batches of a prepared split read row group by row group, for data larger than memory.

    Row groups come in a seeded order (per epoch) and rank ``r`` reads row groups ``r, r + W, ...`` of it, capped
    at the smallest rank's row count so all ranks yield the same number of rows. Rows pass through a shuffle
    buffer of at most ``shuffle_buffer`` rows (plus one row group): when it is full it is permuted, and all but
    half of it is emitted. With ``world_size == 1`` every row comes exactly once per epoch.

    Args:
        prepared: the prepared data.
        split: ``train``, ``valid`` or ``test``.
        batch_size: rows per batch.
        shuffle_buffer: rows held for shuffling (memory bound); ignored when ``shuffle`` is False.
        seed, epoch: the order depends only on these.
        rank, world_size: DDP sharding by row group.
        shuffle: False reads row groups and rows in file order.
        drop_last: drop a last batch smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pf = pq.ParquetFile(prepared.path(split))
    gen = epoch_generator(seed, epoch)
    groups = pf.metadata.num_row_groups
    order = torch.randperm(groups, generator=gen).tolist() if shuffle else list(range(groups))
    sizes = [pf.metadata.row_group(g).num_rows for g in order]
    limit = min(sum(sizes[r::world_size]) for r in range(world_size)) if world_size > 1 else sum(sizes)
    mine = order[rank::world_size]
    capacity = max(shuffle_buffer, batch_size) if shuffle else 0
    parts: list[Batch] = []  # the buffer, concatenated only when it is emitted (not once per row group)
    have = carried = 0
    for g in mine:
        if carried >= limit:
            break
        part = tensors_from_table(pf.read_row_group(g, use_threads=False), prepared.schema)
        if carried + len(part) > limit:
            part = part.rows(slice(0, limit - carried))
        carried += len(part)
        parts.append(part)
        have += len(part)
        if have >= max(capacity, batch_size):
            buffer = Batch.concat(parts)
            if shuffle:
                buffer = buffer.rows(torch.randperm(len(buffer), generator=gen))
            keep = capacity // 2 if shuffle else 0
            emit = (len(buffer) - keep) // batch_size * batch_size
            for start in range(0, emit, batch_size):
                yield buffer.rows(slice(start, start + batch_size))
            parts = [buffer.rows(slice(emit, len(buffer)))]
            have = len(parts[0])
    buffer = Batch.concat(parts) if parts else None
    if buffer is not None and len(buffer):
        if shuffle:
            buffer = buffer.rows(torch.randperm(len(buffer), generator=gen))
        n = len(buffer)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield buffer.rows(slice(start, min(start + batch_size, n)))
