"""Multi-process data-parallel training with ``torch.distributed`` (launched by ``torchrun``).

Each rank trains on a disjoint shard of every epoch's permutation; gradients are averaged by DDP. Rank 0 prepares
the data (the others wait, then read the cache), evaluates, and writes the run directory.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistContext()  # one process on the CPU: the default context of code that may run under DDP


def launched_world_size() -> int:
    """The number of processes ``torchrun`` launched (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single-process context.

    On CUDA each rank uses ``cuda:LOCAL_RANK`` and NCCL; on CPU, gloo.
    """
    if launched_world_size() <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. the early-stopping decision)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return bool(t.item())


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. a non-finite gradient, a stop signal)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_to_main(ctx: DistContext, obj: object) -> list | None:
    """Every rank's ``obj`` (picklable), in rank order, on rank 0; None on the other ranks."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group once every rank is done: a rank that tore its group down and exited while rank 0
    was still testing could abort at exit."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``; under torchrun (``WORLD_SIZE`` > 1) without the interpreter's finalization.

    Gloo's worker threads drop their last references to finished collectives asynchronously, and with them the
    tensors those collectives held (the flags of ``any_rank``, DDP's buffer broadcasts). A tensor known to Python
    needs the GIL to be freed; a worker thread that frees one while the interpreter finalizes cannot take it, and the
    C++ runtime aborts the process (std::terminate) after a run that succeeded. Destroying the process group does not
    stop those threads. Everything a run writes is closed and renamed before this point, so only logging and the
    standard streams are flushed.
    """
    if launched_world_size() <= 1:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
