"""A whole training run: prepare the data, build the model, fit, test, and write the run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ctr.config import RunConfig, TrainConfig
from ctr.data.prepare import PreparedData, prepare_data
from ctr.errors import CTRError
from ctr.models import build_model
from ctr.train.checkpoint import CHECKPOINT, load_checkpoint
from ctr.train.data_source import open_data_source
from ctr.train.device import resolve_device, seed_everything
from ctr.train.diagnostics import open_diagnostics
from ctr.train.distributed import DistContext, barrier, init_distributed, shutdown
from ctr.train.epoch import Hook
from ctr.train.evaluation import evaluate
from ctr.train.guard import Diverged
from ctr.train.interrupt import StopRequests
from ctr.train.loop import FitResult, fit
from ctr.train.memory import keep_freed_memory
from ctr.train.optim import use_sparse_embeddings
from ctr.train.run_dir import NoRunDir, RunDir
from ctr.train.tracking import TensorBoardLog
from ctr.types import Schema


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


SPARSE_HINT_ROWS = 1_000_000  # embedding rows above which sparse embeddings pay (docs/benchmarks.md, Sparse embeddings)


def train_run(
    cfg: RunConfig,
    out_dir: str | Path,
    hooks: tuple[Hook, ...] = (),
    prepared: PreparedData | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train and test one configuration; returns what is written to ``results.json`` (``{}`` on DDP ranks != 0).

    The run directory (see :class:`RunDir`) gets ``config.yaml`` (resolved), ``schema.json``, ``metrics.jsonl``,
    ``checkpoint.pt`` while training, ``model.pt`` (best weights) and ``results.json``; only rank 0 writes. Nothing
    is written before the data is prepared and the model built, so a run that fails to start leaves no directory.
    The checkpoint is deleted once ``results.json`` is written.

    Args:
        cfg: the resolved run config.
        out_dir: the run directory, created if needed.
        hooks: extra training hooks, called after each backward pass (see :class:`EpochTrainer`).
        prepared: already prepared data matching ``cfg.data`` (skips the cache lookup).
        resume: continue from ``out_dir``'s checkpoint instead of starting afresh.

    Raises:
        Diverged: the divergence guard stopped the run (also recorded in ``diverged.json``).
        Interrupted: SIGINT or SIGTERM arrived; a checkpoint was written first.
    """
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ctx = init_distributed(resolve_device(tc.device))
    check_supported(tc, ctx)
    run_dir = RunDir(out_dir) if ctx.is_main else NoRunDir()
    checkpoint = load_checkpoint(Path(out_dir) / CHECKPOINT) if resume else None
    prepared = prepare_on_main(cfg, ctx, prepared)
    keep_freed_memory()  # after preparing: training reuses its large blocks every step
    seed_everything(tc.seed)  # same initial weights on every rank
    model, train_model = build_train_model(prepared.schema, cfg, ctx)
    data = open_data_source(prepared, cfg, ctx)
    if checkpoint is None:
        run_dir.create()
        run_dir.write_config(cfg)
        run_dir.write_schema(prepared.schema)
    elif ctx.is_main:
        run_dir.truncate_logs(checkpoint["logs"])
    log_model(model, cfg, prepared, ctx)
    tb = open_tensorboard(cfg, run_dir, checkpoint) if ctx.is_main else None
    diagnostics = open_diagnostics(cfg.diagnostics, run_dir.path, tc.lr, resume, tb.diagnostics if tb else None)
    try:
        with StopRequests() as stop, diagnostics as diag:
            result = fit(train_model, data, cfg, run_dir, ctx.device, hooks + diag, ctx, checkpoint, stop)
    except Diverged as e:
        run_dir.write_diverged(e.step, e.epoch, str(e))
        raise
    finally:
        if tb is not None:
            tb.close()
    results: dict[str, Any] = {}
    if ctx.is_main:
        results = summarize(
            result, evaluate(model, data.eval_batches("test"), ctx.device, tc.precision, "test"), model, ctx
        )
        run_dir.write_results(results)
        run_dir.checkpoint.unlink(missing_ok=True)
    shutdown(ctx)
    return results


def open_tensorboard(cfg: RunConfig, run_dir: RunDir, checkpoint: dict[str, Any] | None) -> TensorBoardLog | None:
    """The run's TensorBoard log (``train.tensorboard``), fed every metrics record; None when off."""
    if not cfg.train.tensorboard:
        return None
    tb = TensorBoardLog(run_dir.tensorboard, purge_step=checkpoint["trainer"]["step"] if checkpoint else None)
    run_dir.metric_sinks.append(tb.metrics)
    return tb


def check_supported(tc: TrainConfig, ctx: DistContext) -> None:
    """Raise CTRError for training options this device or process layout cannot run."""
    if tc.precision == "fp16" and ctx.device.type != "cuda":
        raise CTRError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    if tc.sparse_embeddings and ctx.enabled:
        raise CTRError("train.sparse_embeddings is not supported with several processes (DDP); turn it off")


def prepare_on_main(cfg: RunConfig, ctx: DistContext, prepared: PreparedData | None) -> PreparedData:
    """``prepared``, or the data prepared (or found in the cache) by rank 0, which the other ranks then read."""
    if ctx.is_main:
        prepared = prepared or prepare_data(cfg.data, progress=cfg.train.progress)
    barrier(ctx)  # the other ranks read rank 0's cached preparation
    return prepared or prepare_data(cfg.data, progress=False)


def build_train_model(schema: Schema, cfg: RunConfig, ctx: DistContext) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model on ``ctx.device`` and the module to train: the model itself, or its DDP wrapper with several ranks."""
    model = build_model(schema, cfg.model, cfg.norm).to(ctx.device)
    if cfg.train.sparse_embeddings:
        use_sparse_embeddings(model)
    if not ctx.enabled:
        return model, model
    return model, DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def log_model(model: torch.nn.Module, cfg: RunConfig, prepared: PreparedData, ctx: DistContext) -> None:
    """Log the model's size and device; hint at sparse embeddings when dense Adam updates a big table every step."""
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {cfg.model.name}: {n_params:,} parameters on {ctx.device}; data {prepared.dir}")
    rows = prepared.schema.id_rows
    if rows >= SPARSE_HINT_ROWS and not cfg.train.sparse_embeddings and not ctx.enabled:
        log(
            f"hint: {rows:,} embedding rows; dense Adam updates all of them every step, "
            "train.sparse_embeddings=true updates only a batch's rows (docs/benchmarks.md: 1.42x faster at 2.44M rows)"
        )


def summarize(result: FitResult, test: dict[str, float], model: torch.nn.Module, ctx: DistContext) -> dict[str, Any]:
    """The contents of ``results.json``: best valid metrics, test metrics of the best weights, training figures."""
    return {
        "valid": result.best_valid,
        "test": test,
        "train": {
            "samples_per_sec": result.samples_per_sec * ctx.world_size,
            "seconds": result.seconds,
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "skipped_batches": result.skipped_batches,
        },
    }
