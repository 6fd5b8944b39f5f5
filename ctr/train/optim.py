"""Optimizer parameter groups by tensor role, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ctr.config import TrainConfig
from ctr.errors import ConfigError

ROLES = ("embedding", "norm", "weight", "bias")


def param_roles(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split parameters by role, so that changing a norm never silently changes regularisation.

    Modules declare the roles of the parameters they own in a ``param_roles`` mapping (local parameter name ->
    role): embedding tables and per-field embedding vectors are ``embedding``, norm gains and biases (embedding
    stages included) and weight-norm magnitudes are ``norm``. Undeclared parameters are ``weight`` (>= 2 dims) or
    ``bias`` (the rest: biases, scalar gates).
    """
    declared: dict[int, str] = {}
    for module in model.modules():
        roles = getattr(module, "param_roles", None)
        if roles:
            own = dict(module.named_parameters())
            declared.update({id(own[name]): role for name, role in roles.items() if name in own})
    out: dict[str, list[tuple[str, nn.Parameter]]] = {r: [] for r in ROLES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[declared.get(id(p), "weight" if p.ndim >= 2 else "bias")].append((name, p))
    return out


class Optimizers:
    """One or more torch optimizers stepped together: Adam, plus SparseAdam for sparse embedding tables.

    ``param_groups`` lists every group of every optimizer (each with its ``role`` and ``base_lr``), so the
    schedule sets ``lr`` on all of them.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]
        for g in self.param_groups:
            g["base_lr"] = g["lr"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def set_lr_factor(self, factor: float) -> None:
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * factor


def use_sparse_embeddings(model: nn.Module) -> None:
    """Make every ``nn.Embedding`` of ``model`` produce sparse gradients (``train.sparse_embeddings``)."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.sparse = True


FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.Adam(fused=True) runs


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizers:
    """Adam with one parameter group per role and the role's weight decay (L2, coupled as in ``torch.optim.Adam``).

    Tables of embeddings made sparse by :func:`use_sparse_embeddings` go to ``torch.optim.SparseAdam`` instead
    (lazy Adam: only the rows in the batch, moments included, are updated: O(B F D) per step instead of
    O(vocab D)); it has no weight decay.
    """
    decay = {
        "embedding": cfg.embedding_weight_decay,
        "norm": cfg.norm_weight_decay,
        "weight": cfg.weight_decay,
        "bias": 0.0,
    }
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
    groups, sparse_params = [], []
    for role, ps in param_roles(model).items():
        dense = [p for _, p in ps if id(p) not in sparse]
        sparse_params += [p for _, p in ps if id(p) in sparse]
        if dense:
            groups.append({"params": dense, "weight_decay": decay[role], "role": role})
    # fused: one kernel over all parameters instead of a loop per parameter, the same update up to float rounding
    # (`python benchmarks/train.py adam` compares both)
    fused = all(p.device.type in FUSED_DEVICES for g in groups for p in g["params"])
    optimizers = [torch.optim.Adam(groups, lr=cfg.lr, fused=fused)] if groups else []
    if sparse_params:
        if cfg.embedding_weight_decay:
            raise ConfigError(
                "train.embedding_weight_decay needs dense embeddings: SparseAdam (train.sparse_embeddings) has no weight decay"
            )
        optimizers.append(torch.optim.SparseAdam(sparse_params, lr=cfg.lr))
        optimizers[-1].param_groups[0]["role"] = "sparse_embedding"
    return Optimizers(optimizers)


def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step`` (0-based): linear warm-up, then constant, linear or cosine decay to 0."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "none":
        return 1.0
    span = max(total_steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return 1.0 - t if cfg.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
