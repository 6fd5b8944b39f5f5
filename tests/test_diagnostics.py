"""Diagnostics: every probe's numbers against an oracle computed independently here, and exact restoration.

Oracles: gradients from ``torch.autograd.grad``; activations from the test's own forward hooks or a forward by hand
on a copy of the model (dropout off, BatchNorm on batch statistics, as the probes document); the landscape on
quadratics whose gradients and curvature are known in closed form; correlations from ``numpy.corrcoef``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny import tiny_batch, tiny_schema
from torch import Tensor, nn

from ctr.config import DiagnosticsConfig, load_config
from ctr.models import build_model
from ctr.nn.norm import BatchNorm
from ctr.train.diagnostics import (
    Diagnostics,
    activation_stats,
    bn_gap,
    gradient_norms,
    landscape_probe,
    numeric_magnitude,
    open_diagnostics,
    probe,
    probe_mode,
    read_diagnostics,
)
from ctr.train.optim import use_sparse_embeddings
from ctr.types import Batch

STEPS = [0.05, 0.1, 0.2, 0.4]
BN_NORMS = ("norm.numeric=ln", "norm.categorical={name: bn, scope: dim}", "norm.mlp=bn")


def _model(*norms: str, dropout: float = 0.2, seed: int = 0) -> nn.Module:
    """A tiny DNN (hidden [8, 8]) over :func:`tiny_schema` with the given ``norm.<stage>=...`` settings."""
    cfg = load_config(
        overrides=["model.name=dnn", "model.embed_dim=4", "model.hidden=[8, 8]", f"model.dropout={dropout}", *norms]
    )
    torch.manual_seed(seed)
    return build_model(tiny_schema(), cfg.model, cfg.norm)


def _diag(**on: Any) -> DiagnosticsConfig:
    """Diagnostics every step with only the probes named in ``on`` enabled (shipped defaults for the rest)."""
    off = dict(grad_norms=False, landscape=False, activations=False, magnitude=False, bn_gap=False)
    return dataclasses.replace(load_config().diagnostics, every=1, **{**off, **on})


ALL_ON = _diag(grad_norms=True, landscape=True, activations=True, magnitude=True, bn_gap=True)


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    return F.binary_cross_entropy_with_logits(model(batch).float(), batch.label)


def _oracle_copy(model: nn.Module) -> nn.Module:
    """A copy in the probes' mode: train mode (BatchNorm on batch statistics) with every dropout off."""
    clone = copy.deepcopy(model).train()
    for m in clone.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    return clone


