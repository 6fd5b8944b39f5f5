"""A finished run read back from its directory alone: the trained model, and its scores on new or held-out data."""

from __future__ import annotations

from pathlib import Path

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


def load_run(run_dir: str | Path) -> tuple[RunConfig, Schema, torch.nn.Module]:
    """Rebuild a trained model (on the CPU) from a run directory alone (config.yaml, schema.json, model.pt).

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
    return cfg, schema, model


def evaluate_run(run_dir: str | Path, data: str | Path | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Score a trained run on its own test split (default) or on ``data`` (a raw Criteo file or a prepared dir).

    Returns:
        ``{"auc", "logloss"}`` and the (N,) predicted probabilities, in row order.
    """
    cfg, schema, model = load_run(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    model.to(device)
    tensors = load_eval_data(cfg, schema, data)
    batches = iterate_batches(tensors, cfg.train.eval_batch_size, shuffle=False, seed=0, epoch=0)
    logits, labels, groups = predict_logits(model, batches, device, cfg.train.precision)
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
