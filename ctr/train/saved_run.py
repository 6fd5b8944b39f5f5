"""A finished run read back from its directory alone: the trained model, and its scores on new or held-out data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ctr.config import RunConfig
from ctr.data.loader import iterate_batches, load_split
from ctr.data.prepare import PreparedData, encode_raw, encode_source_split
from ctr.errors import CTRError
from ctr.models import build_model
from ctr.train import io
from ctr.train.device import resolve_device
from ctr.train.evaluation import predict_logits, score
from ctr.train.run_dir import RunDir
from ctr.types import Batch, Schema

if TYPE_CHECKING:
    from ctr.predict import Scorer


@dataclass
class SavedRun:
    """A trained run rebuilt from its directory (see :func:`load_run`).

    Attributes:
        path: the run directory.
        config: the run's resolved config (``config.yaml``).
        schema: its data schema (``schema.json``): fields, vocabularies, fitted statistics, the data format.
        model: the trained model (``model.pt``, the best weights), in eval mode, on ``device``.
        device: where the model runs.
    """

    path: Path
    config: RunConfig
    schema: Schema
    model: torch.nn.Module
    device: torch.device

    def predict(self, frame: Any, batch_size: int | None = None) -> np.ndarray:
        """Click probabilities of raw rows held in memory.

        Args:
            frame: a pandas DataFrame or pyarrow Table with the raw columns, named as in the run's data (Criteo:
                ``I1 .. I13``, ``C1 .. C26``; a declared table: its declared columns); the label is optional and
                other columns are ignored. Values as the raw data holds them; missing = null, NaN or empty.
            batch_size: rows per forward pass (default: ``train.eval_batch_size``).

        Returns:
            (N,) float64 probabilities in row order; NaN for a row skipped as bad (``data.on_bad_rows: skip``).

        Raises:
            DataError: a missing column, or a bad row (``data.on_bad_rows: error``), naming its 0-based row and
                column.
        """
        from ctr.predict import predict_frame

        return predict_frame(self, frame, batch_size)

    @cached_property
    def scorer(self) -> Scorer:
        """The run's raw-row scorer (:class:`ctr.predict.Scorer`), built on first use."""
        from ctr.predict import Scorer

        return Scorer(self)


def load_run(run_dir: str | Path, device: str | None = None) -> SavedRun:
    """Rebuild a trained run from its directory alone (config.yaml, schema.json, model.pt).

    Args:
        run_dir: the run directory written by ``train.py``.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:N``, ``auto``); default: the run's ``train.device``.

    Raises:
        CTRError: a file is missing, or the weights do not fit the model the config describes.
    """
    run = RunDir(run_dir)
    run.check_complete()
    cfg, schema = run.read_config(), run.read_schema()
    model = build_model(schema, cfg.model, cfg.norm)
    try:
        model.load_state_dict(run.read_model_state())
    except RuntimeError as e:
        first_line = str(e).splitlines()[0]
        raise CTRError(f"{run.model}: weights do not match the model in config.yaml ({first_line})") from None
    target = resolve_device(device or cfg.train.device)
    model.eval()
    return SavedRun(Path(run_dir), cfg, schema, model.to(target), target)


def evaluate_run(run_dir: str | Path, data: str | Path | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Score a trained run on its own test split (default) or on ``data`` (a raw Criteo file or a prepared dir).

    Returns:
        ``{"auc", "logloss"}`` and the (N,) predicted probabilities, in row order.
    """
    run = load_run(run_dir)
    cfg = run.config
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    tensors = load_eval_data(cfg, run.schema, data)
    batches = iterate_batches(tensors, cfg.train.eval_batch_size, shuffle=False, seed=0, epoch=0)
    logits, labels, groups = predict_logits(run.model, batches, run.device, cfg.train.precision)
    return score(logits, labels, groups), 1.0 / (1.0 + np.exp(-logits))


def load_eval_data(cfg: RunConfig, schema: Schema, data: str | Path | None) -> Batch:
    """The rows to evaluate: the run's test split re-encoded from raw data, a raw file, or a prepared directory.

    Raises:
        CTRError: ``data`` does not exist, or is a prepared directory with a different schema than the run's.
    """
    if data is None:
        return encode_source_split(schema, "test", cfg.data.on_bad_rows)
    path = Path(data)
    if path.is_dir() and (path / io.SCHEMA).is_file():
        other = Schema.from_json(path / io.SCHEMA)
        if [f.__dict__ for f in other.fields] != [f.__dict__ for f in schema.fields]:
            raise CTRError(
                f"{path}: prepared with a different schema than the run (fields, vocabularies or statistics differ)"
            )
        return load_split(PreparedData.open(path), "test")
    if not path.exists():
        raise CTRError(f"{path}: no such file or directory")
    return encode_raw(path, schema, on_bad_rows=cfg.data.on_bad_rows)