def _train_steps(model: nn.Module, steps: int = 3) -> None:
    """A few Adam steps, so that BN running statistics and weights are away from their initial values."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        batch = tiny_batch(batch_size=64, seed=100 + step)
        opt.zero_grad()
        _loss(model, batch).backward()
        opt.step()


def _moments(y: Tensor) -> dict[str, float]:
    """Mean and biased variance over all elements; per-unit batch variance (biased), averaged over units."""
    a = y.detach().double().reshape(y.shape[0], -1).numpy()
    return {"mean": float(a.mean()), "var": float(a.var()), "batch_var": float(a.var(axis=0).mean())}


def _close(got: dict[str, float], expected: dict[str, float], rel: float = 1e-5, abs_: float = 1e-7) -> None:
    assert set(got) == set(expected)
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=rel, abs=abs_), k


# ------------------------------------------------------------------------------------------------------ landscape


def _quadratic(a: Tensor, w0: Tensor):
    w = nn.Parameter(w0.clone())
    return w, lambda: 0.5 * (a * w * w).sum()  # L = w^T A w / 2, A = diag(a): grad = A w, Hessian = A


def test_landscape_on_isotropic_quadratic_gives_its_curvature() -> None:
    """L(w) = c ||w||^2 / 2: g = c w, L(w - eta g) = c (1 - eta c)^2 ||w||^2 / 2, gradient change eta c ||g||,
    so gradient predictiveness is eta c ||g|| and beta-smoothness exactly c; the weights come back bit for bit."""
    c = 3.0
    a = torch.full((5,), c, dtype=torch.float64)
    w, loss = _quadratic(a, torch.arange(1.0, 6.0, dtype=torch.float64))
    before = w.detach().clone()
    out = landscape_probe(loss, [w], STEPS)
    g = c * before
    assert out["loss"] == pytest.approx(0.5 * c * float(before.pow(2).sum()), rel=1e-12)
    assert out["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-12)
    assert out["steps"] == STEPS
    assert out["beta"] == pytest.approx(c, rel=1e-12)
    for eta, loss_eta, diff in zip(STEPS, out["losses"], out["grad_diffs"], strict=True):
        assert loss_eta == pytest.approx(0.5 * c * (1 - eta * c) ** 2 * float(before.pow(2).sum()), rel=1e-12)
        assert diff == pytest.approx(eta * c * float(g.norm()), rel=1e-12)
    all_losses = [out["loss"], *out["losses"]]
    assert out["loss_min"] == min(all_losses) and out["loss_max"] == max(all_losses)
    assert out["loss_range"] == pytest.approx(max(all_losses) - min(all_losses), rel=1e-12)
    assert out["grad_diff_min"] == pytest.approx(STEPS[0] * c * float(g.norm()), rel=1e-12)
    assert out["grad_diff_max"] == pytest.approx(STEPS[-1] * c * float(g.norm()), rel=1e-12)
    assert torch.equal(w.detach(), before) and w.grad is None


def test_landscape_beta_is_the_rayleigh_ratio_along_the_gradient() -> None:
    """For A = diag(a), grad L(w - eta g) - grad L(w) = -eta A g: beta = ||A g|| / ||g|| whatever eta, which is the
    top eigenvalue when w lies along its eigenvector."""
    a = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    w, loss = _quadratic(a, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))  # top eigenvector: beta = 9
    assert landscape_probe(loss, [w], STEPS)["beta"] == pytest.approx(9.0, rel=1e-12)
    w, loss = _quadratic(a, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    g = a * torch.ones(3, dtype=torch.float64)
    expected = float((a * g).norm() / g.norm())  # ||A g|| / ||g||: the quadratic's smoothness along g
    assert landscape_probe(loss, [w], STEPS)["beta"] == pytest.approx(expected, rel=1e-12)


def test_landscape_moves_all_parameters_together() -> None:
    """With the loss split over two parameters, the step is along the joint gradient (one ||g|| over both)."""
    a1, a2 = 2.0, 5.0
    w1, w2 = (
        nn.Parameter(torch.tensor([1.0, -1.0], dtype=torch.float64)),
        nn.Parameter(torch.tensor([3.0], dtype=torch.float64)),
    )
    out = landscape_probe(lambda: 0.5 * a1 * w1.pow(2).sum() + 0.5 * a2 * w2.pow(2).sum(), [w1, w2], [0.1])
    g1, g2 = a1 * w1.detach(), a2 * w2.detach()
    g_norm = math.sqrt(float(g1.pow(2).sum() + g2.pow(2).sum()))
    diff = 0.1 * math.sqrt(float((a1 * g1).pow(2).sum() + (a2 * g2).pow(2).sum()))  # ||eta A g||
    assert out["grad_norm"] == pytest.approx(g_norm, rel=1e-12)
    assert out["grad_diffs"] == [pytest.approx(diff, rel=1e-12)]
    assert out["beta"] == pytest.approx(diff / (0.1 * g_norm), rel=1e-12)


def test_landscape_in_probe_uses_the_batch_loss_of_the_model() -> None:
    """``probe``'s landscape starts at the model's BCE on the batch (dropout off) and its ``grad_norm`` is the norm
    of the autograd gradient over all parameters at that point."""
    model = _model(*BN_NORMS)
    batch = tiny_batch(batch_size=64)
    oracle = _oracle_copy(model)
    loss = _loss(oracle, batch)
    grads = torch.autograd.grad(loss, list(oracle.parameters()), allow_unused=True)
    g_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
    record = probe(model, batch, _diag(landscape=True))
    assert record["landscape"]["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    assert record["landscape"]["grad_norm"] == pytest.approx(g_norm, rel=1e-5)


# -------------------------------------------------------------------------------------------------- gradient norms


def _expected_matrices(model: nn.Module) -> set[str]:
    """The weight matrices outside norms, listed from the module structure: every Linear's weight (its ``v`` under
    weight norm) and the field embedding's table and dense vectors."""
    names = {"embed.table.weight", "embed.dense_weight", "embed.dense_bias", "embed.dense_missing"}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            wn = hasattr(m, "parametrizations") and "weight" in m.parametrizations
            names.add(f"{name}.parametrizations.weight.original1" if wn else f"{name}.weight")
    return names


