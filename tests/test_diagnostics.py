"""Diagnostics: the landscape probe on a quadratic, exact restoration of the model, and the logged statistics."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _tiny import tiny_batch, tiny_schema
from torch import nn

from ctr.config import DiagnosticsConfig, ModelConfig, NormConfig
from ctr.models import build_model
from ctr.nn.norm import BatchNorm
from ctr.train.diagnostics import Diagnostics, landscape_probe, open_diagnostics, probe, read_diagnostics

STEPS = [0.05, 0.1, 0.2, 0.4]


def _quadratic(a: torch.Tensor, w0: torch.Tensor):
    w = nn.Parameter(w0.clone())
    return w, lambda: 0.5 * (a * w * w).sum()  # L = w^T A w / 2, A = diag(a): grad = A w, Hessian = A


def test_landscape_on_isotropic_quadratic_gives_its_curvature():
    c = 3.0
    a = torch.full((5,), c, dtype=torch.float64)
    w, loss = _quadratic(a, torch.arange(1.0, 6.0, dtype=torch.float64))
    before = w.detach().clone()
    out = landscape_probe(loss, [w], STEPS)
    assert out["beta"] == pytest.approx(c, rel=1e-12)  # ||grad(W) - grad(W - eta g)|| / ||eta g|| = c for every eta
    g = a * before
    for eta, loss_eta, diff in zip(STEPS, out["losses"], out["grad_diffs"]):
        assert loss_eta == pytest.approx(float(0.5 * (a * (before - eta * g) ** 2).sum()), rel=1e-12)
        assert diff == pytest.approx(eta * c * float(g.norm()), rel=1e-12)
    assert out["loss_range"] == pytest.approx(max([out["loss"]] + out["losses"]) - min([out["loss"]] + out["losses"]))
    assert torch.equal(w.detach(), before) and w.grad is None


def test_landscape_beta_is_the_rayleigh_ratio_along_the_gradient():
    a = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    w, loss = _quadratic(a, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))  # top eigenvector: beta = 9
    assert landscape_probe(loss, [w], STEPS)["beta"] == pytest.approx(9.0, rel=1e-12)
    w, loss = _quadratic(a, torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    g = a * torch.ones(3, dtype=torch.float64)
    expected = float((a * g).norm() / g.norm())  # ||A g|| / ||g||: the quadratic's smoothness along g
    assert landscape_probe(loss, [w], STEPS)["beta"] == pytest.approx(expected, rel=1e-12)


def _model(dropout: float = 0.2):
    torch.manual_seed(0)
    cfg = ModelConfig("dnn", 4, {"hidden": [8, 8], "dropout": dropout})
    norms = NormConfig(numeric="ln", categorical={"name": "bn", "scope": "dim"}, mlp="bn")
    return build_model(tiny_schema(), cfg, norms)


ALL_ON = DiagnosticsConfig(every=1, grad_norms=True, landscape=True, activations=True)


def test_probe_restores_weights_buffers_grads_modes_and_rng_exactly():
    model = _model()
    batch = tiny_batch(batch_size=64)
    model.train()
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    record = probe(model, batch, ALL_ON)
    for k, v in model.state_dict().items():  # parameters and BN running stats / num_batches_tracked
        assert torch.equal(v, state[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert {"grad_norm", "grad_norms", "landscape", "activations", "numeric_magnitude", "bn_gap"} <= set(record)


def test_probe_before_the_first_step_keeps_bn_waiting_for_its_first_batch():
    model = _model()
    bns = [m for m in model.modules() if isinstance(m, BatchNorm)]
    assert bns and all(m.fresh for m in bns)
    probe(model, tiny_batch(batch_size=64), ALL_ON)
    assert all(m.fresh for m in bns)  # the first training batch still sets the running statistics


def _train(diagnostics: Diagnostics | None, steps: int = 4) -> dict[str, torch.Tensor]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(1)  # dropout masks
    for step in range(steps):
        batch = tiny_batch(batch_size=64, seed=step)
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        opt.zero_grad()
        loss.backward()
        if diagnostics is not None:
            diagnostics(step, model, batch, loss)
        opt.step()
    return model.state_dict()


def test_training_with_diagnostics_is_bit_identical_to_training_without():
    diag = Diagnostics(ALL_ON)
    with_diag, without = _train(diag), _train(None)
    assert len(diag.records) == 4
    for k in without:
        assert torch.equal(with_diag[k], without[k]), k


def test_records_hold_the_statistics(tmp_path):
    cfg = DiagnosticsConfig(every=2, landscape=True)
    with open_diagnostics(cfg, tmp_path) as hooks:
        assert len(hooks) == 1
        model = _model(dropout=0.0)
        for step in range(3):
            batch = tiny_batch(batch_size=64, seed=step)
            loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
            model.zero_grad()
            loss.backward()
            hooks[0](step, model, batch, loss)
    records = read_diagnostics(tmp_path / "diagnostics.jsonl")
    assert [r["step"] for r in records] == [0, 2]
    r = records[0]
    assert "embed.table.weight" in r["grad_norms"] and all(v >= 0 for v in r["grad_norms"].values())
    act = r["activations"]
    assert set(act["stages"]) == {"numeric", "categorical"}
    assert any(k.startswith("mlp") for k in act["pre_activations"]) and act["dead_relu"]
    assert 0 <= act["dead_relu_mean"] <= 1 and act["logits"]["std"] >= 0
    assert r["bn_gap"]["prob_abs_diff"] >= 0
    assert set(r["landscape"]) >= {"loss_range", "grad_diff_max", "beta", "losses"}
    assert len(r["landscape"]["losses"]) == len(cfg.landscape_steps)


def test_off_installs_no_hook(tmp_path):
    with open_diagnostics(DiagnosticsConfig(every=0), tmp_path) as hooks:
        assert hooks == ()
    assert not (tmp_path / "diagnostics.jsonl").exists()


@pytest.mark.parametrize("norm, low, high", [("none", 0.999, 1.0), ("ln", -0.05, 0.05)])
def test_numeric_magnitude_sees_a_norm_erase_the_value(norm, low, high):
    """With the bias b = 0, e = x * v: ||e|| = |x| ||v|| (correlation 1); a per-field LN keeps only sign(x) (the trap
    in STYLE.md), so ||LN(e)|| is constant and the probe reports 0."""
    torch.manual_seed(0)
    model = build_model(tiny_schema(), ModelConfig("dnn", 8, {"hidden": [4]}), NormConfig(numeric=norm))
    with torch.no_grad():
        model.embed.dense_bias.zero_()
        model.embed.dense_weight.mul_(1e4)  # |x v| >> sqrt(eps), so LN's eps does not leak the magnitude
    batch = tiny_batch(batch_size=256)
    record = probe(model, batch, DiagnosticsConfig(every=1, grad_norms=False, activations=False, bn_gap=False))
    post = record["numeric_magnitude"]["post_mean"]
    assert low <= post <= high
    assert record["numeric_magnitude"]["pre_mean"] > 0.999
    assert "bn_gap" not in record and not math.isnan(post)
