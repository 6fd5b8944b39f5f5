"""Where a run's batches come from: splits held in memory, or Parquet row groups streamed from disk.

Both variants give the same four things to the training loop: this rank's shuffled training batches of an epoch,
the batches of a split to evaluate (in file order), the steps per epoch and the training rows. The batch order
depends only on (``train.seed``, epoch), so a later epoch's batches can be produced without replaying earlier ones.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator

from ctr.config import RunConfig
from ctr.data.loader import iterate_batches, load_split, stream_batches
from ctr.data.prepare import PreparedData
from ctr.errors import CTRError
from ctr.train.distributed import SINGLE_PROCESS, DistContext
from ctr.types import Batch

SPLITS = ("train", "valid", "test")


class DataSource(ABC):
    """Batches of a prepared dataset for one DDP rank.

    Args:
        n_train: rows of the training split (all ranks together).
        batch_size: training rows per batch; a last, smaller batch of an epoch is dropped.
        eval_batch_size: rows per evaluation batch (the last one may be smaller).
        seed: the training shuffle's seed (``train.seed``).
        rank, world_size: this process's DDP rank and the number of ranks; each rank trains on its own shard.
    """

    def __init__(
        self, n_train: int, batch_size: int, eval_batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n_train = n_train
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    @property
    def steps_per_epoch(self) -> int:
        """Full training batches per epoch on each rank (for the LR schedule and the progress bar)."""
        return self.n_train // self.world_size // self.batch_size

    @abstractmethod
    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This rank's training batches of ``epoch`` (1-based), shuffled by (seed, epoch), of ``batch_size`` rows,
        from the ``skip``-th on (the same batches an uninterrupted epoch would give from there)."""

    @abstractmethod
    def eval_batches(self, split: str) -> Iterator[Batch]:
        """All rows of ``split`` (``valid`` or ``test``) in file order, in batches of ``eval_batch_size``."""


class InMemorySource(DataSource):
    """Splits loaded into memory (``data.streaming=false``): a seeded permutation per epoch, sliced into batches.

    Args:
        splits: ``{"train", "valid", "test"}`` -> the split's rows.
        others: see :class:`DataSource`.
    """

    def __init__(
        self,
        splits: dict[str, Batch],
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(len(splits["train"]), batch_size, eval_batch_size, seed, rank, world_size)
        self.splits = splits

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        return iterate_batches(
            self.splits["train"],
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=True,
            skip=skip,
        )

    def eval_batches(self, split: str) -> Iterator[Batch]:
        return iterate_batches(self.splits[split], self.eval_batch_size, shuffle=False, seed=0, epoch=0)


class StreamingSource(DataSource):
    """Splits read row group by row group (``data.streaming=true``), training rows through a shuffle buffer.

    With several ranks each reads its own row groups, so a rank may run fewer than :attr:`steps_per_epoch` steps.

    Args:
        prepared: the prepared data (its schema gives the training rows).
        shuffle_buffer: rows held for shuffling (``data.shuffle_buffer``).
        others: see :class:`DataSource`.
    """

    def __init__(
        self,
        prepared: PreparedData,
        batch_size: int,
        eval_batch_size: int,
        shuffle_buffer: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(prepared.schema.rows["train"], batch_size, eval_batch_size, seed, rank, world_size)
        self.prepared = prepared
        self.shuffle_buffer = shuffle_buffer

    def train_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        # the shuffle buffer's order depends on every row before: the skipped batches are read, not trained on
        batches = stream_batches(
            self.prepared,
            "train",
            self.batch_size,
            self.shuffle_buffer,
            self.seed,
            epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=True,
        )
        return itertools.islice(batches, skip, None)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        return stream_batches(self.prepared, split, self.eval_batch_size, 0, self.seed, 0, shuffle=False)


def open_data_source(prepared: PreparedData, cfg: RunConfig, ctx: DistContext = SINGLE_PROCESS) -> DataSource:
    """The run's data source: streaming or in memory as ``data.streaming`` says, sharded for ``ctx``'s rank.

    Raises:
        CTRError: the training split has fewer rows per rank than one batch.
    """
    tc = cfg.train
    if cfg.data.streaming:
        source: DataSource = StreamingSource(
            prepared, tc.batch_size, tc.eval_batch_size, cfg.data.shuffle_buffer, tc.seed, ctx.rank, ctx.world_size
        )
    else:
        splits = {s: load_split(prepared, s) for s in SPLITS}
        source = InMemorySource(splits, tc.batch_size, tc.eval_batch_size, tc.seed, ctx.rank, ctx.world_size)
    if source.steps_per_epoch == 0:
        raise CTRError(f"train split has {source.n_train} rows, fewer than train.batch_size={tc.batch_size}")
    return source