@pytest.mark.parametrize("norms", [BN_NORMS, ("norm.mlp=wn",), ()], ids=["bn-ln", "wn", "none"])
def test_gradient_norms_are_the_norms_of_the_autograd_gradients(norms: tuple[str, ...]) -> None:
    """Per-matrix Frobenius norms and the total over all parameters equal those of ``torch.autograd.grad`` on the
    same loss; the listed matrices are exactly the non-norm weight matrices (no norm gain, no weight-norm ``g``)."""
    model = _model(*norms, dropout=0.0)
    batch = tiny_batch(batch_size=64)
    oracle = copy.deepcopy(model)
    names = [n for n, _ in oracle.named_parameters()]
    grads = torch.autograd.grad(_loss(oracle, batch), list(oracle.parameters()))
    by_name = dict(zip(names, grads, strict=True))
    _loss(model, batch).backward()
    out = gradient_norms(model)
    assert set(out["grad_norms"]) == _expected_matrices(model)
    for name, value in out["grad_norms"].items():
        assert value == pytest.approx(float(by_name[name].norm()), rel=1e-6), name
    total = float(torch.cat([g.reshape(-1) for g in grads]).double().norm())
    assert out["grad_norm"] == pytest.approx(total, rel=1e-6)


def test_gradient_norms_of_sparse_embedding_gradients_sum_duplicate_rows() -> None:
    """A sparse table gradient lists a row once per occurrence in the batch; its norm must be that of the dense
    gradient (duplicates summed), not of the uncoalesced entries."""
    dense = _model(dropout=0.0)
    sparse = copy.deepcopy(dense)
    use_sparse_embeddings(sparse)
    batch = tiny_batch(batch_size=64)  # 64 rows over 36 table rows: ids repeat
    _loss(dense, batch).backward()
    _loss(sparse, batch).backward()
    assert sparse.embed.table.weight.grad.is_sparse
    table = float(dense.embed.table.weight.grad.norm())
    got, expected = gradient_norms(sparse), gradient_norms(dense)
    assert got["grad_norms"]["embed.table.weight"] == pytest.approx(table, rel=1e-6)
    assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-6)


def test_gradient_norms_skip_parameters_without_gradient() -> None:
    """Parameters whose ``.grad`` is None (frozen, or no backward yet) are left out, not counted as zero."""
    model = _model(dropout=0.0)
    assert gradient_norms(model) == {"grad_norm": 0.0, "grad_norms": {}}
    model.embed.table.weight.requires_grad_(False)
    _loss(model, tiny_batch(batch_size=64)).backward()
    out = gradient_norms(model)
    assert "embed.table.weight" not in out["grad_norms"] and "embed.dense_weight" in out["grad_norms"]


# ----------------------------------------------------------------------------------------------------- activations


def test_activation_stats_match_hooks_and_a_forward_by_hand() -> None:
    """Through ``probe`` (dropout off, BN on batch statistics): stage outputs equal a by-hand ``embed`` forward split
    at the numeric fields; Linear / norm outputs equal the moments of the outputs our own hooks capture; the ReLU
    zero fraction equals a manual count; the logit summary equals the oracle's logits."""
    model = _model(*BN_NORMS, dropout=0.5)
    _train_steps(model)
    batch = tiny_batch(batch_size=64, seed=3)
    oracle = _oracle_copy(model)
    seen: dict[str, Tensor] = {}
    linears = [n for n, m in oracle.named_modules() if isinstance(m, nn.Linear)]
    relus = [n for n, m in oracle.named_modules() if isinstance(m, nn.ReLU)]
    norms = ["embed.numeric_norm", "embed.categorical_norm"] + [
        n for n, m in oracle.named_modules() if isinstance(m, BatchNorm) and n.startswith("mlp")
    ]
    modules = dict(oracle.named_modules())
    for name in linears + relus + norms:
        modules[name].register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach()))
    with torch.no_grad():
        e = oracle.embed(batch)  # (B, F, D), numeric-stage fields first
        logits = oracle(batch).double()
    k = oracle.embed.num_numeric

    act = probe(model, batch, _diag(activations=True))["activations"]
    _close(act["stages"]["numeric"], _moments(e[:, :k]))
    _close(act["stages"]["categorical"], _moments(e[:, k:]))
    assert set(act["pre_activations"]) == set(linears) and len(linears) == 3
    for name in linears:
        _close(act["pre_activations"][name], _moments(seen[name]))
    assert set(act["norm_outputs"]) == set(norms) and len(norms) == 4
    for name in norms:
        _close(act["norm_outputs"][name], _moments(seen[name]))
    assert set(act["dead_relu"]) == set(relus) and len(relus) == 2
    zeros = {name: int((seen[name] == 0).sum()) / seen[name].numel() for name in relus}
    for name in relus:
        assert act["dead_relu"][name] == pytest.approx(zeros[name], abs=1e-12)
    assert 0 < sum(zeros.values()) < len(relus)  # neither all alive nor all dead: the count is informative
    assert act["dead_relu_mean"] == pytest.approx(sum(zeros.values()) / len(relus), abs=1e-12)
    q05, q50, q95 = np.quantile(logits.numpy(), [0.05, 0.5, 0.95])
    expected_logits = {
        "mean": float(logits.mean()),
        "std": float(logits.std()),
        "min": float(logits.min()),
        "max": float(logits.max()),
        "q05": q05,
        "q50": q50,
        "q95": q95,
        "prob_mean": float(torch.sigmoid(logits).mean()),
        "label_mean": float(batch.label.mean()),
    }
    _close(act["logits"], expected_logits)


