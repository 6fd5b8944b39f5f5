"""Every normalization, built the same way: ``Norm(shape, **options)``; forward maps ``(B, *shape)`` to itself.

Per-example norms (``ln``, ``ln_simple``, ``vo_ln``, ``rms``, ``gn``) take statistics over the **last axis** of
``shape`` and hold gains/biases of the full ``shape``; so ``shape = (F, D)`` is a per-field norm with per-field
parameters, and ``shape = (F * D,)`` a norm across all fields. ``bn`` takes statistics over the batch for every
element of ``shape``. ``wn`` re-parametrises the weights of the stage's Linear layers (see :class:`WeightNorm`).

Configs name a norm per stage as a string (``"vo_ln"``) or a mapping (``{name: bn, momentum: 0.01}``);
:func:`parse_norm` turns either into a validated :class:`NormSpec` once, and blocks call ``spec.build(shape)`` or
``spec.apply(linear, shape)``. Norms with a gain take ``init_gain`` (its initial value; 1 by default, the
embedding tables' init std at embedding stages: see :class:`EmbeddingNorm`). The formulas and their sources are
in ``docs/normalization.md``.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("norm")

EMBEDDING_STAGES = ("numeric", "categorical")
# stages whose norm can sit in more than one place: the valid positions, the default first
POSITIONS = {"mlp": ("pre_act", "post_act"), "attention": ("post", "pre")}


def _shape(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


class _PerExample(nn.Module):
    """Shared parameter handling for norms with statistics over the last axis."""

    param_roles = {"weight": "norm", "bias": "norm"}  # optimizer group of each parameter (ctr.train.optim)

    def __init__(self, shape: int | tuple[int, ...], eps: float, gain: bool, bias: bool, init_gain: float = 1.0) -> None:
        super().__init__()
        self.shape, self.eps = _shape(shape), eps
        self.weight = nn.Parameter(torch.full(self.shape, init_gain)) if gain else None
        self.bias = nn.Parameter(torch.zeros(self.shape)) if bias else None

    def _affine(self, y: Tensor) -> Tensor:
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{self.shape}, eps={self.eps}, gain={self.weight is not None}, bias={self.bias is not None}"


@NORMS.register("none")
class NoNorm(nn.Identity):
    """Identity; accepts and ignores the shape."""

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        super().__init__()


@NORMS.register("bn")
class BatchNorm(nn.Module):
    """BatchNorm: statistics over the batch for each element of ``shape``; running statistics in eval mode.

    Args:
        shape: per-example shape; ``(B, *shape)`` is normalised per element of ``shape``.
        eps: added to the variance.
        momentum: running-statistics update rate (PyTorch convention: new = (1 - m) * old + m * batch).
        affine: learn a gain and a bias per element.
        init_gain: initial value of the gain.

    The running statistics start from the first training batch's statistics (momentum 1 on that step), not
    from PyTorch's (and Keras') mean 0, var 1: those still weigh ``(1 - m)^t`` after ``t`` steps, and with a
    small momentum (Keras' 0.99 is PyTorch's 0.01) a short run's eval-mode statistics would be mostly the
    initial variance of 1 instead of the embeddings' variance, which is orders of magnitude smaller. Afterwards
    the update is PyTorch's (``docs/normalization.md``).
    """

    param_roles = {"bn.weight": "norm", "bn.bias": "norm"}

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 init_gain: float = 1.0) -> None:
        super().__init__()
        self.shape = _shape(shape)
        self.bn = nn.BatchNorm1d(math.prod(self.shape), eps=eps, momentum=momentum, affine=affine)
        if affine:
            nn.init.constant_(self.bn.weight, init_gain)
        self.fresh = True  # no training batch seen yet (a Python flag: no device sync per step)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        x2 = x.reshape(x.shape[0], -1)  # (B, prod(shape))
        if not (self.training and self.fresh):
            return self.bn(x2).reshape(x.shape)
        momentum, self.bn.momentum = self.bn.momentum, 1.0  # first training batch: running stats := its stats
        try:
            return self.bn(x2).reshape(x.shape)
        finally:
            self.bn.momentum, self.fresh = momentum, False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.fresh = False  # loaded running statistics are kept


@NORMS.register("ln")
class LayerNorm(_PerExample):
    """LayerNorm: ``(x - mean) / sqrt(var + eps) * g + b``, mean and (biased) var over the last axis."""

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True, init_gain: float = 1.0) -> None:
        super().__init__(shape, eps, affine, affine, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        if len(self.shape) == 1:
            return F.layer_norm(x, self.shape, self.weight, self.bias, self.eps)
        return self._affine(F.layer_norm(x, self.shape[-1:], None, None, self.eps))


@NORMS.register("ln_simple")
class SimpleLayerNorm(LayerNorm):
    """LayerNorm without gain and bias (Xu et al. 2019): ``(x - mean) / sqrt(var + eps)`` over the last axis."""

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__(shape, eps, affine=False)


@NORMS.register("vo_ln")
class VarianceOnlyLayerNorm(_PerExample):
    """Variance-only LayerNorm (Wang et al. 2020, "Correct Normalization Matters"): ``x / sqrt(var + eps) * g + b``.

    The variance is taken around the mean over the last axis, but the numerator is not re-centred; this is not
    RMSNorm, whose denominator is ``mean(x^2) = var + mean^2``. ``affine=False`` drops gain and bias,
    ``bias=False`` only the bias.
    """

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True, bias: bool = True,
                 init_gain: float = 1.0) -> None:
        super().__init__(shape, eps, affine, affine and bias, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        xf = x.float()
        var = xf.var(dim=-1, unbiased=False, keepdim=True)  # (B, ..., 1)
        return self._affine((xf * torch.rsqrt(var + self.eps)).to(x.dtype))


@NORMS.register("rms")
class RMSNorm(_PerExample):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * g`` over the last axis."""

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True, init_gain: float = 1.0) -> None:
        super().__init__(shape, eps, affine, False, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        if len(self.shape) == 1:
            return F.rms_norm(x, self.shape, self.weight, self.eps)
        return self._affine(F.rms_norm(x, self.shape[-1:], None, self.eps))


@NORMS.register("gn")
class GroupNorm(_PerExample):
    """GroupNorm (Wu & He 2018) over the last axis: LayerNorm within each of ``groups`` contiguous groups."""

    def __init__(self, shape: int | tuple[int, ...], groups: int = 2, eps: float = 1e-5, affine: bool = True,
                 init_gain: float = 1.0) -> None:
        super().__init__(shape, eps, affine, affine, init_gain)
        if groups < 1 or self.shape[-1] % groups:
            raise ConfigError(f"gn: groups={groups} must divide the normalised width {self.shape[-1]}")
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        g = x.reshape(*x.shape[:-1], self.groups, x.shape[-1] // self.groups)  # (B, ..., G, W/G)
        y = F.layer_norm(g, g.shape[-1:], None, None, self.eps).reshape(x.shape)  # (B, *shape)
        return self._affine(y)


@NORMS.register("wn")
class WeightNorm(nn.Module):
    """WeightNorm (Salimans & Kingma 2016): ``w = g * v / ||v||`` for each output unit of a Linear layer.

    Stages that own Linear layers (MLP, cross, CIN, attention) re-parametrise those weights through
    :meth:`NormSpec.apply` and add no activation norm. At embedding stages the looked-up vectors *are* weight
    rows, so this module normalises each one over the last axis to unit L2 norm and scales it by a learned gain
    ``g`` of ``shape`` (per field and dim): the per-row reparametrisation applied only to the rows in the batch,
    which costs O(B F D) instead of O(vocab D) per step.
    """

    param_roles = {"weight": "norm"}

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-8, init_gain: float = 1.0) -> None:
        super().__init__()
        self.shape, self.eps = _shape(shape), eps
        self.weight = nn.Parameter(torch.full(self.shape, init_gain))

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        return F.normalize(x, dim=-1, eps=self.eps) * self.weight


# ----------------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class NormSpec:
    """A validated norm choice for one stage.

    Attributes:
        name: registered norm name.
        options: constructor keyword arguments, checked against the norm's signature.
        scope: embedding stages only: ``field`` (default), ``all`` (across F x D) or ``dim`` (bn, shared per dim).
        position: where the norm sits, for stages with a choice (:data:`POSITIONS`): ``pre_act`` or ``post_act`` in
            an MLP layer, ``post`` or ``pre`` in an attention layer; ``""`` elsewhere.
    """

    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)
    scope: str = "field"
    position: str = ""

    @property
    def is_none(self) -> bool:
        return self.name == "none"

    @property
    def reparametrizes(self) -> bool:
        """True for norms that act on weights (``wn``), not activations."""
        return self.name == "wn"

    def build(self, shape: int | tuple[int, ...]) -> nn.Module:
        """The activation norm for per-example ``shape``."""
        return NORMS.get(self.name)(shape, **self.options)

    def apply(self, layer: nn.Module, shape: int | tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """For a stage made of ``layer`` with output ``shape``: ``(layer, activation norm)``.

        ``wn`` wraps ``layer``'s ``weight`` in ``torch.nn.utils.parametrizations.weight_norm`` (one gain per output
        unit) and returns an identity norm; every other norm leaves the layer alone.
        """
        if self.reparametrizes:
            return self.reparametrize(layer), nn.Identity()
        return layer, self.build(shape)

    def reparametrize(self, layer: nn.Module) -> nn.Module:
        """``layer`` with its ``weight`` weight-normalised (one gain per output unit) if this spec is ``wn``, else
        ``layer`` unchanged: for a stage's Linear layers that have no activation norm of their own."""
        if self.reparametrizes:
            layer = nn.utils.parametrizations.weight_norm(layer, name="weight", dim=0)
            layer.param_roles = {"parametrizations.weight.original0": "norm"}  # the magnitudes g; v stays a weight
        return layer


def _check_option(norm: str, key: str, value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: option '{key}' of norm '{norm}' must be {type(default).__name__}, got {value!r}")
    return value


def norm_options(name: str) -> dict[str, Any]:
    """The options a norm accepts, with their defaults."""
    params = list(inspect.signature(NORMS.get(name).__init__).parameters.values())[2:]  # skip self, shape
    return {p.name: p.default for p in params}


def parse_norm(value: Any, stage: str = "mlp") -> NormSpec:
    """Turn a config value (name or mapping with ``name`` and options) into the :class:`NormSpec` of ``stage``.

    Args:
        value: ``"ln"``, ``{"name": "bn", "momentum": 0.01}``, ``{"name": "ln", "position": "post_act"}``, a
            NormSpec, or None (= ``none``).
        stage: one of ``ctr.config.STAGES``; decides whether ``scope`` (embedding stages) and ``position``
            (:data:`POSITIONS`) are accepted, and names the config key in errors.

    Raises:
        ConfigError: unknown norm, unknown option, wrong option type, or a scope/position the norm or stage cannot take.
    """
    if isinstance(value, NormSpec):
        return value
    where, embedding = f"norm.{stage}", stage in EMBEDDING_STAGES
    if value is None:
        value = "none"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{where}: expected a norm name or a mapping with 'name', got {value!r}")
    opts = dict(value)
    name = opts.pop("name")
    if name not in NORMS:
        raise ConfigError(f"{where}: unknown norm '{name}'; valid: {', '.join(NORMS.names())}")
    scope = opts.pop("scope", "field")
    if scope != "field" and not embedding:
        raise ConfigError(f"{where}: option 'scope' applies only to the numeric and categorical stages")
    valid_scopes = {"field", "dim"} if name == "bn" else {"field", "all"}
    if scope not in valid_scopes:
        raise ConfigError(f"{where}: scope '{scope}' is not valid for norm '{name}'; valid: {', '.join(sorted(valid_scopes))}")
    positions = POSITIONS.get(stage, ("",))
    position = opts.pop("position", positions[0])
    if "position" in value and stage not in POSITIONS:
        raise ConfigError(f"{where}: option 'position' applies only to the {' and '.join(POSITIONS)} stages")
    if position not in positions:
        raise ConfigError(f"{where}: position {position!r} is not one of: {', '.join(positions)}")
    accepted = norm_options(name)
    if name == "wn" and not embedding:
        accepted = {k: v for k, v in accepted.items() if k != "init_gain"}  # Linear stages keep ||w|| as the gain
    for key in list(opts):
        if key not in accepted:
            extra = ["scope"] if embedding else ["position"] if stage in POSITIONS else []
            valid = ", ".join(list(accepted) + extra) or "none"
            raise ConfigError(f"{where}: unknown option '{key}' for norm '{name}'; valid: {valid}")
        opts[key] = _check_option(name, key, opts[key], accepted[key], where)
    return NormSpec(name, opts, scope, position)


class EmbeddingNorm(nn.Module):
    """The norm of an embedding stage, applied with the spec's scope.

    Args:
        spec: the stage's norm.
        num_fields: F of this stage.
        dim: D.
        init_gain: the gain's initial value when the spec does not set ``init_gain``: the embedding tables' init
            std, so that switching a norm on keeps the scale the stage had at initialisation. With a gain of 1
            every embedding has unit scale, 100x its unnormalised size, and a term that multiplies embeddings
            (FM, inner products, CIN) starts with logits of std 20-50 and does not recover in an epoch.

    ``field``: statistics per field over D, gains/biases per field (bn: per (field, dim) over the batch);
    ``all``: statistics over the stage's F x D values; ``dim`` (bn): per dim, over batch and fields.
    """

    def __init__(self, spec: NormSpec, num_fields: int, dim: int, init_gain: float = 1.0) -> None:
        super().__init__()
        self.scope = spec.scope
        shape = {"field": (num_fields, dim), "all": (num_fields * dim,), "dim": (dim,)}[spec.scope]
        if "init_gain" in norm_options(spec.name) and "init_gain" not in spec.options:
            spec = dataclasses.replace(spec, options={**spec.options, "init_gain": init_gain})
        self.norm = spec.build(shape)

    def forward(self, x: Tensor) -> Tensor:
        """(B, F, D) -> (B, F, D)."""
        if self.scope == "field":
            return self.norm(x)
        if self.scope == "all":
            return self.norm(x.reshape(x.shape[0], -1)).reshape(x.shape)  # (B, F*D) -> (B, F, D)
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)  # (B*F, D) -> (B, F, D)


def list_norms() -> list[str]:
    return NORMS.names()
