"""Training diagnostics (sources in ``docs/normalization.md``), logged every ``diagnostics.every`` steps.

A :class:`Diagnostics` object is a training hook: ``fit`` calls it after the backward pass and before the
optimizer step, so the training gradients are in ``.grad``. At step 0 (initialisation) and every ``every`` steps
it appends one JSON record to ``diagnostics.jsonl`` with:

* ``grad_norms``: Frobenius norm of the training gradient of every weight matrix (>= 2-d), plus ``grad_norm``
  over all parameters (Xiong et al. 2020 measure per-layer gradient norms at initialisation and after warm-up).
* ``landscape``: loss and gradient along the gradient direction on the same batch (Santurkar et al. 2018,
  Fig. 4): the loss range over ``{L(W - eta g)}``, gradient predictiveness ``||grad L(W) - grad L(W - eta g)||``
  and effective beta-smoothness ``max_eta ||grad L(W) - grad L(W - eta g)|| / ||eta g||``.
* ``activations``: mean and variance of every norm's output, of every Linear's output (pre-activations) and of
  the numeric / categorical embedding stages; the fraction of zero ReLU outputs; the logit distribution.
* ``numeric_magnitude``: per dense numeric field, the correlation over the batch of ``|x|`` with the norm of its
  embedding before and after the numeric stage norm (near 0 after a norm that erased the magnitude).
* ``bn_gap``: for models with BatchNorm, how far eval-mode predictions (running statistics) are from train-mode
  ones (batch statistics) on the batch.

Probes never change training: they run on the same batch with dropout off and BatchNorm in train mode (batch
statistics), and afterwards every parameter, buffer (BN running statistics, ``num_batches_tracked``), module
mode and the RNG state are restored exactly; gradients are taken with ``torch.autograd.grad``, so ``.grad``
is untouched. Off (``every = 0``) costs nothing: no hook is installed.
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
from ctr.nn.embedding import FieldEmbedding
from ctr.nn.norm import NORMS, BatchNorm, EmbeddingNorm
from ctr.types import Batch

DIAGNOSTICS = "diagnostics.jsonl"


@contextlib.contextmanager
def open_diagnostics(cfg: DiagnosticsConfig, run_dir: Path | None) -> Iterator[tuple[Diagnostics, ...]]:
    """Yield the diagnostics hooks for a run (none when ``cfg.every <= 0``), closing the log file on exit."""
    if cfg.every <= 0 or run_dir is None:
        yield ()
        return
    diag = Diagnostics(cfg, Path(run_dir) / DIAGNOSTICS)
    try:
        yield (diag,)
    finally:
        diag.close()


class Diagnostics:
    """A ``fit`` hook that probes the model every ``cfg.every`` steps and appends one JSON line per probe.

    Args:
        cfg: which probes to run and how often.
        path: the ``diagnostics.jsonl`` to write (truncated), or None to keep records only in ``self.records``.
    """

    def __init__(self, cfg: DiagnosticsConfig, path: Path | None = None) -> None:
        self.cfg = cfg
        self.records: list[dict[str, Any]] = []
        self._file = open(path, "w") if path is not None else None

    def __call__(self, step: int, model: nn.Module, batch: Batch, loss: Tensor) -> None:
        if self.cfg.every <= 0 or step % self.cfg.every:
            return
        record = probe(model, batch, self.cfg)
        record = {"step": step, "train_loss": float(loss.detach()), **record}
        record = _finite_or_none(record)
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def probe(model: nn.Module, batch: Batch, cfg: DiagnosticsConfig) -> dict[str, Any]:
    """Run the probes ``cfg`` enables on ``model`` at its current weights and ``batch``; the model is unchanged."""
    record: dict[str, Any] = {}
    if cfg.grad_norms:
        record.update(gradient_norms(model))

    def landscape(model: nn.Module, batch: Batch) -> dict[str, Any]:
        params = [p for p in model.parameters() if p.requires_grad]
        return landscape_probe(lambda: _batch_loss(model, batch), params, cfg.landscape_steps)

    probes = {
        "activations": (cfg.activations, activation_stats),
        "numeric_magnitude": (cfg.magnitude, numeric_magnitude),
        "bn_gap": (cfg.bn_gap and has_batchnorm(model), bn_gap),
        "landscape": (cfg.landscape, landscape),
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


def gradient_norms(model: nn.Module) -> dict[str, Any]:
    """``{"grad_norm": total, "grad_norms": {name: ||grad||_F}}`` from ``.grad``.

    ``grad_norms`` holds the weight matrices (>= 2-d) outside norm modules, in model order, so the same
    architecture with different norms lists the same matrices; ``grad_norm`` is over all parameters.
    """
    in_norm = {id(p) for _, m in _norm_modules(model) for p in m.parameters()}
    per, total = {}, 0.0
    for name, p in model.named_parameters():
        if p.grad is None or p.numel() == 0:
            continue
        g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
        norm = float(g.detach().float().norm())
        total += norm * norm
        if p.ndim >= 2 and id(p) not in in_norm and not name.endswith("parametrizations.weight.original0"):  # wn's g
            per[name] = norm
    return {"grad_norm": math.sqrt(total), "grad_norms": per}


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


def _moments(y: Tensor) -> dict[str, float]:
    """Mean and variance over all elements, and the batch variance averaged over units, of a (B, ...) tensor."""
    y = y.detach().float()
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

    try:
        for name, m in model.named_modules():
            if isinstance(m, FieldEmbedding):
                handles.append(m.numeric_norm.register_forward_hook(keep("stages", "numeric", _moments)))
                handles.append(m.categorical_norm.register_forward_hook(keep("stages", "categorical", _moments)))
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


def _pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation; 0 when ``y`` is constant up to rounding (a norm that fixes ||e|| erased |x|)."""
    x, y = x.double(), y.double()
    if float(y.std()) <= 1e-5 * float(y.abs().mean()):
        return 0.0
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else math.nan


@torch.no_grad()
def numeric_magnitude(model: nn.Module, batch: Batch) -> dict[str, Any]:
    """Correlation of ``|x|`` with the embedding norm of each dense numeric field, before and after the stage norm.

    The first ``Fn`` fields of the numeric stage are the dense fields, in ``batch.dense`` column order (see
    :class:`FieldEmbedding`). Missing values are left out. Returns ``{}`` when the model has no dense field.

    Returns:
        ``{"pre": {field_index: r}, "post": {...}, "pre_mean": r, "post_mean": r}``.
    """
    embeds = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    fn = batch.dense.shape[1]
    if not embeds or fn == 0:
        return {}
    seen: dict[str, Tensor] = {}

    def hook(module, inputs, output):
        if "post" not in seen:  # the first call is the model's own embedding
            seen["pre"], seen["post"] = inputs[0].detach(), output.detach()

    handle = embeds[0].numeric_norm.register_forward_hook(hook)
    try:
        model(batch)
    finally:
        handle.remove()
    if "post" not in seen:
        return {}
    out: dict[str, Any] = {"pre": {}, "post": {}}
    for j in range(fn):
        rows = ~batch.dense_missing[:, j]
        if int(rows.sum()) < 3:
            continue
        x = batch.dense[rows, j].abs()
        for key in ("pre", "post"):
            out[key][str(j)] = _pearson(x, seen[key][rows, j].float().norm(dim=-1))
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