def test_activation_stats_of_an_unnormalised_model_have_the_no_norm_layout() -> None:
    """Without norms the embedding stages are identities (stats of the raw embeddings, still reported) and no MLP
    norm is listed; the numeric stage is ``x v + b`` (``m`` where missing) then the id lookups, by hand."""
    model = _model(dropout=0.0)
    batch = tiny_batch(batch_size=64)
    emb = model.embed
    with torch.no_grad():
        x = batch.dense.unsqueeze(-1)
        dense = torch.where(batch.dense_missing.unsqueeze(-1), emb.dense_missing, x * emb.dense_weight + emb.dense_bias)
        ids = emb.table(batch.ids + emb.offsets)  # (B, Fc, D): bucketised numeric ids (I3, I4) first
        numeric = torch.cat([dense, ids[:, :2]], dim=1)
    with probe_mode(model):
        act = activation_stats(model, batch)
    assert not any(name.startswith("mlp") for name in act["norm_outputs"])
    _close(act["stages"]["numeric"], _moments(numeric))
    _close(act["stages"]["categorical"], _moments(ids[:, 2:]))


# ------------------------------------------------------------------------------------------------ numeric magnitude


def _pearson(x: Tensor, y: Tensor) -> float:
    return float(np.corrcoef(x.double().numpy(), y.double().numpy())[0, 1])


@pytest.mark.parametrize("norm", ["none", "ln", "rms"])
def test_numeric_magnitude_is_the_documented_correlation(norm: str) -> None:
    """What the docstring says: per dense field, over the non-missing rows, the Pearson correlation of ``|x|`` with
    ``||x v + b||`` (pre) and with the norm of that field's embedding after the numeric stage norm (post); the
    means are over fields. Norm parameters are randomised so the post embedding is not a rescaled copy."""
    model = _model(f"norm.numeric={norm}", dropout=0.0)
    with torch.no_grad():
        for p in model.embed.numeric_norm.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = tiny_batch(batch_size=128, seed=4)
    emb = model.embed
    with torch.no_grad():
        post_all = emb(batch)  # (B, F, D): the dense fields are the first Fn fields
    out = numeric_magnitude(model, batch)
    assert set(out) == {"pre", "post", "pre_mean", "post_mean"}
    fn = batch.dense.shape[1]
    for j in range(fn):
        rows = ~batch.dense_missing[:, j]
        assert int(rows.sum()) < len(rows)  # some missing rows, which must be left out
        x = batch.dense[rows, j]
        pre = (x.unsqueeze(-1) * emb.dense_weight[j] + emb.dense_bias[j]).detach().norm(dim=-1)
        post = post_all[rows, j].norm(dim=-1)
        assert out["pre"][str(j)] == pytest.approx(_pearson(x.abs(), pre), abs=1e-6)
        assert out["post"][str(j)] == pytest.approx(_pearson(x.abs(), post), abs=1e-6)
    for key in ("pre", "post"):
        assert set(out[key]) == {str(j) for j in range(fn)}
        assert out[f"{key}_mean"] == pytest.approx(sum(out[key].values()) / fn, abs=1e-12)


def test_numeric_magnitude_of_a_norm_that_erases_the_value_is_zero() -> None:
    """With b = 0, e = x v so ||e|| = |x| ||v|| (correlation 1), and a per-field LN without gain variation keeps only
    sign(x): ||LN(e)|| is constant, which the probe reports as correlation 0 (not NaN)."""
    model = _model("norm.numeric=ln", dropout=0.0)
    with torch.no_grad():
        model.embed.dense_bias.zero_()
        model.embed.dense_weight.mul_(1e6)  # x^2 var(v) >> eps for every present x: LN's eps leaks no magnitude
    out = numeric_magnitude(model, tiny_batch(batch_size=256))
    assert out["pre_mean"] == pytest.approx(1.0, abs=1e-6)
    assert out["post"] == {"0": 0.0, "1": 0.0} and out["post_mean"] == 0.0


