"""The run directory: the one object that knows the name of, writes and reads back every file of a run.

``config.yaml`` (the resolved config), ``schema.json``, ``model.pt`` (best weights), ``results.json`` are each
written atomically (temp file + rename, :mod:`ctr.train.io`), so an interrupted run never leaves a half-written
file over a previous one. ``metrics.jsonl`` is an append-only log, emptied when the run starts;
``diagnostics.jsonl`` is written by the diagnostics hook (:mod:`ctr.train.diagnostics`) under :attr:`RunDir.path`.

:class:`NoRunDir` has the same interface and writes nothing: the run directory of a non-zero DDP rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ctr.config import RunConfig, from_dict, read_yaml, save_config
from ctr.errors import CTRError
from ctr.train import io
from ctr.train.diagnostics import DIAGNOSTICS
from ctr.types import Schema


class RunDir:
    """The files of the run directory ``path``.

    Args:
        path: the directory; created by :meth:`create`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path: Path | None = Path(path)

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

    # writing, in the order of a run

    def create(self) -> None:
        """Make the directory and empty the metrics log (a rerun into the same directory starts a new log)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics.unlink(missing_ok=True)

    def write_config(self, cfg: RunConfig) -> None:
        io.atomic_write(self.config, lambda tmp: save_config(cfg, tmp))

    def write_schema(self, schema: Schema) -> None:
        io.atomic_write(self.schema, schema.to_json)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl``."""
        io.append_jsonl(self.metrics, record)

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        """Write the model's ``state_dict`` to ``model.pt``."""
        io.save_state(self.model, state)

    def write_results(self, results: dict[str, Any]) -> None:
        io.write_json(self.results, results)

    # reading a finished run

    def check_complete(self) -> None:
        """Raise CTRError unless the files that rebuild the model (config, schema, weights) are all there."""
        for path in (self.config, self.schema, self.model):
            if not path.is_file():
                raise CTRError(f"{self.path}: not a complete run directory (missing {path.name})")

    def read_config(self) -> RunConfig:
        return from_dict(read_yaml(self.config))

    def read_schema(self) -> Schema:
        return Schema.from_json(self.schema)

    def read_model_state(self) -> dict[str, torch.Tensor]:
        """The weights in ``model.pt``, on the CPU."""
        return torch.load(self.model, map_location="cpu", weights_only=True)


class NoRunDir(RunDir):
    """A run directory that writes nothing (``path`` is None): for DDP ranks other than 0, whose rank 0 writes."""

    def __init__(self) -> None:
        self.path = None

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
