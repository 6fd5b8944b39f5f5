"""Diagnostics: every probe's numbers against an oracle computed independently here, and exact restoration.

Oracles: gradients from ``torch.autograd.grad``; activations from the test's own forward hooks or a forward by hand
on a copy of the model (dropout off, BatchNorm on batch statistics, as the probes document); the landscape on
quadratics whose gradients and curvature are known in closed form; linear probes from ``numpy.linalg.lstsq`` and
scikit-learn's ``r2_score``; the internal covariate shift of a two-layer model by hand.
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
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from torch import Tensor, nn

from ctr.config import DiagnosticsConfig, load_config
from ctr.errors import ConfigError
from ctr.models import build_model
from ctr.nn.norm import BatchNorm
from ctr.train.diagnostics import (
    PROBE_RIDGE,
    Diagnostics,
    activation_stats,
    bn_gap,
    gradient_norms,
    internal_covariate_shift,
    landscape_probe,
    linear_probe_r2,
    numeric_value_probe,
    open_diagnostics,
    probe,
    probe_mode,
    read_diagnostics,
)
from ctr.train.optim import use_sparse_embeddings
from ctr.types import Batch

STEPS = [0.05, 0.1, 0.2, 0.4]
LR = 0.05  # SGD step of the ics probe in these tests
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
    off = dict(grad_norms=False, landscape=False, activations=False, magnitude=False, bn_gap=False, ics=False)
    return dataclasses.replace(load_config().diagnostics, every=1, **{**off, **on})


ALL_ON = _diag(grad_norms=True, landscape=True, activations=True, magnitude=True, bn_gap=True, ics=True, init_batches=3)


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


def _batch_norms(model: nn.Module, batch: Batch) -> tuple[float, dict[str, float]]:
    """Total and per-matrix gradient norms of the batch loss on a probe-mode copy of ``model`` (autograd)."""
    oracle = _oracle_copy(model)
    names = [n for n, _ in oracle.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(_loss(oracle, batch), list(oracle.parameters())), strict=True))
    total = float(torch.cat([g.reshape(-1) for g in grads.values()]).double().norm())
    return total, {n: float(grads[n].norm()) for n in _expected_matrices(model)}


def test_init_grad_norms_are_mean_and_std_over_the_first_batches_at_the_initial_weights() -> None:
    """With ``init_batches = 3`` the step-0 record holds, for the total and every weight matrix, the mean and the
    sample std of the gradient norms of the initial model (dropout off) on the batches of steps 0, 1 and 2, although
    the weights moved after step 0; the other step-0 fields are the training batch's, as without it."""
    model = _model(*BN_NORMS, dropout=0.3)
    initial = copy.deepcopy(model)
    batches = [tiny_batch(batch_size=64, seed=10 + i) for i in range(4)]
    diag = Diagnostics(dataclasses.replace(_diag(grad_norms=True), every=2, init_batches=3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step, batch in enumerate(batches):
        loss = _loss(model, batch)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            step0 = gradient_norms(model)
        diag(step, model, batch, loss)
        opt.step()
    assert [r["step"] for r in diag.records] == [0, 2]
    first = diag.records[0]
    assert first["grad_norm"] == step0["grad_norm"] and first["grad_norms"] == step0["grad_norms"]
    oracle = [_batch_norms(initial, b) for b in batches[:3]]
    init = first["init_grad_norms"]
    assert init["batches"] == 3
    totals = np.array([t for t, _ in oracle])
    assert init["grad_norm_mean"] == pytest.approx(totals.mean(), rel=1e-5)
    assert init["grad_norm_std"] == pytest.approx(totals.std(ddof=1), rel=1e-4)
    assert set(init["grad_norms_mean"]) == set(init["grad_norms_std"]) == _expected_matrices(model)
    for name in _expected_matrices(model):
        per = np.array([m[name] for _, m in oracle])
        assert per.std() > 0  # the batches differ: the std is informative
        assert init["grad_norms_mean"][name] == pytest.approx(per.mean(), rel=1e-5), name
        assert init["grad_norms_std"][name] == pytest.approx(per.std(ddof=1), rel=1e-4), name
    assert "init_grad_norms" not in diag.records[1]


def test_the_step_0_record_waits_for_its_batches_and_a_short_run_keeps_what_it_had(tmp_path: Path) -> None:
    """Every step is probed: nothing is written until the ``init_batches``-th step, then the records come in step
    order; a run that ends first writes, on close, the statistics of the batches it had."""
    model = _model(dropout=0.0)
    cfg = _diag(grad_norms=True, init_batches=3)
    with open_diagnostics(cfg, tmp_path) as (diag,):
        for step in range(2):
            batch = tiny_batch(batch_size=32, seed=step)
            loss = _loss(model, batch)
            model.zero_grad()
            loss.backward()
            diag(step, model, batch, loss)
            assert read_diagnostics(tmp_path / "diagnostics.jsonl") == []
    records = read_diagnostics(tmp_path / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [0, 1]
    init = records[0]["init_grad_norms"]
    assert init["batches"] == 2
    expected = [_batch_norms(model, tiny_batch(batch_size=32, seed=s))[0] for s in range(2)]  # no step was taken
    assert init["grad_norm_mean"] == pytest.approx(np.mean(expected), rel=1e-5)
    model = _model(dropout=0.0)
    diag = Diagnostics(_diag(grad_norms=True, init_batches=3))
    for step in range(3):
        batch = tiny_batch(batch_size=32, seed=step)
        loss = _loss(model, batch)
        model.zero_grad()
        loss.backward()
        diag(step, model, batch, loss)
        assert len(diag.records) == (0 if step < 2 else 3)


def test_one_init_batch_has_no_std_and_keeps_no_copy() -> None:
    """``init_batches = 1``: the mean is the step-0 batch's norm (dropout off), the std is null, and the record is
    written at once."""
    model = _model(dropout=0.0)
    batch = tiny_batch(batch_size=32)
    diag = Diagnostics(_diag(grad_norms=True, init_batches=1))
    loss = _loss(model, batch)
    loss.backward()
    diag(0, model, batch, loss)
    init = diag.records[0]["init_grad_norms"]
    assert init["batches"] == 1 and init["grad_norm_std"] is None
    assert init["grad_norm_mean"] == pytest.approx(diag.records[0]["grad_norm"], rel=1e-6)


def test_bad_init_batches_and_ics_without_a_learning_rate_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="init_batches"):
        Diagnostics(_diag(grad_norms=True, init_batches=0))
    with pytest.raises(ConfigError, match="learning rate"):
        Diagnostics(_diag(ics=True))


# ------------------------------------------------------------------------------------------ internal covariate shift


def test_ics_of_a_two_layer_model_by_hand() -> None:
    """``f = w2 . (W1 x + b1)``, ``L = (f - y)^2 / 2`` (parameters in the order W1, b1, w2; layers W1 and w2).
    With ``r = f - y``: ``G_W1 = r w2 x^T``, ``G_b1 = r w2``, ``G_w2 = r h``. Nothing comes before W1, so
    ``G'_W1 = G_W1`` (shift 0, cosine 1); before w2, W1 and b1 take the SGD step, ``h' = (W1 - lr G_W1) x + b1 -
    lr G_b1``, so ``G'_w2 = (w2 . h' - y) h'``. The parameters come back bit for bit."""
    rng = np.random.default_rng(0)
    w1_0, b1_0, w2_0, x = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=4)
    y, lr = 0.7, 0.1
    w1, b1, w2 = (nn.Parameter(torch.tensor(a)) for a in (w1_0, b1_0, w2_0))
    xt = torch.tensor(x)

    def loss() -> Tensor:
        return 0.5 * (w2 @ (w1 @ xt + b1) - y) ** 2

    out = internal_covariate_shift(loss, [("w1", w1), ("b1", b1), ("w2", w2)], ["w2", "w1"], lr)
    h = w1_0 @ x + b1_0
    r = w2_0 @ h - y
    g_w1, g_b1, g_w2 = r * np.outer(w2_0, x), r * w2_0, r * h
    h_new = (w1_0 - lr * g_w1) @ x + (b1_0 - lr * g_b1)
    g_w2_new = (w2_0 @ h_new - y) * h_new
    assert list(out["layers"]) == ["w1", "w2"]  # model order
    assert out["layers"]["w1"]["l2"] == 0.0 and out["layers"]["w1"]["cos"] == pytest.approx(1.0, abs=1e-12)
    assert out["layers"]["w1"]["grad_norm"] == pytest.approx(np.linalg.norm(g_w1), rel=1e-12)
    shift = np.linalg.norm(g_w2_new - g_w2)
    assert shift > 1e-3  # the update of the first layer moves the second one's gradient
    assert out["layers"]["w2"]["l2"] == pytest.approx(shift, rel=1e-10)
    cos = g_w2 @ g_w2_new / (np.linalg.norm(g_w2) * np.linalg.norm(g_w2_new))
    assert out["layers"]["w2"]["cos"] == pytest.approx(cos, rel=1e-10)
    assert out["l2_mean"] == pytest.approx(shift / 2, rel=1e-10) and out["lr"] == lr
    for p, a in ((w1, w1_0), (b1, b1_0), (w2, w2_0)):
        assert np.array_equal(p.detach().numpy(), a) and p.grad is None


def test_ics_in_probe_updates_every_parameter_before_each_weight_matrix() -> None:
    """Through ``probe`` on a BN/LN DNN: for every weight matrix, in model order, the shift equals that of a copy
    (probe mode) whose parameters registered before the matrix took ``p - lr g`` (g of the unchanged model)."""
    model = _model(*BN_NORMS)
    _train_steps(model)
    batch = tiny_batch(batch_size=64, seed=2)
    oracle = _oracle_copy(model)
    names = [n for n, _ in oracle.named_parameters()]
    g0 = dict(zip(names, torch.autograd.grad(_loss(oracle, batch), list(oracle.parameters())), strict=True))
    record = probe(model, batch, _diag(ics=True), LR)["ics"]
    matrices = [n for n in names if n in _expected_matrices(model)]
    assert list(record["layers"]) == matrices
    for name in matrices:
        moved = _oracle_copy(model)
        params = dict(moved.named_parameters())
        with torch.no_grad():
            for before in names[: names.index(name)]:
                params[before].sub_(LR * g0[before])
        (g_new,) = torch.autograd.grad(_loss(moved, batch), [params[name]])
        diff = float((g_new - g0[name]).norm())
        assert record["layers"][name]["l2"] == pytest.approx(diff, rel=1e-4, abs=1e-9), name
        cos = float((g_new * g0[name]).sum() / (g_new.norm() * g0[name].norm()))
        assert record["layers"][name]["cos"] == pytest.approx(cos, rel=1e-5), name
    assert record["layers"][matrices[0]]["l2"] == 0.0
    assert max(v["l2"] for v in record["layers"].values()) > 0


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


# ---------------------------------------------------------------------------------------------- numeric value probe


def _probe_oracle(x: np.ndarray, y: np.ndarray, fit: int, ridge: float = 0.0) -> float:
    """Least squares with an intercept on the first ``fit`` rows, scored by scikit-learn's ``r2_score`` on the
    rest: numpy's ``lstsq`` without ridge, else scikit-learn's ``Ridge`` (intercept not penalised) with the
    documented ``alpha = ridge * trace(X_fit^T X_fit) / D``."""
    if ridge:
        alpha = ridge * float((x[:fit] ** 2).sum()) / x.shape[1]
        pred = Ridge(alpha=alpha, solver="cholesky").fit(x[:fit], y[:fit]).predict(x[fit:])
    else:
        design = np.hstack([np.ones((len(x), 1)), x])
        pred = design[fit:] @ np.linalg.lstsq(design[:fit], y[:fit], rcond=None)[0]
    return float(r2_score(y[fit:], pred))


def test_linear_probe_r2_is_held_out_least_squares() -> None:
    """On features with a noisy linear relation, the probe's R^2 is that of least squares fitted on the first rows
    and scored on the others; exact linear data gives 1; features that do not vary give the R^2 of predicting the
    fit rows' mean, ``1 - sum (y - mean(y_fit))^2 / sum (y - mean(y_test))^2`` (never positive)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    y = x @ w + 0.3 + torch.randn(80, generator=g, dtype=torch.float64)
    expected = _probe_oracle(x.numpy(), y.numpy(), 50)
    assert 0.5 < expected < 0.95  # noisy: a value strictly between the two ends, so the comparison is informative
    assert linear_probe_r2(x, y, 50) == pytest.approx(expected, rel=1e-7)
    assert linear_probe_r2(x, x @ w + 0.3, 50) == pytest.approx(1.0, abs=1e-12)
    const = torch.ones(80, 4, dtype=torch.float64) * torch.tensor([0.2, -0.1, 0.3, 0.05], dtype=torch.float64)
    y_test = y[50:]
    by_hand = 1 - float(((y_test - y[:50].mean()) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum())
    assert linear_probe_r2(const, y, 50) == pytest.approx(by_hand, rel=1e-9)
    assert by_hand < 0.0


@pytest.mark.parametrize("norm", ["none", "ln", "rms", "bn"])
def test_numeric_value_probe_is_the_documented_probe(norm: str) -> None:
    """What the docstring says: per dense field, over the non-missing rows in batch order, a ridge probe (the
    documented relative ridge) fitted on the first half from the field's embedding to ``x`` and scored by R^2 on
    the second half; ``pre`` on ``x v + b`` (R^2 1), ``post`` on the embedding's output (a by-hand forward);
    means over fields. Norm parameters are randomised so the post embedding is not a rescaled copy."""
    model = _model(f"norm.numeric={norm}", dropout=0.0)
    with torch.no_grad():
        for p in model.embed.numeric_norm.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    batch = tiny_batch(batch_size=256, seed=4)
    emb = _oracle_copy(model).embed  # BN on batch statistics, as in the probe
    with torch.no_grad():
        post_all = emb(batch)  # (B, F, D): the dense fields are the first Fn fields
    with probe_mode(model):
        out = numeric_value_probe(model, batch)
    assert set(out) == {"pre", "post", "pre_mean", "post_mean"}
    fn = batch.dense.shape[1]
    for j in range(fn):
        rows = ~batch.dense_missing[:, j]
        assert int(rows.sum()) < len(rows)  # some missing rows, which must be left out
        x = batch.dense[rows, j]
        fit = int(rows.sum()) // 2
        post = post_all[rows, j].double().numpy()
        assert out["pre"][str(j)] == pytest.approx(1.0, abs=1e-9)
        expected = _probe_oracle(post, x.double().numpy(), fit, PROBE_RIDGE)
        assert out["post"][str(j)] == pytest.approx(expected, rel=1e-6)
    for key in ("pre", "post"):
        assert set(out[key]) == {str(j) for j in range(fn)}
        assert out[f"{key}_mean"] == pytest.approx(sum(out[key].values()) / fn, abs=1e-12)


def test_ln_of_x_v_plus_b_keeps_the_value_where_the_embedding_norm_does_not_show_it() -> None:
    """A per-field LN with a uniform gain, no bias and a small eps fixes ``||LN(e)||`` (its spread over the rows
    is float rounding), so a measure built on the embedding's norm would call the value erased; the value is still
    there: a linear probe reads ``x`` back from ``LN(x v + b)`` with a high held-out R^2 (0.94 and 0.88 for this
    seed; the erasing construction below gives at most 0)."""
    model = _model("norm.numeric={name: ln, eps: 1.0e-12}", dropout=0.0)
    batch = tiny_batch(batch_size=1024, seed=5)
    with torch.no_grad():
        post = model.embed(batch)[:, :2]  # the two dense fields
    out = numeric_value_probe(model, batch)
    for j in range(2):
        norms = post[~batch.dense_missing[:, j], j].norm(dim=-1)
        assert float(norms.std() / norms.mean()) < 1e-6  # what a correlation with ||e|| sees: a constant
        assert out["post"][str(j)] > 0.85


def test_a_norm_that_erases_the_value_has_r2_zero() -> None:
    """With b = 0 the embedding is ``x v``, and for x > 0 a per-field LN maps every row to ``LN(v)`` (up to eps,
    made negligible by a large ``v``): the post embedding is the same vector for every row, so no probe can read x
    back: R^2 about 0 (the value of predicting the mean); before the norm x is read exactly (R^2 1)."""
    model = _model("norm.numeric=ln", dropout=0.0)
    batch = tiny_batch(batch_size=512, seed=6)
    batch.dense.abs_()
    with torch.no_grad():
        model.embed.dense_bias.zero_()
        model.embed.dense_weight.mul_(1e6)  # x^2 var(v) >> eps for every present x: LN's eps leaks no magnitude
        post = model.embed(batch)[:, :2]
    for j in range(2):
        rows = post[~batch.dense_missing[:, j], j]
        assert torch.allclose(rows, rows[:1].expand_as(rows), rtol=1e-5, atol=0)  # the construction erases x
    out = numeric_value_probe(model, batch)
    assert out["pre_mean"] == pytest.approx(1.0, abs=1e-9)
    for j in ("0", "1"):
        assert -0.02 < out["post"][j] <= 0.0


def test_numeric_value_probe_is_empty_without_dense_fields() -> None:
    """A schema whose numeric fields are all bucketised has no dense value to read back: ``{}``."""
    from ctr.types import Schema

    schema = tiny_schema()
    schema = Schema([f for f in schema.fields if f.encoding == "id"])
    cfg = load_config(overrides=["model.name=dnn", "model.embed_dim=4", "model.hidden=[8]"])
    model = build_model(schema, cfg.model, cfg.norm)
    assert numeric_value_probe(model, tiny_batch(schema, batch_size=16)) == {}


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
    record = probe(model, batch, ALL_ON, LR)
    _assert_same(before, model)
    assert {"grad_norm", "grad_norms", "landscape", "activations", "numeric_value", "bn_gap", "ics"} <= set(record)


def test_probe_in_eval_mode_and_before_the_first_step_changes_nothing() -> None:
    """A fresh model (every BN waiting for its first batch) in eval mode: the probes switch BN to train mode and run
    forward passes, yet the model comes back in eval mode with every BN still fresh and its statistics untouched."""
    model = _model(*BN_NORMS).eval()
    assert all(m.fresh for m in model.modules() if isinstance(m, BatchNorm))
    before = _snapshot(model)
    probe(model, tiny_batch(batch_size=64), ALL_ON, LR)
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
    diag = Diagnostics(ALL_ON, lr=LR)
    with_diag, without = _train(diag), _train(None)
    assert len(diag.records) == 4
    for k in without:
        assert torch.equal(with_diag[k], without[k]), k


# ------------------------------------------------------------------------------------------------------ the log


def test_log_holds_one_record_per_probed_step_as_strict_json(tmp_path: Path) -> None:
    """Records at steps 0, every, 2 every ...; the file round-trips to the in-memory records; a NaN (here: no dense
    field with enough present values for a probe, so no mean) is written as null, not as invalid JSON."""
    cfg = dataclasses.replace(_diag(grad_norms=True, magnitude=True), every=2)
    model = _model(dropout=0.0)
    batch = tiny_batch(batch_size=16)
    batch.dense_missing[2:] = True  # two present values per dense field: too few for a probe
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
    assert records[0]["numeric_value"] == {"pre": {}, "post": {}, "pre_mean": None, "post_mean": None}
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


def test_moments_of_a_stage_without_fields_are_nan_without_a_warning():
    import math
    import warnings

    import torch

    from ctr.train.diagnostics import _moments

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _moments(torch.zeros(8, 0, 4))  # (B, Fn=0, D): data without numeric fields
    assert all(math.isnan(v) for v in out.values())
