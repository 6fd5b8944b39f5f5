"""The run directory: the one object that knows the name of, writes and reads back every file of a run.

``config.yaml`` (the resolved config), ``schema.json``, ``model.pt`` (best weights), ``checkpoint.pt`` (to resume,
:mod:`ctr.train.checkpoint`), ``results.json`` and ``diverged.json`` (a run stopped by the divergence guard) are each
written atomically (temp file + rename, :mod:`ctr.train.io`), so an interrupted run never leaves a half-written
file over a previous one. ``metrics.jsonl`` is an append-only log, emptied when the run starts;
``diagnostics.jsonl`` is written by the diagnostics hook (:mod:`ctr.train.diagnostics`) under :attr:`RunDir.path`.

:class:`NoRunDir` has the same interface and writes nothing: the run directory of a non-zero DDP rank.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ctr.config import RunConfig, load_config, read_yaml, save_config
from ctr.errors import ConfigError, CTRError
from ctr.train import io
from ctr.train.checkpoint import CHECKPOINT
from ctr.train.diagnostics import DIAGNOSTICS
from ctr.types import Schema


class RunDir:
    """The files of the run directory ``path``.

    Args:
        path: the directory; created by :meth:`create`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path: Path | None = Path(path)
        self.metric_sinks: list[Callable[[dict[str, Any]], None]] = []  # also receive every metrics record

    @property
    def config(self) -> Path:
        return self.path / io.CONFIG

    @property
    def schema(self) -> Path:
        return self.path / io.SCHEMA

    @property
    def model(self) -> Path:
        return self.path / io.MODEL

    @property
    def metrics(self) -> Path:
        return self.path / io.METRICS

    @property
    def results(self) -> Path:
        return self.path / io.RESULTS

    @property
    def diagnostics(self) -> Path:
        return self.path / DIAGNOSTICS

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def diverged(self) -> Path:
        return self.path / io.DIVERGED

    @property
    def tensorboard(self) -> Path:
        return self.path / io.TENSORBOARD

    def run_files(self) -> list[Path]:
        """The files (and the TensorBoard directory) of a run present in the directory."""
        names = (io.CONFIG, io.SCHEMA, io.MODEL, io.METRICS, io.RESULTS, io.DIVERGED, CHECKPOINT, DIAGNOSTICS)
        paths = [self.path / n for n in names] + [self.tensorboard]
        return [p for p in paths if p.exists()]

    def clear(self) -> None:
        """Delete the run's files (``--overwrite``); other files in the directory are left alone."""
        for p in self.run_files():
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    # writing, in the order of a run

    def create(self) -> None:
        """Make the directory and empty the logs (a rerun into the same directory starts new ones)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for p in (self.metrics, self.diagnostics, self.diverged):
            p.unlink(missing_ok=True)

    def log_sizes(self) -> dict[str, int]:
        """Bytes in each append-only log now (recorded in a checkpoint)."""
        return {p.name: p.stat().st_size for p in (self.metrics, self.diagnostics) if p.is_file()}

    def truncate_logs(self, sizes: dict[str, int]) -> None:
        """Cut the logs back to ``sizes`` (a checkpoint's :meth:`log_sizes`): a resumed run rewrites what followed."""
        for p in (self.metrics, self.diagnostics):
            if p.is_file():
                with open(p, "r+b") as f:
                    f.truncate(sizes.get(p.name, 0))
        self.diverged.unlink(missing_ok=True)

    def write_config(self, cfg: RunConfig) -> None:
        io.atomic_write(self.config, lambda tmp: save_config(cfg, tmp))

    def write_schema(self, schema: Schema) -> None:
        io.atomic_write(self.schema, schema.to_json)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (and pass the record to :attr:`metric_sinks`)."""
        io.append_jsonl(self.metrics, record)
        for sink in self.metric_sinks:
            sink(record)

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        """Write the model's ``state_dict`` to ``model.pt``."""
        io.save_state(self.model, state)

    def write_results(self, results: dict[str, Any]) -> None:
        io.write_json(self.results, results)

    def write_diverged(self, step: int, epoch: int, message: str) -> None:
        """Record that the run diverged (``diverged.json``), for ablation reports."""
        io.write_json(self.diverged, {"step": step, "epoch": epoch, "error": message})

    # reading a finished run

    def check_complete(self) -> None:
        """Raise CTRError unless the files that rebuild the model (config, schema, weights) are all there."""
        for path in (self.config, self.schema, self.model):
            if not path.is_file():
                raise CTRError(f"{self.path}: not a complete run directory (missing {path.name})")

    def read_config(self) -> RunConfig:
        """The run's resolved config. It is laid over the shipped defaults, so a run written before a key was
        added reads back with that key's default.

        Raises:
            ConfigError: the file is not a valid config, naming it.
        """
        try:
            return load_config(extra_layers=[read_yaml(self.config)])
        except ConfigError as e:
            raise ConfigError(f"{self.config}: {e}") from None

    def read_schema(self) -> Schema:
        return Schema.from_json(self.schema)

    def read_model_state(self) -> dict[str, torch.Tensor]:
        """The weights in ``model.pt``, on the CPU, read with ``weights_only=True`` (a file cannot run code).

        Raises:
            CTRError: the file is not a readable state dict (truncated, corrupt, or holding other objects).
        """
        try:
            state = torch.load(self.model, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises several types for a damaged or unsafe file
            raise CTRError(f"{self.model}: not a readable model file ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(state, dict):
            raise CTRError(f"{self.model}: not a model state dict")
        return state


class NoRunDir(RunDir):
    """A run directory that writes nothing (``path`` is None): for DDP ranks other than 0, whose rank 0 writes."""

    def __init__(self) -> None:
        self.path = None
        self.metric_sinks = []

    def create(self) -> None:
        pass

    def write_config(self, cfg: RunConfig) -> None:
        pass

    def write_schema(self, schema: Schema) -> None:
        pass

    def log_metrics(self, record: dict[str, Any]) -> None:
        pass

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def write_results(self, results: dict[str, Any]) -> None:
        pass

    def write_diverged(self, step: int, epoch: int, message: str) -> None:
        pass
