"""Tensor loading and batching: permutations, DDP shards, streaming with a shuffle buffer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from _tiny import config_section

from ctr.data import prepare as prepare_module
from ctr.data.loader import iterate_batches, load_split, shard_indices, stream_batches
from ctr.data.prepare import PreparedData, prepare_data
from ctr.types import Batch


@pytest.fixture(scope="module")
def prepared(criteo_file: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    """Prepared data with small row groups (so streaming sees many)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(prepare_module, "ROW_GROUP_ROWS", 256)
    try:
        cfg = config_section("data", path=str(criteo_file), cache_dir=str(tmp_path_factory.mktemp("cache")))
        return prepare_data(cfg, progress=False)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def train(prepared: PreparedData) -> Batch:
    return load_split(prepared, "train")


def tagged(n: int) -> Batch:
    """A split whose row i has ids[i, 0] == i."""
    ids = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.int64)], dim=1)
    return Batch(ids, torch.zeros(n, 1), torch.zeros(n, 1, dtype=torch.bool), torch.zeros(n))


def rows_of(batches) -> list[int]:
    return torch.cat([b.ids[:, 0] for b in batches]).tolist()


def test_load_split_types(prepared: PreparedData, train: Batch) -> None:
    n = prepared.schema.rows["train"]
    assert train.ids.shape == (n, 39) and train.ids.dtype == torch.int64 and train.ids.is_contiguous()
    assert train.dense.shape == (n, 0) and train.dense.dtype == torch.float32
    assert train.dense_missing.dtype == torch.bool
    assert train.label.dtype == torch.float32 and set(train.label.unique().tolist()) <= {0.0, 1.0}
    sizes = torch.tensor([f.vocab_size for f in prepared.schema.id_fields])
    assert bool((train.ids < sizes).all()) and bool((train.ids >= 0).all())


def test_epoch_permutation_covers_every_row_once_and_is_seeded() -> None:
    t = tagged(1003)
    e0 = rows_of(iterate_batches(t, 64, shuffle=True, seed=1, epoch=0))
    assert sorted(e0) == list(range(1003)) and e0 != list(range(1003))
    assert e0 == rows_of(iterate_batches(t, 100, shuffle=True, seed=1, epoch=0))  # batch size does not matter
    assert e0 != rows_of(iterate_batches(t, 64, shuffle=True, seed=1, epoch=1))
    assert e0 != rows_of(iterate_batches(t, 64, shuffle=True, seed=2, epoch=0))
    assert rows_of(iterate_batches(t, 64, shuffle=False, seed=0, epoch=0)) == list(range(1003))
    sizes = [len(b) for b in iterate_batches(t, 100, shuffle=True, seed=1, epoch=0, drop_last=True)]
    assert sizes == [100] * 10


def test_ddp_shards_are_disjoint_and_equal() -> None:
    t = tagged(1003)
    shards = [rows_of(iterate_batches(t, 50, True, 3, 2, rank=r, world_size=4)) for r in range(4)]
    assert all(len(s) == 1003 // 4 for s in shards)
    union = [i for s in shards for i in s]
    assert len(set(union)) == len(union)
    assert [len(list(iterate_batches(t, 50, True, 3, 2, rank=r, world_size=4))) for r in range(4)] == [5] * 4
    assert set(union) == set(shard_indices(1003, True, 3, 2)[: 4 * 250].tolist())
    with pytest.raises(ValueError):
        shard_indices(10, True, 0, 0, rank=4, world_size=4)


def test_batches_carry_the_right_rows(train: Batch) -> None:
    batch = next(iter(iterate_batches(train, 32, shuffle=True, seed=0, epoch=0)))
    index = shard_indices(len(train), True, 0, 0)[:32]
    assert torch.equal(batch.ids, train.ids[index]) and torch.equal(batch.label, train.label[index])


def test_stream_yields_every_row_once(prepared: PreparedData, train: Batch) -> None:
    assert pq_row_groups(prepared) > 5
    key = lambda ids: [tuple(r) for r in ids.tolist()]  # noqa: E731 - rows are compared as whole id tuples
    want = sorted(key(train.ids))
    batches = list(stream_batches(prepared, "train", 100, shuffle_buffer=700, seed=5, epoch=0))
    got = torch.cat([b.ids for b in batches])
    assert sorted(key(got)) == want
    assert all(len(b) == 100 for b in batches[:-1])
    again = torch.cat([b.ids for b in stream_batches(prepared, "train", 100, 700, seed=5, epoch=0)])
    assert torch.equal(got, again)
    other = torch.cat([b.ids for b in stream_batches(prepared, "train", 100, 700, seed=5, epoch=1)])
    assert not torch.equal(got, other)
    ordered = torch.cat([b.ids for b in stream_batches(prepared, "train", 64, 0, 0, 0, shuffle=False)])
    assert torch.equal(ordered, train.ids)


def test_stream_ddp_shards(prepared: PreparedData) -> None:
    parts = [
        torch.cat([b.ids for b in stream_batches(prepared, "train", 50, 500, 1, 0, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert len({len(p) for p in parts}) == 1
    rows = Counter(tuple(r) for p in parts for r in p.tolist())
    full = Counter(tuple(r) for r in load_split(prepared, "train").ids.tolist())
    assert not rows - full  # disjoint: together the ranks never yield a row more often than it exists


def pq_row_groups(prepared: PreparedData) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(prepared.path("train")).metadata.num_row_groups
