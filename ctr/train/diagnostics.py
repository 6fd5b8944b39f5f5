"""Training diagnostics (sources in ``docs/normalization.md``), logged every ``diagnostics.every`` steps.

A :class:`Diagnostics` object is a training hook: ``fit`` calls it after the backward pass and before the
optimizer step, so the training gradients are in ``.grad``. At step 0 (initialisation) and every ``every`` steps
it appends one JSON record to ``diagnostics.jsonl`` with:

* ``grad_norms``: Frobenius norm of the training gradient of every weight matrix (>= 2-d), plus ``grad_norm``
  over all parameters (Xiong et al. 2020 measure per-layer gradient norms at initialisation and after warm-up).
  Under fp16 the trainer unscales the gradients before the hooks run, so these are the true gradients.
* ``init_grad_norms`` (step 0 only): the same norms at the initial weights, mean and std over the first
  ``init_batches`` training batches (one batch is a noisy estimate of a per-layer profile).
* ``landscape``: loss and gradient along the gradient direction on the same batch (Santurkar et al. 2018,
  Fig. 4): the loss range over ``{L(W - eta g)}``, gradient predictiveness ``||grad L(W) - grad L(W - eta g)||``
  and effective beta-smoothness ``max_eta ||grad L(W) - grad L(W - eta g)|| / ||eta g||``.
* ``activations``: mean and variance of every norm's output, of every Linear's output (pre-activations) and of
  the numeric / categorical embedding stages; the fraction of zero ReLU outputs; the logit distribution.
* ``numeric_value``: per dense numeric field, the held-out R^2 of a linear probe that reads the field's value ``x``
  back from its embedding, before and after the numeric stage norm (near 0 after a norm that erased the value).
  A norm of the embedding's size is no such measure: LN fixes ``||e||`` by construction while ``x`` stays
  recoverable from its direction.
* ``bn_gap``: for models with BatchNorm, how far eval-mode predictions (running statistics) are from train-mode
  ones (batch statistics) on the batch.
* ``ics`` (optional): internal covariate shift per weight matrix, Santurkar, Tsipras, Ilyas, Madry 2018, "How Does
  Batch Normalization Help Optimization?", arXiv:1805.11604, Definition 2.1: ``||G_k - G'_k||`` and the cosine
  of ``G_k`` and ``G'_k``, where ``G'_k`` is layer k's gradient after the layers before it took the step.

Probes never change training: they run on the same batch with dropout off and BatchNorm in train mode (batch
statistics), and afterwards every parameter, buffer (BN running statistics, ``num_batches_tracked``), module
mode and the RNG state are restored exactly; gradients are taken with ``torch.autograd.grad``, so ``.grad``
is untouched. Off (``every = 0``) costs nothing: no hook is installed. Collecting ``init_grad_norms`` keeps a
copy of the initial parameters until the ``init_batches``-th step, and the step-0 record (with the records of
the steps before it) is written at that step.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctr.config import DiagnosticsConfig
from ctr.errors import ConfigError
from ctr.nn.embedding import FieldEmbedding
from ctr.nn.norm import NORMS, BatchNorm, EmbeddingNorm
from ctr.types import Batch

DIAGNOSTICS = "diagnostics.jsonl"


@contextlib.contextmanager
def open_diagnostics(
    cfg: DiagnosticsConfig,
    run_dir: Path | None,
    lr: float | None = None,
    append: bool = False,
    sink: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[tuple[Diagnostics, ...]]:
    """Yield the diagnostics hooks for a run (none when ``cfg.every <= 0``), closing the log file on exit.

    ``lr`` is the run's ``train.lr``, the SGD step of the ``ics`` probe (required when ``cfg.ics`` is on);
    ``append`` continues the log of a resumed run instead of starting a new one; ``sink`` also receives every
    record (TensorBoard).
    """
    if cfg.every <= 0 or run_dir is None:
        yield ()
        return
    diag = Diagnostics(cfg, Path(run_dir) / DIAGNOSTICS, lr, append, sink)
    try:
        yield (diag,)
    finally:
        diag.close()


class Diagnostics:
    """A ``fit`` hook that probes the model every ``cfg.every`` steps and appends one JSON line per probe.

    Args:
        cfg: which probes to run and how often.
        path: the ``diagnostics.jsonl`` to write (truncated, or appended to with ``append``), or None to keep
            records only in ``self.records``.
        lr: the SGD step size of the ``ics`` probe (the run's ``train.lr``); required when ``cfg.ics`` is on.
        append: append to ``path`` (a resumed run) instead of truncating it.
        sink: also receives every record written (e.g. TensorBoard).

    Raises:
        ConfigError: ``cfg.init_batches < 1``, or ``cfg.ics`` without ``lr``.
    """

    def __init__(
        self,
        cfg: DiagnosticsConfig,
        path: Path | None = None,
        lr: float | None = None,
        append: bool = False,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if cfg.init_batches < 1:
            raise ConfigError(f"diagnostics.init_batches must be >= 1, got {cfg.init_batches}")
        if cfg.ics and lr is None:
            raise ConfigError("diagnostics.ics needs the training learning rate (open_diagnostics(..., lr=...))")
        self.cfg = cfg
        self.lr = lr
        self.records: list[dict[str, Any]] = []
        self._file = open(path, "a" if append else "w") if path is not None else None
        self._sink = sink
        self._init: InitGradientNorms | None = None  # collecting init_grad_norms for the step-0 record
        self._held: list[dict[str, Any]] = []  # records waiting for that collection to finish

    def __call__(self, step: int, model: nn.Module, batch: Batch, loss: Tensor) -> None:
        if self.cfg.every <= 0:
            return
        if step == 0 and self.cfg.grad_norms:
            self._init = InitGradientNorms(model, self.cfg.init_batches)
        if self._init is not None:
            self._init.add(model, batch)
        if step % self.cfg.every == 0:
            record = probe(model, batch, self.cfg, self.lr)
            self._held.append({"step": step, "train_loss": float(loss.detach()), **record})
        if self._init is None or self._init.done:
            self._flush()

    def _flush(self) -> None:
        """Write the held records, the step-0 one with ``init_grad_norms`` over the batches seen so far."""
        if self._init is not None:
            if self._held and self._held[0]["step"] == 0:
                self._held[0]["init_grad_norms"] = self._init.summary()
            self._init = None
        for record in self._held:
            record = _finite_or_none(record)
            self.records.append(record)
            if self._file is not None:
                self._file.write(json.dumps(record) + "\n")
            if self._sink is not None:
                self._sink(record)
        if self._file is not None and self._held:
            self._file.flush()
        self._held = []

    def close(self) -> None:
        """Write what is held (a run shorter than ``init_batches`` steps averages the batches it had) and close."""
        self._flush()
        if self._file is not None:
            self._file.close()
            self._file = None


def probe(model: nn.Module, batch: Batch, cfg: DiagnosticsConfig, lr: float | None = None) -> dict[str, Any]:
    """Run the probes ``cfg`` enables on ``model`` at its current weights and ``batch``; the model is unchanged.

    ``lr`` is the SGD step of the ``ics`` probe (required when ``cfg.ics`` is on).
    """
    record: dict[str, Any] = {}
    if cfg.grad_norms:
        record.update(gradient_norms(model))

    def landscape(model: nn.Module, batch: Batch) -> dict[str, Any]:
        params = [p for p in model.parameters() if p.requires_grad]
        return landscape_probe(lambda: _batch_loss(model, batch), params, cfg.landscape_steps)

    def ics(model: nn.Module, batch: Batch) -> dict[str, Any]:
        if lr is None:
            raise ConfigError("diagnostics.ics needs the training learning rate")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        layers = [n for n in weight_matrices(model) if model.get_parameter(n).requires_grad]
        return internal_covariate_shift(lambda: _batch_loss(model, batch), named, layers, lr)

    probes = {
        "activations": (cfg.activations, activation_stats),
        "numeric_value": (cfg.magnitude, numeric_value_probe),
        "bn_gap": (cfg.bn_gap and has_batchnorm(model), bn_gap),
        "landscape": (cfg.landscape, landscape),
        "ics": (cfg.ics, ics),
    }
    for key, (enabled, run) in probes.items():
        if enabled:
            with probe_mode(model):  # each probe starts from the model's own state (BN running statistics included)
                value = run(model, batch)
            if value:
                record[key] = value
    return record


# -------------------------------------------------------------------------------------------------- probe safety


@contextlib.contextmanager
def probe_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off, BN in train mode; on exit restore parameters, buffers, module modes and RNG state exactly."""
    params = [(p, p.detach().clone()) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    fresh = [(m, m.fresh) for m in model.modules() if isinstance(m, BatchNorm)]  # first-batch flags of ``bn``
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for t, saved in params + buffers:
                t.copy_(saved)
        for m, training in modes:
            m.training = training
        for m, flag in fresh:
            m.fresh = flag
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batch_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean BCE-with-logits of ``model`` on ``batch``, in fp32, as in the training loop."""
    return F.binary_cross_entropy_with_logits(model(batch).float(), batch.label)


# --------------------------------------------------------------------------------------------------------- probes


def weight_matrices(model: nn.Module) -> list[str]:
    """Names of the weight matrices (>= 2-d parameters) outside norm modules, in model order.

    The same architecture with different norms lists the same matrices (weight norm's ``v``, not its ``g``).
    """
    in_norm = {id(p) for _, m in _norm_modules(model) for p in m.parameters()}
    return [
        name
        for name, p in model.named_parameters()
        if p.ndim >= 2 and id(p) not in in_norm and not name.endswith("parametrizations.weight.original0")
    ]


def _grad_norm(g: Tensor) -> float:
    """Frobenius norm of a dense or sparse gradient (a sparse one coalesced: duplicate rows summed first)."""
    g = g.coalesce().values() if g.is_sparse else g
    return float(g.detach().float().norm())


def _norms(model: nn.Module, grads: Sequence[tuple[str, Tensor | None]]) -> dict[str, Any]:
    """``{"grad_norm": total, "grad_norms": {matrix: norm}}`` of named gradients (None and empty ones left out)."""
    matrices = set(weight_matrices(model))
    per, total = {}, 0.0
    for name, g in grads:
        if g is None or g.numel() == 0:
            continue
        norm = _grad_norm(g)
        total += norm * norm
        if name in matrices:
            per[name] = norm
    return {"grad_norm": math.sqrt(total), "grad_norms": per}


def gradient_norms(model: nn.Module) -> dict[str, Any]:
    """``{"grad_norm": total, "grad_norms": {name: ||grad||_F}}`` from ``.grad``.

    ``grad_norms`` holds the :func:`weight_matrices`, in model order; ``grad_norm`` is over all parameters.
    """
    return _norms(model, [(name, p.grad) for name, p in model.named_parameters()])


def batch_gradient_norms(model: nn.Module, batch: Batch) -> dict[str, Any]:
    """:func:`gradient_norms` of the gradient of the batch loss at the current weights, by ``torch.autograd.grad``
    (``.grad`` untouched); call inside :func:`probe_mode` (dropout off, BN on batch statistics)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = _batch_loss(model, batch)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return _norms(model, [(n, g) for (n, _), g in zip(named, grads)])


class InitGradientNorms:
    """Gradient norms at the initial weights over the first ``batches`` training batches, one batch per step.

    Created at step 0 (the model holds its initial weights; a copy is kept when more batches are wanted). Each
    :meth:`add` puts the initial weights back inside :func:`probe_mode`, which restores the current ones, and
    records :func:`batch_gradient_norms` on that step's batch: training is unchanged. Dropout is off in every
    batch, so the batches differ only in their rows.
    """

    def __init__(self, model: nn.Module, batches: int) -> None:
        self.batches = batches
        self.initial = [p.detach().clone() for p in model.parameters()] if batches > 1 else None
        self.seen: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return len(self.seen) >= self.batches

    def add(self, model: nn.Module, batch: Batch) -> None:
        if self.done:
            return
        with probe_mode(model):
            if self.seen:  # a later step: the weights moved since step 0
                with torch.no_grad():
                    for p, w in zip(model.parameters(), self.initial):
                        p.copy_(w)
            self.seen.append(batch_gradient_norms(model, batch))
        if self.done:
            self.initial = None

    def summary(self) -> dict[str, Any]:
        """``batches`` (seen), ``grad_norm_mean`` / ``_std`` and per matrix ``grad_norms_mean`` / ``_std``;
        std is the sample std (ddof=1; NaN for one batch)."""

        def mean_std(values: list[float]) -> tuple[float, float]:
            mean = sum(values) / len(values) if values else math.nan
            if len(values) < 2:
                return mean, math.nan
            return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

        out: dict[str, Any] = {"batches": len(self.seen)}
        out["grad_norm_mean"], out["grad_norm_std"] = mean_std([s["grad_norm"] for s in self.seen])
        names = list(dict.fromkeys(n for s in self.seen for n in s["grad_norms"]))
        per = {n: mean_std([s["grad_norms"][n] for s in self.seen if n in s["grad_norms"]]) for n in names}
        out["grad_norms_mean"] = {n: m for n, (m, _) in per.items()}
        out["grad_norms_std"] = {n: s for n, (_, s) in per.items()}
        return out


def _loss_and_grad(loss_fn: Callable[[], Tensor], params: Sequence[Tensor]) -> tuple[float, list[Tensor]]:
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    out = []
    for p, g in zip(params, grads):
        g = torch.zeros_like(p) if g is None else (g.to_dense() if g.is_sparse else g)
        out.append(g.detach())
    return float(loss.detach()), out


def _norm(tensors: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float(t.pow(2).sum()) for t in tensors))


def landscape_probe(
    loss_fn: Callable[[], Tensor], params: Sequence[nn.Parameter], steps: Sequence[float]
) -> dict[str, Any]:
    """Loss landscape along the gradient (Santurkar et al. 2018, Fig. 4) on one fixed loss; weights restored.

    For ``g = grad L(W)`` and each ``eta`` in ``steps``: ``L(W - eta g)`` and ``grad L(W - eta g)`` are computed by
    ``loss_fn`` (which must evaluate the same batch every call) and ``W`` is restored bit for bit.

    Args:
        loss_fn: ``() -> scalar loss`` at the current values of ``params``.
        params: the parameters to move (all that require grad, for a model).
        steps: the step sizes ``eta`` (the paper goes up to 0.4).

    Returns:
        ``loss`` (at W), ``grad_norm`` ``||g||``, ``steps``, ``losses`` and ``grad_diffs`` per step, ``loss_min`` /
        ``loss_max`` / ``loss_range`` over W and the steps, ``grad_diff_min`` / ``grad_diff_max`` (gradient
        predictiveness: smaller is more predictive) and ``beta`` (effective beta-smoothness,
        ``max_eta ||grad L(W) - grad L(W - eta g)|| / ||eta g||``).
    """
    params = list(params)
    saved = [p.detach().clone() for p in params]
    loss0, g0 = _loss_and_grad(loss_fn, params)
    g_norm = _norm(g0)
    losses, diffs, ratios = [], [], []
    try:
        for eta in steps:
            with torch.no_grad():
                for p, g in zip(params, g0):
                    p.sub_(g, alpha=eta)
            loss, grads = _loss_and_grad(loss_fn, params)
            diff = _norm([g - g_ref for g, g_ref in zip(grads, g0)])
            losses.append(loss)
            diffs.append(diff)
            ratios.append(diff / (eta * g_norm) if eta * g_norm > 0 else math.nan)
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    all_losses = [loss0] + losses
    finite = [r for r in ratios if not math.isnan(r)]
    return {
        "loss": loss0,
        "grad_norm": g_norm,
        "steps": [float(s) for s in steps],
        "losses": losses,
        "grad_diffs": diffs,
        "loss_min": min(all_losses),
        "loss_max": max(all_losses),
        "loss_range": max(all_losses) - min(all_losses),
        "grad_diff_min": min(diffs, default=math.nan),
        "grad_diff_max": max(diffs, default=math.nan),
        "beta": max(finite, default=math.nan),
    }


def internal_covariate_shift(
    loss_fn: Callable[[], Tensor], params: Sequence[tuple[str, nn.Parameter]], layers: Sequence[str], lr: float
) -> dict[str, Any]:
    """Internal covariate shift per layer, Santurkar, Tsipras, Ilyas, Madry 2018, "How Does Batch Normalization
    Help Optimization?", arXiv:1805.11604, Definition 2.1; the parameters are restored bit for bit.

    With ``G = grad L(W)`` on one fixed loss (``loss_fn`` must evaluate the same batch every call), layer k's
    ``G_k`` is compared with ``G'_k``, its gradient after every parameter before it in ``params`` took the step
    ``W - lr * G`` while layer k and the parameters after it stayed put: the change of layer k's gradient caused
    by the update of the layers that feed it. The step is plain SGD of size ``lr`` (the run's ``train.lr``), as
    in the definition, not the Adam update the trainer takes: the measure then depends on the gradients only,
    not on optimizer state, and is comparable between runs.

    Args:
        loss_fn: ``() -> scalar loss`` at the current values of ``params``.
        params: ``(name, parameter)`` pairs in model order (the order that decides which layers come before).
        layers: the names whose shift is measured (weight matrices, for a model).
        lr: the SGD step size.

    Returns:
        ``lr``; ``layers``: ``{name: {"l2": ||G_k - G'_k||, "cos": cos(G_k, G'_k), "grad_norm": ||G_k||}}`` in
        model order; ``l2_mean`` and ``cos_mean`` over the layers (the first layer has nothing before it: l2 0).
    """
    names = [n for n, _ in params]
    tensors = [p for _, p in params]
    saved = [p.detach().clone() for p in tensors]
    _, g0 = _loss_and_grad(loss_fn, tensors)
    out: dict[str, dict[str, float]] = {}
    stepped = 0  # tensors[:stepped] hold W - lr * G
    try:
        for k in sorted(names.index(name) for name in layers):
            with torch.no_grad():
                for p, g in zip(tensors[stepped:k], g0[stepped:k]):
                    p.sub_(g, alpha=lr)
            stepped = max(stepped, k)
            _, (g_after,) = _loss_and_grad(loss_fn, [tensors[k]])
            g_before, g_after = g0[k].double(), g_after.double()  # float64: the cosine of near-equal vectors
            n0, n1 = float(g_before.norm()), float(g_after.norm())
            cos = min(1.0, max(-1.0, float((g_before * g_after).sum()) / (n0 * n1))) if n0 * n1 > 0 else math.nan
            out[names[k]] = {"l2": float((g_after - g_before).norm()), "cos": cos, "grad_norm": n0}
    finally:
        with torch.no_grad():
            for p, s in zip(tensors, saved):
                p.copy_(s)

    def mean(key: str) -> float:
        vals = [v[key] for v in out.values() if not math.isnan(v[key])]
        return sum(vals) / len(vals) if vals else math.nan

    return {"lr": float(lr), "layers": out, "l2_mean": mean("l2"), "cos_mean": mean("cos")}


def _moments(y: Tensor) -> dict[str, float]:
    """Mean and variance over all elements, and the batch variance averaged over units, of a (B, ...) tensor."""
    y = y.detach().float()
    if y.numel() == 0:  # a stage without fields (no numeric fields, say): nothing to describe
        return {"mean": math.nan, "var": math.nan, "batch_var": math.nan}
    flat = y.reshape(y.shape[0], -1)  # (B, units)
    batch_var = float(flat.var(0, unbiased=False).mean()) if flat.shape[0] > 1 else math.nan
    return {"mean": float(y.mean()), "var": float(y.var(unbiased=False)), "batch_var": batch_var}


def _norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every stage-norm module (registered norms and embedding-stage wrappers), outermost only."""
    norm_types = tuple(NORMS.get(n) for n in NORMS.names()) + (EmbeddingNorm,)
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if isinstance(m, norm_types) and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, m))
    return found


@torch.no_grad()
def activation_stats(model: nn.Module, batch: Batch) -> dict[str, Any]:
    """One forward pass on ``batch`` with forward hooks; call inside :func:`probe_mode` (BN stats get restored).

    Returns:
        ``stages`` (``numeric`` / ``categorical`` embedding stage outputs), ``norm_outputs`` (each norm module's
        output), ``pre_activations`` (each Linear's output): ``{"mean", "var", "batch_var"}`` each;
        ``dead_relu`` (fraction of exact zeros per ReLU module, and ``dead_relu_mean`` over them); ``logits``.
    """
    stats: dict[str, Any] = {"stages": {}, "norm_outputs": {}, "pre_activations": {}, "dead_relu": {}}
    handles = []

    def keep(section: str, name: str, fn: Callable[[Tensor], Any]):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                stats[section][name] = fn(output)

        return hook

    def stages(module, inputs, output):
        if isinstance(output, Tensor) and "numeric" not in stats["stages"]:  # the model's own embedding
            k = module.num_numeric  # (B, F, D): the numeric stage's fields first
            stats["stages"]["numeric"], stats["stages"]["categorical"] = (
                _moments(output[:, :k]),
                _moments(output[:, k:]),
            )

    try:
        for name, m in model.named_modules():
            if isinstance(m, FieldEmbedding):
                handles.append(m.register_forward_hook(stages))
            elif isinstance(m, nn.Linear):
                handles.append(m.register_forward_hook(keep("pre_activations", name, _moments)))
            elif isinstance(m, nn.ReLU):
                handles.append(
                    m.register_forward_hook(keep("dead_relu", name, lambda y: float((y == 0).float().mean())))
                )
        for name, m in _norm_modules(model):
            handles.append(m.register_forward_hook(keep("norm_outputs", name, _moments)))
        logits = model(batch).detach().float()  # (B,)
    finally:
        for h in handles:
            h.remove()
    dead = list(stats["dead_relu"].values())
    stats["dead_relu_mean"] = sum(dead) / len(dead) if dead else math.nan
    prob = torch.sigmoid(logits)
    q = torch.quantile(logits, torch.tensor([0.05, 0.5, 0.95]))
    stats["logits"] = {
        "mean": float(logits.mean()),
        "std": float(logits.std()) if len(logits) > 1 else math.nan,
        "min": float(logits.min()),
        "max": float(logits.max()),
        "q05": float(q[0]),
        "q50": float(q[1]),
        "q95": float(q[2]),
        "prob_mean": float(prob.mean()),
        "label_mean": float(batch.label.float().mean()),
    }
    return stats


PROBE_RIDGE = 1e-10  # ridge of the linear probe, relative to the mean square of the features


def linear_probe_r2(features: Tensor, target: Tensor, fit_rows: int, ridge: float = PROBE_RIDGE) -> float:
    """Held-out R^2 of a linear probe (least squares with an intercept) from ``features`` to ``target``, in float64.

    Rows ``[0, fit_rows)`` fit ``w = (Xc^T Xc + lam I)^-1 Xc^T yc`` (``Xc``, ``yc`` centred by the fit rows'
    means); the other rows are predicted as ``mean(y_fit) + (x - mean(X_fit)) w`` and scored as
    ``1 - sum (y - y_hat)^2 / sum (y - mean(y))^2`` over those rows (scikit-learn's ``r2_score``): 1 is a value
    read back exactly, 0 no better than a constant. ``lam = ridge * trace(X^T X) / D`` over the fit rows'
    uncentred features: a variation of the features at float32 rounding (relative size about 1e-7, variance
    1e-14) of an embedding that is constant carries no weight, while a variation above about ``sqrt(ridge)`` =
    1e-5 of the features' size, a hundred times the rounding, is fitted almost as by plain least squares.

    Args:
        features: (N, D) e.g. the embeddings of one field.
        target: (N,) the value to read back.
        fit_rows: rows used to fit; the remaining ``N - fit_rows`` rows are scored.
        ridge: the relative ridge.

    Returns:
        R^2 on the held-out rows (NaN when their target is constant).
    """
    x, y = features.detach().double(), target.detach().double()
    x_fit, y_fit, x_test, y_test = x[:fit_rows], y[:fit_rows], x[fit_rows:], y[fit_rows:]
    x_mean, y_mean = x_fit.mean(0), y_fit.mean()
    xc = x_fit - x_mean
    lam = ridge * float(x_fit.pow(2).sum()) / x.shape[1]
    if lam > 0:
        w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ (y_fit - y_mean))
    else:  # every feature is 0: nothing to read
        w = torch.zeros(x.shape[1], dtype=x.dtype)
    pred = y_mean + (x_test - x_mean) @ w
    total = float((y_test - y_test.mean()).pow(2).sum())
    return 1.0 - float((y_test - pred).pow(2).sum()) / total if total > 0 else math.nan


@torch.no_grad()
def numeric_value_probe(model: nn.Module, batch: Batch) -> dict[str, Any]:
    """How well each dense numeric value ``x`` can be read back from its embedding, before and after the stage norm.

    Per dense field, over the rows where it is present (in batch order): a linear probe
    (:func:`linear_probe_r2`) fitted on the first half of them maps the field's (D,) embedding to ``x`` (the value
    as the model sees it, i.e. after ``data.numeric_transform``: log-scaled for ``log_standard``) and is scored by
    R^2 on the second half. ``pre`` is the embedding ``x v + b`` (exactly linear in ``x``: R^2 1), the
    numeric stage norm's input (the embedding itself when the model skips the stage norms); ``post`` the
    embedding's output. A field needs ``D + 1`` fitting rows and 2 scored rows, else it is left out.
    The first ``Fn`` fields of the numeric stage are the dense fields, in ``batch.dense`` column order (see
    :class:`FieldEmbedding`). Returns ``{}`` when the model has no dense field.

    Returns:
        ``{"pre": {field_index: r2}, "post": {...}, "pre_mean": r2, "post_mean": r2}``.
    """
    embeds = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    fn = batch.dense.shape[1]
    if not embeds or fn == 0:
        return {}
    seen: dict[str, Tensor] = {}

    def before(module, inputs, output):
        seen.setdefault("pre", inputs[0].detach()[:, :fn])  # the first call is the model's own embedding

    def after(module, inputs, output):
        seen.setdefault("post", output.detach()[:, :fn])

    handles = [embeds[0].numeric_norm.register_forward_hook(before), embeds[0].register_forward_hook(after)]
    try:
        model(batch)
    finally:
        for h in handles:
            h.remove()
    if "post" not in seen:
        return {}
    seen.setdefault("pre", seen["post"])  # no stage norm ran: the embedding is its own input
    dim = seen["post"].shape[-1]
    out: dict[str, Any] = {"pre": {}, "post": {}}
    for j in range(fn):
        rows = ~batch.dense_missing[:, j]
        n = int(rows.sum())
        fit = n // 2
        if fit < dim + 1 or n - fit < 2:
            continue
        x = batch.dense[rows, j]
        for key in ("pre", "post"):
            out[key][str(j)] = linear_probe_r2(seen[key][rows, j], x, fit)
    for key in ("pre", "post"):
        vals = [v for v in out[key].values() if not math.isnan(v)]
        out[f"{key}_mean"] = sum(vals) / len(vals) if vals else math.nan
    return out


@torch.no_grad()
def bn_gap(model: nn.Module, batch: Batch) -> dict[str, float]:
    """Train-mode (batch statistics) vs eval-mode (running statistics) predictions of BatchNorm models on ``batch``.

    Call inside :func:`probe_mode`: the train-mode pass updates running statistics, which are restored after.

    Returns:
        ``prob_abs_diff`` (mean ``|p_train - p_eval|``), ``prob_abs_diff_max``, and the batch logloss of each mode.
    """
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    eval_logits = model(batch).float()
    for m, training in was:
        m.training = training
    train_logits = model(batch).float()
    label = batch.label.float()
    diff = (torch.sigmoid(train_logits) - torch.sigmoid(eval_logits)).abs()
    return {
        "prob_abs_diff": float(diff.mean()),
        "prob_abs_diff_max": float(diff.max()),
        "logloss_train_mode": float(F.binary_cross_entropy_with_logits(train_logits, label)),
        "logloss_eval_mode": float(F.binary_cross_entropy_with_logits(eval_logits, label)),
    }


def _finite_or_none(obj: Any) -> Any:
    """NaN / inf -> None, so ``diagnostics.jsonl`` is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


def read_diagnostics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``diagnostics.jsonl`` ([] if absent); a torn last line (killed run) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