def test_numeric_magnitude_is_empty_without_dense_fields() -> None:
    """A schema whose numeric fields are all bucketised has no dense value to correlate: ``{}``."""
    from ctr.types import Schema

    schema = tiny_schema()
    schema = Schema([f for f in schema.fields if f.encoding == "id"])
    cfg = load_config(overrides=["model.name=dnn", "model.embed_dim=4", "model.hidden=[8]"])
    model = build_model(schema, cfg.model, cfg.norm)
    assert numeric_magnitude(model, tiny_batch(schema, batch_size=16)) == {}


# --------------------------------------------------------------------------------------------------------- bn gap


def test_bn_gap_equals_train_vs_eval_predictions_by_hand() -> None:
    """After some training (running statistics differ from batch statistics), ``bn_gap`` equals the mean / max of
    ``|sigmoid(train-mode logits) - sigmoid(eval-mode logits)|`` and each mode's BCE, computed on a copy."""
    model = _model(*BN_NORMS, dropout=0.5)
    _train_steps(model)
    batch = tiny_batch(batch_size=64, seed=7)
    oracle = copy.deepcopy(model)
    with torch.no_grad():
        eval_logits = oracle.eval()(batch)  # running statistics, dropout off
        train_logits = _oracle_copy(oracle)(batch)  # batch statistics, dropout off
    diff = (torch.sigmoid(train_logits) - torch.sigmoid(eval_logits)).abs()
    with probe_mode(model):
        gap = bn_gap(model, batch)
    assert float(diff.mean()) > 1e-3  # a real gap, so the comparison is not 0 == 0
    assert gap["prob_abs_diff"] == pytest.approx(float(diff.mean()), rel=1e-5)
    assert gap["prob_abs_diff_max"] == pytest.approx(float(diff.max()), rel=1e-5)
    assert gap["logloss_train_mode"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(train_logits, batch.label)), rel=1e-6
    )
    assert gap["logloss_eval_mode"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(eval_logits, batch.label)), rel=1e-6
    )


def test_bn_gap_is_zero_without_batchnorm_and_not_logged() -> None:
    """Without BatchNorm, train and eval mode compute the same function once dropout is off: the gap is exactly 0;
    ``probe`` does not log it for such a model even when enabled."""
    model = _model("norm.numeric=ln", "norm.mlp=ln", dropout=0.5)
    batch = tiny_batch(batch_size=64)
    with probe_mode(model):
        gap = bn_gap(model, batch)
    assert gap["prob_abs_diff"] == 0.0 and gap["prob_abs_diff_max"] == 0.0
    assert gap["logloss_train_mode"] == gap["logloss_eval_mode"]
    assert "bn_gap" not in probe(model, batch, _diag(bn_gap=True))


def test_bn_gap_in_probe_uses_the_model_running_statistics() -> None:
    """The gap ``probe`` logs must be the model's own (its running statistics as training left them), whatever
    other probes run in the same record."""
    model = _model(*BN_NORMS, dropout=0.0)
    _train_steps(model)
    batch = tiny_batch(batch_size=64, seed=7)
    alone = probe(model, batch, _diag(bn_gap=True))["bn_gap"]
    together = probe(model, batch, _diag(bn_gap=True, activations=True, magnitude=True))["bn_gap"]
    assert together["prob_abs_diff"] == pytest.approx(alone["prob_abs_diff"], rel=1e-6)


# -------------------------------------------------------------------------------------------------- probe safety


def _snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},  # params, BN running stats, counters
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "fresh": [m.fresh for m in model.modules() if isinstance(m, BatchNorm)],
        "rng": torch.get_rng_state(),
    }


def _assert_same(before: dict[str, Any], model: nn.Module) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
    for n, g in before["grads"].items():
        assert (g is None and after["grads"][n] is None) or torch.equal(after["grads"][n], g), n
    assert after["modes"] == before["modes"]
    assert after["fresh"] == before["fresh"]
    assert torch.equal(after["rng"], before["rng"])


