"""Every normalization, built the same way: ``Norm(shape, **options)``; forward maps ``(B, *shape)`` to itself.

Per-example norms (``ln``, ``ln_simple``, ``vo_ln``, ``mean_only``, ``rms``, ``gn``) take statistics over the
**last axis** of ``shape`` and hold gains/biases of the full ``shape``; so ``shape = (F, D)`` is a per-field norm
with per-field parameters, and ``shape = (F * D,)`` a norm across all fields. Batch norms (``bn``, ``noisy_bn``,
``lp_bn``: subclasses of :class:`BatchNorm`) take statistics over the batch for every element of ``shape``. ``wn``
re-parametrises weights instead of activations (see :class:`WeightNorm`).

Configs name a norm per stage as a string (``"vo_ln"``) or a mapping (``{name: bn, momentum: 0.01}``);
:func:`parse_norm` turns either into a validated :class:`NormSpec` once, and blocks call ``spec.build(shape)`` or
``spec.apply(linear, shape)``. Norms with a gain take ``init_gain`` (its initial value; 1 by default, the
embedding tables' init std at embedding stages: see :class:`EmbeddingNorm`). The formulas and their sources are
in ``docs/normalization.md``.
"""

from __future__ import annotations

import dataclasses
import functools
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

    def __init__(
        self, shape: int | tuple[int, ...], eps: float, gain: bool, bias: bool, init_gain: float = 1.0
    ) -> None:
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

    def __init__(
        self,
        shape: int | tuple[int, ...],
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        init_gain: float = 1.0,
    ) -> None:
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


@NORMS.register("noisy_bn")
class NoisyBatchNorm(BatchNorm):
    """BatchNorm with noise on its normalised output in training (the "noisy BatchNorm" of Santurkar, Tsipras,
    Ilyas, Madry 2018, "How Does Batch Normalization Help Optimization?", NeurIPS, arXiv 1805.11604).

    The paper injects noise "from a non-zero mean and non-unit variance distribution" that "changes at each time
    step" after each BatchNorm, so that every layer's input distribution moves from step to step (simulated
    internal covariate shift) while BatchNorm's normalisation stays. Its exact noise distributions and ranges
    (its appendix) could not be checked here, so this is an approximation with the scales as options. At every
    training step, fresh for each element ``j`` of ``shape``, ``m_j ~ U(-noise_mean, noise_mean)`` and
    ``s_j ~ U(1, noise_std)`` are drawn, and with ``z = (x - mean_B) / sqrt(var_B + eps)``:

    * ``per_unit`` (default): ``y = g * (s_j * z + m_j) + b``: each unit's batch statistics are moved to mean
      ``m_j`` and std ``s_j`` (multiplicative and additive noise on the statistics; the same for every example).
    * ``per_example``: ``y = g * (z + xi) + b`` with ``xi ~ N(m_j, s_j^2)`` drawn independently for every
      example and unit (additive i.i.d. noise whose mean and variance change every step).

    The noise sits on ``z``, before the gain and bias, so that its size is relative to the layer's scale (gains
    start at the embedding init std at embedding stages). The running statistics are updated from the clean batch
    statistics, and eval mode is exactly ``bn``'s (running statistics, no noise). The first-batch warm start and
    the ``fresh`` flag are :class:`BatchNorm`'s. Other args as :class:`BatchNorm`.
    """

    MODES = ("per_unit", "per_example")

    def __init__(
        self,
        shape: int | tuple[int, ...],
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        init_gain: float = 1.0,
        noise_mean: float = 0.5,
        noise_std: float = 1.5,
        mode: str = "per_unit",
    ) -> None:
        super().__init__(shape, eps, momentum, affine, init_gain)
        if mode not in self.MODES:
            raise ConfigError(f"noisy_bn: mode '{mode}' is not one of: {', '.join(self.MODES)}")
        if noise_mean < 0 or noise_std < 1:
            raise ConfigError(f"noisy_bn: need noise_mean >= 0 and noise_std >= 1, got {noise_mean}, {noise_std}")
        self.noise_mean, self.noise_std, self.mode = noise_mean, noise_std, mode

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        if not self.training:
            return super().forward(x)
        bn = self.bn
        x2 = x.reshape(x.shape[0], -1)  # (B, N)
        momentum = 1.0 if self.fresh else bn.momentum  # first training batch: running stats := its stats
        z = F.batch_norm(x2, bn.running_mean, bn.running_var, None, None, True, momentum, bn.eps)  # (B, N)
        bn.num_batches_tracked.add_(1)
        self.fresh = False
        n = z.shape[1]
        m = (torch.rand(n, device=z.device) * 2 - 1).mul_(self.noise_mean).to(z.dtype)  # (N,)
        s = (1 + torch.rand(n, device=z.device) * (self.noise_std - 1)).to(z.dtype)  # (N,)
        if self.mode == "per_unit":
            y = z * s + m
        else:
            y = z + m + s * torch.randn_like(z)
        if bn.affine:
            y = y * bn.weight + bn.bias
        return y.reshape(x.shape)


