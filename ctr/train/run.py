"""A whole run: prepare data, build the model, fit, test, and write the run directory; and re-evaluating one."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ctr.config import RunConfig, from_dict, read_yaml, save_config
from ctr.types import Batch, Schema
from ctr.data.loader import iterate_batches, load_split, stream_batches
from ctr.data.prepare import PreparedData, encode_raw, encode_source_split, prepare_data
from ctr.errors import CTRError
from ctr.models import build_model
from ctr.train import io
from ctr.train.diagnostics import open_diagnostics
from ctr.train.distributed import barrier, init_distributed, shutdown
from ctr.train.loop import Hook, fit, predict_logits, resolve_device, score, seed_everything
from ctr.train.optim import use_sparse_embeddings


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


SPARSE_HINT_ROWS = 1_000_000  # sparse embeddings: break-even at 625k rows, 1.42x at 2.44M (README, Measured)


def train_run(cfg: RunConfig, out_dir: str | Path, hooks: tuple[Hook, ...] = (), prepared: PreparedData | None = None) -> dict[str, Any]:
    """Train and test one configuration; returns what is written to ``results.json``.

    The run directory gets ``config.yaml`` (resolved), ``schema.json``, ``metrics.jsonl``, ``model.pt`` (best
    weights) and ``results.json``; each file is written atomically.
    """
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ctx = init_distributed(resolve_device(tc.device))
    device = ctx.device
    if tc.precision == "fp16" and device.type != "cuda":
        raise CTRError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    if tc.sparse_embeddings and ctx.enabled:
        raise CTRError("train.sparse_embeddings is not supported with several processes (DDP); turn it off")
    out = Path(out_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / io.METRICS).unlink(missing_ok=True)
        prepared = prepared or prepare_data(cfg.data, progress=tc.progress)
    barrier(ctx)  # the other ranks read rank 0's cached preparation
    prepared = prepared or prepare_data(cfg.data, progress=False)
    schema = prepared.schema
    if ctx.is_main:
        save_config_atomic(cfg, out / io.CONFIG)
        io.atomic_write(out / io.SCHEMA, schema.to_json)

    seed_everything(tc.seed)  # same initial weights on every rank
    model = build_model(schema, cfg.model, cfg.norm).to(device)
    if tc.sparse_embeddings:
        use_sparse_embeddings(model)
    train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if ctx.enabled else model
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {cfg.model.name}: {n_params:,} parameters on {device}; data {prepared.dir}")
    if schema.id_rows >= SPARSE_HINT_ROWS and not tc.sparse_embeddings and not ctx.enabled:
        log(f"hint: {schema.id_rows:,} embedding rows; dense Adam updates all of them every step, "
            "train.sparse_embeddings=true updates only a batch's rows (README: 1.42x faster at 2.44M rows)")

    if cfg.data.streaming:
        n_train = schema.rows["train"]

        def train_batches(epoch: int):
            return stream_batches(prepared, "train", tc.batch_size, cfg.data.shuffle_buffer, tc.seed, epoch,
                                  rank=ctx.rank, world_size=ctx.world_size, drop_last=True)

        def eval_batches(split: str):
            return lambda: stream_batches(prepared, split, tc.eval_batch_size, 0, tc.seed, 0, shuffle=False)
    else:
        splits = {s: load_split(prepared, s) for s in ("train", "valid", "test")}
        n_train = len(splits["train"])

        def train_batches(epoch: int):
            return iterate_batches(splits["train"], tc.batch_size, shuffle=True, seed=tc.seed, epoch=epoch,
                                   rank=ctx.rank, world_size=ctx.world_size, drop_last=True)

        def eval_batches(split: str):
            return lambda: iterate_batches(splits[split], tc.eval_batch_size, shuffle=False, seed=0, epoch=0)
    steps = n_train // ctx.world_size // tc.batch_size
    if steps == 0:
        raise CTRError(f"train split has {n_train} rows, fewer than train.batch_size={tc.batch_size}")

    with open_diagnostics(cfg.diagnostics, out if ctx.is_main else None) as diagnostics:
        result = fit(train_model, train_batches, eval_batches("valid"), cfg, out if ctx.is_main else None, device, steps,
                     hooks + diagnostics, ctx)
    if not ctx.is_main:
        shutdown(ctx)
        return {}
    test = score(*predict_logits(model, eval_batches("test")(), device, tc.precision))
    results = {"valid": result.best_valid, "test": test,
               "train": {"samples_per_sec": result.samples_per_sec * ctx.world_size, "seconds": result.seconds, "epochs": result.epochs,
                         "best_epoch": result.best_epoch, "parameters": n_params, "device": str(device),
                         "world_size": ctx.world_size}}
    io.write_json(out / io.RESULTS, results)
    shutdown(ctx)
    return results


def save_config_atomic(cfg: RunConfig, path: Path) -> None:
    io.atomic_write(path, lambda tmp: save_config(cfg, tmp))


def load_run(run_dir: str | Path) -> tuple[RunConfig, Schema, torch.nn.Module]:
    """Rebuild a trained model from a run directory alone (config.yaml, schema.json, model.pt)."""
    run = Path(run_dir)
    for name in (io.CONFIG, io.SCHEMA, io.MODEL):
        if not (run / name).is_file():
            raise CTRError(f"{run}: not a complete run directory (missing {name})")
    cfg = from_dict(read_yaml(run / io.CONFIG))
    schema = Schema.from_json(run / io.SCHEMA)
    model = build_model(schema, cfg.model, cfg.norm)
    state = torch.load(run / io.MODEL, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CTRError(f"{run / io.MODEL}: weights do not match the model in config.yaml ({str(e).splitlines()[0]})") from None
    return cfg, schema, model


def evaluate_run(run_dir: str | Path, data: str | Path | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Score a trained run on its own test split (default) or on ``data`` (a raw Criteo file or a prepared dir).

    Returns the metrics and the (N,) predicted probabilities, in row order.
    """
    cfg, schema, model = load_run(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    model.to(device)
    tensors = load_eval_data(cfg, schema, data)
    logits, labels = predict_logits(model, iterate_batches(tensors, cfg.train.eval_batch_size, shuffle=False, seed=0, epoch=0), device, cfg.train.precision)
    return score(logits, labels), 1.0 / (1.0 + np.exp(-logits))


def load_eval_data(cfg: RunConfig, schema: Schema, data: str | Path | None) -> Batch:
    """The tensors to evaluate: the run's test split re-encoded from raw data, a raw file, or a prepared directory."""
    if data is None:
        return encode_source_split(schema, "test", cfg.data.on_bad_rows)
    path = Path(data)
    if path.is_dir() and (path / io.SCHEMA).is_file():
        other = Schema.from_json(path / io.SCHEMA)
        if [f.__dict__ for f in other.fields] != [f.__dict__ for f in schema.fields]:
            raise CTRError(f"{path}: prepared with a different schema than the run (fields, vocabularies or statistics differ)")
        return load_split(PreparedData.open(path), "test")
    if not path.exists():
        raise CTRError(f"{path}: no such file or directory")
    return encode_raw(path, schema, on_bad_rows=cfg.data.on_bad_rows)
