"""The divergence guard: a non-finite loss or gradient is caught in the step that produced it, before the update.

``train.on_nonfinite`` decides what follows: ``stop`` ends the run with :class:`Diverged` (the best weights saved
so far and the last checkpoint stay as they were); ``skip_batch`` drops the batch's update and goes on, and ends
the run after ``train.skip_limit`` such batches in a row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ctr.errors import CTRError


class Diverged(CTRError):
    """Training produced a non-finite loss, gradient or prediction.

    Attributes:
        step: the step that went non-finite (1-based, as ``step`` in ``metrics.jsonl``).
        epoch: the epoch it happened in.
        what: what went non-finite, e.g. ``loss; gradients of weight, bias``.
    """

    def __init__(self, step: int, epoch: int, what: str, advice: str = "") -> None:
        self.step, self.epoch, self.what = step, epoch, what
        super().__init__(f"training diverged at step {step} (epoch {epoch}): non-finite {what}" + advice)


def _values(g: torch.Tensor) -> torch.Tensor:
    # a sparse gradient (train.sparse_embeddings) may hold a row twice before coalescing; finiteness does not care
    return g._values() if g.is_sparse else g


def nonfinite_parts(loss: torch.Tensor, groups: list[dict], check_grads: bool) -> list[str]:
    """What is non-finite after a backward pass: ``"loss"`` and/or ``"gradients of <role>"`` per parameter group.

    One host sync per call: the loss and one norm per group are checked together; names are worked out only
    when something is non-finite.

    Args:
        loss: the () loss of the step.
        groups: the optimizer's parameter groups, each with ``params`` and ``role``.
        check_grads: False when a gradient scaler owns gradient overflow (fp16): only the loss is checked.
    """
    norms = [loss.detach().float().reshape(())]
    roles = []
    if check_grads:
        for g in groups:
            grads = [_values(p.grad) for p in g["params"] if p.grad is not None]
            if grads:
                norms.append(torch.stack(torch._foreach_norm(grads)).float().sum())
                roles.append(g["role"])
    finite = torch.isfinite(torch.stack(norms))
    if bool(finite.all()):
        return []
    flags = finite.tolist()
    parts = ["loss"] if not flags[0] else []
    bad = [role for role, ok in zip(roles, flags[1:]) if not ok]
    return parts + ([f"gradients of {', '.join(bad)}"] if bad else [])


class NonFiniteGuard:
    """Checks every step; :meth:`check` says whether to apply the step's update.

    Args:
        mode: ``stop`` or ``skip_batch`` (``train.on_nonfinite``).
        skip_limit: non-finite batches in a row that end a ``skip_batch`` run.
        agree: combines this process's "non-finite" flag with the other DDP ranks' (any rank's flag counts), so
            every rank skips or stops at the same step; the identity for one process.
    """

    def __init__(self, mode: str, skip_limit: int, agree: Callable[[bool], bool] = lambda flag: flag) -> None:
        self.mode, self.skip_limit, self.agree = mode, skip_limit, agree
        self.skipped = 0  # batches skipped since training began
        self.in_row = 0

    def check(self, loss: torch.Tensor, groups: list[dict], check_grads: bool, step: int, epoch: int) -> bool:
        """True when the step's update may be applied; False to skip the batch. ``step`` and ``epoch`` are the
        step's own (1-based), for the message.

        Raises:
            Diverged: the step is non-finite and the mode is ``stop``, or ``skip_limit`` batches in a row were.
        """
        parts = nonfinite_parts(loss, groups, check_grads)
        if not self.agree(bool(parts)):
            self.in_row = 0
            return True
        what = "; ".join(parts) or "values on another process"
        if self.mode == "stop":
            raise Diverged(step, epoch, what)
        self.skipped += 1
        self.in_row += 1
        if self.in_row >= self.skip_limit:
            raise Diverged(step, epoch, f"{what} in {self.in_row} batches in a row (train.skip_limit)")
        return False

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_row": self.in_row}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped, self.in_row = state["skipped"], state["in_row"]