def test_probe_restores_weights_buffers_grads_modes_fresh_flags_and_rng_exactly() -> None:
    """After a training step, with modules in mixed modes and BN ``fresh`` flags mixed, every probe together leaves
    every parameter, buffer, ``.grad``, module mode, ``fresh`` flag and the RNG state bit-identical."""
    model = _model(*BN_NORMS)
    batch = tiny_batch(batch_size=64)
    model.train()
    _loss(model, batch).backward()  # every BN now has running statistics (fresh = False)
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    bns[0].fresh = True
    model.mlp.net[3].eval()  # one dropout in eval mode, the other in train mode
    before = _snapshot(model)
    record = probe(model, batch, ALL_ON)
    _assert_same(before, model)
    assert {"grad_norm", "grad_norms", "landscape", "activations", "numeric_magnitude", "bn_gap"} <= set(record)


def test_probe_in_eval_mode_and_before_the_first_step_changes_nothing() -> None:
    """A fresh model (every BN waiting for its first batch) in eval mode: the probes switch BN to train mode and run
    forward passes, yet the model comes back in eval mode with every BN still fresh and its statistics untouched."""
    model = _model(*BN_NORMS).eval()
    assert all(m.fresh for m in model.modules() if isinstance(m, BatchNorm))
    before = _snapshot(model)
    probe(model, tiny_batch(batch_size=64), ALL_ON)
    _assert_same(before, model)


def _train(diagnostics: Diagnostics | None, steps: int = 4) -> dict[str, Tensor]:
    model = _model(*BN_NORMS)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(1)  # dropout masks
    for step in range(steps):
        batch = tiny_batch(batch_size=64, seed=step)
        loss = _loss(model, batch)
        opt.zero_grad()
        loss.backward()
        if diagnostics is not None:
            diagnostics(step, model, batch, loss)
        opt.step()
    return model.state_dict()


def test_training_with_diagnostics_is_bit_identical_to_training_without() -> None:
    """Probing every step (dropout active in training, so the RNG stream matters) changes no trained weight."""
    diag = Diagnostics(ALL_ON)
    with_diag, without = _train(diag), _train(None)
    assert len(diag.records) == 4
    for k in without:
        assert torch.equal(with_diag[k], without[k]), k


# ------------------------------------------------------------------------------------------------------ the log


def test_log_holds_one_record_per_probed_step_as_strict_json(tmp_path: Path) -> None:
    """Records at steps 0, every, 2 every ...; the file round-trips to the in-memory records; a NaN (here: no dense
    field with 3 present values, so no correlation mean) is written as null, not as invalid JSON."""
    cfg = dataclasses.replace(_diag(grad_norms=True, magnitude=True), every=2)
    model = _model(dropout=0.0)
    batch = tiny_batch(batch_size=16)
    batch.dense_missing[2:] = True  # two present values per dense field: too few for a correlation
    with open_diagnostics(cfg, tmp_path) as hooks:
        assert len(hooks) == 1
        for step in range(5):
            loss = _loss(model, batch)
            model.zero_grad()
            loss.backward()
            hooks[0](step, model, batch, loss)
            if step == 0:
                expected_grad_norm = gradient_norms(model)["grad_norm"]
    text = (tmp_path / "diagnostics.jsonl").read_text()
    assert "NaN" not in text
    records = read_diagnostics(tmp_path / "diagnostics.jsonl")
    assert records == hooks[0].records
    assert [r["step"] for r in records] == [0, 2, 4]
    assert records[0]["train_loss"] == pytest.approx(float(_loss(model, batch).detach()), rel=1e-6)
    assert records[0]["grad_norm"] == pytest.approx(expected_grad_norm, rel=1e-12)
    assert records[0]["numeric_magnitude"] == {"pre": {}, "post": {}, "pre_mean": None, "post_mean": None}
    assert "activations" not in records[0] and "landscape" not in records[0]


def test_read_diagnostics_skips_a_torn_last_line_and_a_missing_file(tmp_path: Path) -> None:
    """A run killed mid-write leaves a partial last line: the complete records before it are still read."""
    path = tmp_path / "diagnostics.jsonl"
    assert read_diagnostics(path) == []
    path.write_text(json.dumps({"step": 0}) + "\n" + json.dumps({"step": 5}) + "\n" + '{"step": 10, "grad')
    assert read_diagnostics(path) == [{"step": 0}, {"step": 5}]


def test_off_installs_no_hook(tmp_path: Path) -> None:
    """``every = 0`` yields no hook and writes no file."""
    with open_diagnostics(dataclasses.replace(load_config().diagnostics, every=0), tmp_path) as hooks:
        assert hooks == ()
    assert not (tmp_path / "diagnostics.jsonl").exists()