@functools.lru_cache(maxsize=64)
def gaussian_max_abs(n: int) -> float:
    """``E[max(|Z_1|, ..., |Z_n|)]`` for i.i.d. standard normal ``Z``: the integral over ``t >= 0`` of
    ``P(max > t) = 1 - erf(t / sqrt(2))^n`` (trapezoid rule on [0, 12]; the tail beyond 12 is below 1e-30 n)."""
    t = torch.linspace(0.0, 12.0, 48001, dtype=torch.float64)
    return float(torch.trapezoid(1 - torch.erf(t / math.sqrt(2)) ** n, t))


@NORMS.register("lp_bn")
class LpBatchNorm(BatchNorm):
    """BatchNorm that divides by a scale from the ``p``-norm of the centred batch instead of its standard deviation
    (Hoffer, Banner, Golan, Soudry 2018, "Norm matters: efficient and accurate normalization schemes in deep
    networks", arXiv 1803.01814; the l1/l2/l-inf schemes of Santurkar et al. 2018 differ by constant factors if
    their norms are of the centred batch, which is not verified).

    Per element of ``shape``, over the batch of ``n`` values with mean ``mu``:
    ``y = g * (x - mu) / sqrt(S^2 + eps) + b`` with

    * ``p = 1``: ``S = sqrt(pi / 2) * mean |x - mu|``: equals the std for Gaussian data (``E|x - mu| = sigma
      sqrt(2 / pi)``), the constant of Hoffer et al.'s L1 batch norm;
    * ``p = 2``: ``S = sqrt(mean (x - mu)^2)``: the batch std, so ``lp_bn`` with ``p: 2`` is ``bn``;
    * ``p = inf``: ``S = max |x - mu| / E[max of n |N(0, 1)|]`` (:func:`gaussian_max_abs`): equals the std in
      expectation for Gaussian data, up to the O(1/n) effect of centring by the batch mean. Hoffer et al.'s released
      code (their L-inf batch norm with k = 1) divides instead by ``2 sqrt(2 ln n) / (1 + sqrt(pi ln 4))``, the
      harmonic mean of a lower and an upper bound of that expectation, which gives about 1.42 sigma at n = 1024:
      a starting scale that differs from ``bn``'s would confound the comparison this control is for.

    ``eps`` sits inside the square root as in ``bn`` (Hoffer et al.'s code adds it to S). The running statistics
    follow ``bn``: mean and ``S^2 * n / (n - 1)`` (for ``p = 2`` PyTorch's unbiased running variance), warm-started
    from the first training batch; eval mode is ``bn``'s ``(x - running_mean) / sqrt(running_var + eps)``.

    Args:
        p: ``1``, ``2`` or ``inf`` (a number or the string ``"inf"``).
        eps, momentum, affine, init_gain: as :class:`BatchNorm`.
    """

    P_VALUES = {"1": 1.0, "2": 2.0, "inf": math.inf}

    def __init__(
        self,
        shape: int | tuple[int, ...],
        p: str = "2",
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        init_gain: float = 1.0,
    ) -> None:
        super().__init__(shape, eps, momentum, affine, init_gain)
        key = str(p).lower()
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            key = "inf" if math.isinf(p) else str(int(p)) if float(p).is_integer() else key
        if key not in self.P_VALUES:
            raise ConfigError(f"lp_bn: p={p!r} is not one of: 1, 2, inf")
        self.p = self.P_VALUES[key]

    def scale(self, centred: Tensor) -> Tensor:
        """S of each column of ``centred`` (n, N): (N,)."""
        a = centred.abs()
        if self.p == 1:
            return a.mean(0) * math.sqrt(math.pi / 2)
        if self.p == 2:
            return a.pow(2).mean(0).sqrt()
        return a.amax(0) / gaussian_max_abs(centred.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        if not self.training:
            return super().forward(x)
        bn = self.bn
        x2 = x.reshape(x.shape[0], -1).float()  # (B, N)
        n = x2.shape[0]
        mu = x2.mean(0)  # (N,)
        c = x2 - mu  # (B, N)
        s2 = self.scale(c).pow(2)  # (N,)
        with torch.no_grad():
            momentum = 1.0 if self.fresh else bn.momentum
            bn.running_mean.lerp_(mu.detach(), momentum)
            bn.running_var.lerp_(s2.detach() * n / max(n - 1, 1), momentum)
            bn.num_batches_tracked.add_(1)
        self.fresh = False
        y = (c * torch.rsqrt(s2 + bn.eps)).to(x.dtype)
        if bn.affine:
            y = y * bn.weight + bn.bias
        return y.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@NORMS.register("ln")
class LayerNorm(_PerExample):
    """LayerNorm: ``(x - mean) / sqrt(var + eps) * g + b``, mean and (biased) var over the last axis."""

    def __init__(
        self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True, init_gain: float = 1.0
    ) -> None:
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
    """Variance-only LayerNorm, VO-LN (Wang, She, Zhang, Zhang 2020, "Correct Normalization Matters", arXiv
    2006.12753): LayerNorm without its bias, its gain **and** its re-centring: ``x / sqrt(var + eps)``.

    The variance is taken around the mean over the last axis, but the numerator is not re-centred; this is not
    RMSNorm, whose denominator is ``mean(x^2) = var + mean^2``. No parameters by default, as the project's source
    notes define VO-LN (the paper's full text was not available: ``docs/normalization.md``); ``affine=True`` gives
    the affine variant ``g * x / sqrt(var + eps) + b`` (gain from ``init_gain``, bias 0).
    """

    def __init__(
        self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = False, init_gain: float = 1.0
    ) -> None:
        super().__init__(shape, eps, affine, affine, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        xf = x.float()
        var = xf.var(dim=-1, unbiased=False, keepdim=True)  # (B, ..., 1)
        return self._affine((xf * torch.rsqrt(var + self.eps)).to(x.dtype))


@NORMS.register("mean_only")
class MeanOnlyNorm(_PerExample):
    """Re-centring without scaling: ``x - mean(x) + b`` over the last axis (a control for VO-LN: VO-LN keeps the
    division and drops the re-centring, this keeps the re-centring and drops the division; NormDNN's claim is that
    the variance is what matters). ``bias=False`` drops ``b``."""

    def __init__(self, shape: int | tuple[int, ...], bias: bool = True) -> None:
        super().__init__(shape, 0.0, False, bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        return self._affine(x - x.mean(dim=-1, keepdim=True))

    def extra_repr(self) -> str:
        return f"{self.shape}, bias={self.bias is not None}"


@NORMS.register("rms")
class RMSNorm(_PerExample):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * g`` over the last axis."""

    def __init__(
        self, shape: int | tuple[int, ...], eps: float = 1e-5, affine: bool = True, init_gain: float = 1.0
    ) -> None:
        super().__init__(shape, eps, affine, False, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape)."""
        if len(self.shape) == 1:
            return F.rms_norm(x, self.shape, self.weight, self.eps)
        return self._affine(F.rms_norm(x, self.shape[-1:], None, self.eps))


@NORMS.register("gn")
class GroupNorm(_PerExample):
    """GroupNorm (Wu & He 2018) over the last axis: LayerNorm within each of ``groups`` contiguous groups."""

    def __init__(
        self,
        shape: int | tuple[int, ...],
        groups: int = 2,
        eps: float = 1e-5,
        affine: bool = True,
        init_gain: float = 1.0,
    ) -> None:
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
    """WeightNorm (Salimans & Kingma 2016): ``w = g * v / ||v||``, a magnitude and a direction per weight vector.

    ``wn`` acts on weights, so as an activation norm this module is the identity. Stages that own Linear layers
    (MLP, cross, CIN, attention) re-parametrise those weights through :meth:`NormSpec.apply` (one magnitude per
    output unit; no options). At embedding stages every embedding vector the stage owns (a table row, a dense
    field's ``v``, ``b``, ``m``) gets its own magnitude: :class:`ctr.nn.embedding.RowWeightNorm`, a subclass, with
    ``eps`` guarding ``||v||``.
    """

    def __init__(self, shape: int | tuple[int, ...], eps: float = 1e-8) -> None:
        super().__init__()
        self.shape, self.eps = _shape(shape), eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, *shape), unchanged."""
        return x


# ----------------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class NormSpec:
    """A validated norm choice for one stage.

    Attributes:
        name: registered norm name.
        options: constructor keyword arguments, checked against the norm's signature.
        scope: embedding stages only: ``field`` (default), ``all`` (across F x D) or ``dim`` (batch norms, shared
            per dim); ``wn`` takes only ``field`` (it acts on each embedding vector).
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


def is_batch_norm(name: str) -> bool:
    """True for norms with batch statistics (:class:`BatchNorm` and its subclasses)."""
    return issubclass(NORMS.get(name), BatchNorm)


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
    valid_scopes = {"field", "dim"} if is_batch_norm(name) else {"field"} if name == "wn" else {"field", "all"}
    if scope not in valid_scopes:
        raise ConfigError(
            f"{where}: scope '{scope}' is not valid for norm '{name}'; valid: {', '.join(sorted(valid_scopes))}"
        )
    positions = POSITIONS.get(stage, ("",))
    position = opts.pop("position", positions[0])
    if "position" in value and stage not in POSITIONS:
        raise ConfigError(f"{where}: option 'position' applies only to the {' and '.join(POSITIONS)} stages")
    if position not in positions:
        raise ConfigError(f"{where}: position {position!r} is not one of: {', '.join(positions)}")
    accepted = norm_options(name)
    if name == "wn" and not embedding:
        accepted = {}  # torch's weight_norm on Linear layers: magnitudes start at ||w||, no eps to set
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

    ``field``: statistics per field over D, gains/biases per field (batch norms: per (field, dim) over the batch);
    ``all``: statistics over the stage's F x D values; ``dim`` (batch norms): per dim, over batch and fields.
    ``wn`` is not an activation norm: :class:`ctr.nn.embedding.FieldEmbedding` builds its
    :class:`ctr.nn.embedding.RowWeightNorm` instead.
    """

    def __init__(self, spec: NormSpec, num_fields: int, dim: int, init_gain: float = 1.0) -> None:
        super().__init__()
        if spec.reparametrizes:
            raise ValueError("wn at an embedding stage re-parametrises the embedding rows: use RowWeightNorm")
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
