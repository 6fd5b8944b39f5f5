"""Checkpoints: everything a killed run needs to continue as if it had never stopped.

``checkpoint.pt`` holds the weights, the trainer's state (optimizers, step, gradient scaler, guard counts), the
early stopping's state (best weights included), the finished epochs' records, the position inside the current
epoch, every random number generator's state of every process, and the lengths of the run's logs, which a resumed
run cuts back to (so records written after the checkpoint are not repeated). It is written atomically (temp file +
rename): a crash while writing leaves the previous checkpoint. It is loaded with ``weights_only=True``: plain
tensors and containers only, so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctr.errors import CTRError

CHECKPOINT = "checkpoint.pt"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """The state of every generator a training step may draw from: torch (CPU and CUDA), numpy, Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    from ctr.train import io

    io.save_state(path, {"version": VERSION, **state})


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, on the CPU.

    Raises:
        CTRError: no checkpoint, or a file that is not one (truncated, corrupt, or holding objects other than
            tensors and containers), naming the file.
    """
    if not path.is_file():
        raise CTRError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for a damaged or unsafe file
        raise CTRError(f"{path}: not a readable checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise CTRError(f"{path}: not a checkpoint of this version of ctr")
    return state


class Checkpointer:
    """Writes the checkpoints of one :func:`ctr.train.loop.fit` call and restores them.

    Holds references to the live objects it saves (the model, the trainer, the early stopping, the loop's state);
    :meth:`save` is called by every rank at the same steps (the generators' states are gathered to rank 0, which
    writes).
    """

    def __init__(self, cfg, core, trainer, stopping, state, run_dir, ctx) -> None:
        self.cfg, self.core, self.trainer, self.stopping, self.state = cfg, core, trainer, stopping, state
        self.run_dir, self.ctx = run_dir, ctx
        self.saved: tuple[int, int, int] | None = None  # (epoch, batches into it, step) of the last checkpoint

    def save(self, progress) -> None:
        """Checkpoint now: mid-epoch with ``progress`` (an EpochProgress), or at an epoch boundary with None."""
        from ctr.train.distributed import gather_to_main

        where = (self.state.epoch, progress.batches if progress else 0, self.trainer.step)
        if where == self.saved:
            return
        rngs = gather_to_main(self.ctx, rng_state())
        self.saved = where
        if not self.ctx.is_main:
            return
        fit = {**self.state.state_dict(), "progress": progress.state_dict() if progress else None}
        state = {
            "config": comparable(self.cfg.to_dict()),
            "world_size": self.ctx.world_size,
            "model": self.core.state_dict(),
            "trainer": self.trainer.state_dict(),
            "stopping": self.stopping.state_dict(),
            "fit": fit,
            "rng": rngs,
            "logs": self.run_dir.log_sizes(),
        }
        save_checkpoint(self.run_dir.checkpoint, state)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load ``checkpoint`` into the model, trainer and early stopping, and this rank's generators.

        Raises:
            CTRError: the checkpoint was written by another number of processes or for another config.
        """
        if checkpoint["world_size"] != self.ctx.world_size:
            raise CTRError(
                f"the checkpoint was written by {checkpoint['world_size']} processes; "
                f"resume it with the same number (now {self.ctx.world_size})"
            )
        if checkpoint["config"] != comparable(self.cfg.to_dict()):
            raise CTRError("the checkpoint was written for another config than this run's config.yaml")
        self.core.load_state_dict(checkpoint["model"])
        self.trainer.load_state_dict(checkpoint["trainer"])
        self.stopping.load_state_dict(checkpoint["stopping"])
        set_rng_state(checkpoint["rng"][self.ctx.rank])
        fit = checkpoint["fit"]
        self.saved = (fit["epoch"], fit["progress"]["batches"] if fit["progress"] else 0, self.trainer.step)

    def resume_hint(self) -> str:
        return f"checkpoint written to {self.run_dir.checkpoint}; continue with: train.py --resume {self.run_dir.path}"

    def divergence_advice(self, mode: str) -> str:
        """What is left after a divergence and what to try, for the error message (rank 0's view)."""
        best = self.stopping
        kept = (
            f"{self.run_dir.model} holds the best weights so far (epoch {best.best_epoch}, valid AUC "
            f"{best.best_auc:.6f})"
            if best.best_state is not None
            else "no weights were saved (no epoch finished)"
        )
        last = f"the last good checkpoint is {self.run_dir.checkpoint} (step {self.saved[2]})" if self.saved else ""
        try_ = "try a lower train.lr or a train.warmup_steps" + (
            ", or train.on_nonfinite=skip_batch" if mode == "stop" else ""
        )
        return "; " + "; ".join(p for p in (kept, last, try_) if p)


# settings a resumed run may change: none of them changes the weights
IGNORED = ("threads", "progress", "device", "checkpoint_every", "tensorboard")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the settings a resumed run may change."""
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in IGNORED}}
