"""Norm registry: shapes, the invariances that define each norm, embedding scopes, and config errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _tiny import model_config, tiny_batch, tiny_schema
from torch import nn

from ctr.errors import ConfigError
from ctr.models import build_model
from ctr.nn.embedding import FieldEmbedding, RowWeightNorm
from ctr.nn.norm import NORMS, EmbeddingNorm, NormSpec, is_batch_norm, list_norms, norm_options, parse_norm

B, NF, D, H = 16, 3, 4, 6
ROW_NORMS = ["ln", "ln_simple", "vo_ln", "rms"]
BATCH_NORMS = [n for n in list_norms() if is_batch_norm(n)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomise_affine(norm: nn.Module) -> nn.Module:
    """Give gains and biases non-trivial values so invariance tests do not pass by accident."""
    with torch.no_grad():
        for p in norm.parameters():
            p.uniform_(0.5, 1.5)
    return norm


@pytest.mark.parametrize("shape", [(H,), (NF, D)], ids=["H", "FxD"])
@pytest.mark.parametrize("name", list_norms())
def test_every_norm_keeps_shape(name: str, shape: tuple[int, ...]) -> None:
    norm = parse_norm(name).build(shape)
    x = torch.randn(B, *shape)
    y = norm(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(H,), (NF, D)], ids=["H", "FxD"])
@pytest.mark.parametrize("name", ROW_NORMS)
def test_row_norms_invariant_to_positive_row_scale(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    norm = randomise_affine(parse_norm({"name": name, "eps": 1e-10}).build(shape))  # eps small: exact invariance
    x = torch.randn(B, *shape)
    scale = torch.rand(B, *([1] * len(shape))) * 4.5 + 0.5  # (B, 1, ...) in [0.5, 5]
    torch.testing.assert_close(norm(x * scale), norm(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["ln", "ln_simple"])
def test_ln_invariant_to_row_shift(name: str) -> None:
    torch.manual_seed(1)
    norm = randomise_affine(parse_norm({"name": name, "eps": 1e-10}).build((NF, D)))
    x = torch.randn(B, NF, D)
    shift = torch.randn(B, NF, 1) * 3  # one shift per normalised row
    torch.testing.assert_close(norm(x + shift), norm(x), atol=1e-4, rtol=1e-4)


def test_vo_ln_default_is_x_over_std_without_parameters_and_not_rms() -> None:
    """VO-LN as the source notes define it: no gain, no bias, no re-centring, the variance around the mean."""
    torch.manual_seed(2)
    x = torch.randn(B, H) + 2.0  # mean far from 0
    vo = parse_norm("vo_ln").build(H)
    assert list(vo.parameters()) == []
    rms = parse_norm({"name": "rms", "affine": False}).build(H)
    expected = x / torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(vo(x), expected)
    assert not torch.allclose(vo(x), rms(x), atol=1e-2)
    centred = x - x.mean(-1, keepdim=True)  # with mean 0 they agree
    torch.testing.assert_close(vo(centred), rms(centred), atol=1e-4, rtol=1e-4)


def test_vo_ln_affine_variant_has_a_gain_and_a_bias() -> None:
    torch.manual_seed(2)
    x = torch.randn(B, NF, D) + 2.0
    vo = randomise_affine(parse_norm({"name": "vo_ln", "affine": True}).build((NF, D)))
    assert vo.weight.shape == vo.bias.shape == (NF, D)
    expected = x / torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + 1e-5) * vo.weight + vo.bias
    torch.testing.assert_close(vo(x), expected)


def test_vo_ln_keeps_the_mean_direction() -> None:
    x = torch.randn(B, H) + 5.0
    y = parse_norm("vo_ln").build(H)(x)
    assert (y.mean(-1) > 1).all()  # not re-centred: unlike ln


def test_vo_ln_has_no_bias_option() -> None:
    with pytest.raises(ConfigError, match="unknown option 'bias' for norm 'vo_ln'; valid: eps, affine, init_gain"):
        parse_norm({"name": "vo_ln", "bias": False}, "mlp")


def test_mean_only_recentres_without_scaling() -> None:
    torch.manual_seed(3)
    x = torch.randn(B, NF, D) * 5 + 3
    norm = randomise_affine(parse_norm("mean_only").build((NF, D)))
    torch.testing.assert_close(norm(x), x - x.mean(-1, keepdim=True) + norm.bias)
    torch.testing.assert_close(norm(3 * x) - norm.bias, 3 * (norm(x) - norm.bias))  # no division: scale survives
    shift = torch.randn(B, NF, 1)
    torch.testing.assert_close(norm(x + shift), norm(x), atol=1e-5, rtol=1e-5)  # per-row shifts vanish
    plain = parse_norm({"name": "mean_only", "bias": False}).build((NF, D))
    assert list(plain.parameters()) == []
    torch.testing.assert_close(plain(x).mean(-1), torch.zeros(B, NF), atol=1e-5, rtol=0)


def test_bn_uses_batch_stats_in_train_and_running_stats_in_eval() -> None:
    torch.manual_seed(3)
    norm = parse_norm({"name": "bn", "momentum": 1.0}).build((NF, D))  # momentum 1: running = last batch
    x = torch.randn(B, NF, D) * 3 + 1
    y = norm(x)  # train
    torch.testing.assert_close(y.mean(0), torch.zeros(NF, D), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(NF, D), atol=1e-3, rtol=0)
    bn = norm.bn
    torch.testing.assert_close(bn.running_mean, x.reshape(B, -1).mean(0))
    torch.testing.assert_close(bn.running_var, x.reshape(B, -1).var(0, unbiased=True))
    norm.eval()
    single = x[:1]  # one example: batch stats would be degenerate; running stats are not
    expected = (single.reshape(1, -1) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(norm(single), expected.reshape(1, NF, D))
    assert not torch.allclose(norm(x), y, atol=1e-3)  # eval is not batch-normalised
    fresh = parse_norm("bn").build((NF, D)).eval()  # running stats at init: mean 0, var 1 -> identity
    torch.testing.assert_close(fresh(x), x / (1 + 1e-5) ** 0.5)
    loaded = parse_norm("bn").build((NF, D))
    loaded.load_state_dict(norm.state_dict())
    loaded(x * 5)  # a training step after loading updates the loaded stats by the momentum, not momentum 1
    torch.testing.assert_close(loaded.bn.running_mean, 0.9 * bn.running_mean + 0.1 * (x * 5).reshape(B, -1).mean(0))


def test_bn_eval_statistics_forget_their_start_values() -> None:
    """After a few steps with a small momentum, eval mode uses the batches' statistics, not PyTorch's start values
    (which would still weigh 0.99^5 = 95%)."""
    torch.manual_seed(5)
    norm = parse_norm({"name": "bn", "momentum": 0.01}).build(H)
    batches = [torch.randn(512, H) * 0.01 + 3 for _ in range(5)]  # std 0.01, mean 3: far from the start (0, 1)
    for xb in batches:
        norm(xb)
    norm.eval()
    w = [0.99**4] + [0.01 * 0.99 ** (4 - i) for i in range(1, 5)]  # first batch sets the stats, then EMA
    mean = sum(wi * xb.mean(0) for wi, xb in zip(w, batches))
    var = sum(wi * xb.var(0) for wi, xb in zip(w, batches))
    torch.testing.assert_close(norm.bn.running_mean, mean, rtol=1e-5, atol=0)
    torch.testing.assert_close(norm.bn.running_var, var, rtol=1e-4, atol=0)
    y = norm(batches[-1])
    assert 0.8 < y.std().item() < 1.2 and y.mean().abs().item() < 0.2  # normalised, unlike the uncorrected stats


def test_gn_is_ln_on_each_group() -> None:
    torch.manual_seed(4)
    norm = parse_norm({"name": "gn", "groups": 3}).build((NF, H))
    x = torch.randn(B, NF, H)
    expected = torch.cat([F.layer_norm(g, (H // 3,)) for g in x.split(H // 3, dim=-1)], dim=-1)
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_gn_groups_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="groups=4 must divide the normalised width 6"):
        parse_norm({"name": "gn", "groups": 4}).build(H)


def test_wn_keeps_linear_at_init_and_is_invariant_to_v_scale() -> None:
    torch.manual_seed(5)
    linear = nn.Linear(H, 5)
    x = torch.randn(B, H)
    before = linear(x).detach()
    layer, norm = parse_norm("wn").apply(linear, 5)
    assert isinstance(norm, nn.Identity)
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        layer.parametrizations.weight.original1.mul_(7.0)  # v
    torch.testing.assert_close(layer(x), before, atol=1e-5, rtol=1e-5)


def test_activation_norms_leave_linear_alone() -> None:
    linear = nn.Linear(H, 5)
    layer, norm = parse_norm("ln").apply(linear, 5)
    assert layer is linear and isinstance(norm, NORMS.get("ln"))
    assert parse_norm("gn").reparametrize(linear) is linear  # no norm is built for norm-less Linears
    assert hasattr(parse_norm("wn").reparametrize(nn.Linear(H, 5)), "parametrizations")


def test_wn_takes_no_init_gain_and_no_eps_at_linear_stages() -> None:
    """Its magnitudes start at ||w|| (Linear stages) or at each row's norm (embedding stages): no init_gain."""
    for stage in ("mlp", "numeric"):
        with pytest.raises(ConfigError, match="unknown option 'init_gain' for norm 'wn'"):
            parse_norm({"name": "wn", "init_gain": 0.5}, stage)
    with pytest.raises(ConfigError, match="unknown option 'eps' for norm 'wn'"):
        parse_norm({"name": "wn", "eps": 1e-6}, "cin")
    assert parse_norm({"name": "wn", "eps": 1e-6}, "categorical").options == {"eps": 1e-6}


def test_embedding_norm_refuses_wn() -> None:
    with pytest.raises(ValueError, match="RowWeightNorm"):
        EmbeddingNorm(parse_norm("wn", "numeric"), NF, D)


# ------------------------------------------------------------------------------- weight norm of embedding rows


def _wn_embedding(dim: int = D) -> FieldEmbedding:
    torch.manual_seed(11)
    return FieldEmbedding(tiny_schema(), dim, numeric="wn", categorical="wn")


def test_wn_at_embedding_stages_keeps_the_function_at_init() -> None:
    batch = tiny_batch()
    torch.manual_seed(11)
    plain = FieldEmbedding(tiny_schema(), D)
    torch.testing.assert_close(_wn_embedding()(batch), plain(batch), atol=1e-7, rtol=1e-6)


def test_wn_at_embedding_stages_is_a_magnitude_and_a_direction_per_row() -> None:
    """w_row = g_row * v_row / ||v_row|| for every table row and for each dense field's v, b and m."""
    embed = _wn_embedding()
    batch = tiny_batch()
    num, cat = embed.numeric_norm, embed.categorical_norm
    assert isinstance(num, RowWeightNorm) and isinstance(cat, RowWeightNorm)
    assert num.row_gain.shape == (5 + 6, 1) and cat.row_gain.shape == (7 + 3 + 11 + 4, 1)  # the stage's rows
    assert num.dense_gain.shape == (2, 3, 1)
    with torch.no_grad():
        num.row_gain.uniform_(0.5, 2.0)
        cat.row_gain.uniform_(0.5, 2.0)
        num.dense_gain.uniform_(0.5, 2.0)
    out = embed(batch)  # (B, 8, D): I1, I2 dense, I3, I4 bucket ids, C1..C4
    table, ids = embed.table.weight, batch.ids
    for j, field in enumerate(range(2, 8)):  # id fields, in id-column order
        gains = num.row_gain if j < 2 else cat.row_gain
        first = [0, 5, 0, 7, 10, 21][j]  # the field's first row in its stage's magnitude table
        rows = table[embed.offsets[j] + ids[:, j]]  # (B, D)
        expected = gains[first + ids[:, j]] * rows / rows.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(out[:, field], expected)
    for f in range(2):  # dense fields: x * g_v v/|v| + g_b b/|b|, or g_m m/|m| where missing
        v, b, m = (
            p[f] * num.dense_gain[f, k] / p[f].norm()
            for k, p in enumerate((embed.dense_weight, embed.dense_bias, embed.dense_missing))
        )
        expected = torch.where(batch.dense_missing[:, f : f + 1], m, batch.dense[:, f : f + 1] * v + b)
        torch.testing.assert_close(out[:, f], expected)
    with torch.no_grad():
        embed.table.weight.mul_(7.0)  # directions only: scaling every row changes nothing
        embed.dense_weight.mul_(3.0)
    torch.testing.assert_close(embed(batch), out)


def test_wn_at_embedding_stages_touches_only_the_looked_up_magnitudes() -> None:
    embed = _wn_embedding()
    batch = tiny_batch(batch_size=4)
    embed(batch).pow(2).sum().backward()
    grad = embed.categorical_norm.row_gain.grad.squeeze(1)  # (25,)
    used = torch.zeros(25, dtype=torch.bool)
    for j, first in zip(range(2, 6), [0, 7, 10, 21]):
        used[first + batch.ids[:, j]] = True
    assert (grad[~used] == 0).all() and (grad[used] != 0).all()


def test_wn_at_embedding_stages_takes_only_scope_field() -> None:
    with pytest.raises(ConfigError, match="scope 'all' is not valid for norm 'wn'; valid: field"):
        parse_norm({"name": "wn", "scope": "all"}, "numeric")


# ------------------------------------------------------------------------------------------------ batch norms


def _train_pair(a: nn.Module, b: nn.Module, batches: list[torch.Tensor]) -> None:
    for xb in batches:
        a(xb), b(xb)


def test_noisy_bn_running_statistics_and_eval_are_bn() -> None:
    torch.manual_seed(12)
    batches = [torch.randn(64, NF, D) * 3 + 1 for _ in range(4)]
    bn = parse_norm({"name": "bn", "momentum": 0.3}).build((NF, D))
    noisy = parse_norm({"name": "noisy_bn", "momentum": 0.3}).build((NF, D))
    noisy.load_state_dict(bn.state_dict())
    noisy.fresh = True  # both start from the first batch
    _train_pair(bn, noisy, batches)
    torch.testing.assert_close(noisy.bn.running_mean, bn.bn.running_mean)
    torch.testing.assert_close(noisy.bn.running_var, bn.bn.running_var)
    torch.testing.assert_close(noisy.bn.num_batches_tracked, bn.bn.num_batches_tracked)
    bn.eval(), noisy.eval()
    torch.testing.assert_close(noisy(batches[0]), bn(batches[0]))  # no noise in eval mode


def test_noisy_bn_per_unit_moves_each_unit_to_a_random_mean_and_std() -> None:
    """y_j = s_j z_j + m_j with z the batch-normalised x, s_j in [1, noise_std], m_j in [-noise_mean, noise_mean],
    drawn afresh at every step."""
    torch.manual_seed(13)
    x = torch.randn(256, H) * 2 + 5
    norm = parse_norm({"name": "noisy_bn", "noise_mean": 0.8, "noise_std": 2.0}).build(H)
    z = F.batch_norm(x, None, None, training=True, eps=1e-5)
    y = norm(x)
    m, s = y.mean(0), y.std(0, unbiased=False) / z.std(0, unbiased=False)
    torch.testing.assert_close(y, z * s + m, atol=1e-5, rtol=1e-5)
    assert (m.abs() <= 0.8).all() and ((s >= 1) & (s <= 2)).all()
    assert not torch.allclose(norm(x), y)  # fresh noise at the next step
    quiet = parse_norm({"name": "noisy_bn", "noise_mean": 0.0, "noise_std": 1.0}).build(H)
    torch.testing.assert_close(quiet(x), parse_norm("bn").build(H)(x))  # no noise: bn


def test_noisy_bn_per_example_adds_iid_noise_with_a_moving_mean_and_std() -> None:
    torch.manual_seed(14)
    x = torch.randn(8192, H) * 2 + 5
    norm = parse_norm({"name": "noisy_bn", "noise_mean": 0.8, "noise_std": 2.0, "mode": "per_example"}).build(H)
    z = F.batch_norm(x, None, None, training=True, eps=1e-5)
    noise = norm(x) - z  # (B, H)
    assert (noise.mean(0).abs() <= 0.8 + 0.07).all()  # means in [-0.8, 0.8], up to sampling error (std 2/90)
    std = noise.std(0)
    assert ((std > 0.95) & (std < 2.05)).all()
    corr = ((noise - noise.mean(0)) * z).mean(0) / (std * z.std(0))
    assert (corr.abs() < 0.05).all()  # independent of x, unlike per_unit's (s - 1) z + m


def test_noisy_bn_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="noisy_bn: mode 'sometimes' is not one of: per_unit, per_example"):
        parse_norm({"name": "noisy_bn", "mode": "sometimes"}).build(H)
    with pytest.raises(ConfigError, match="noise_std >= 1"):
        parse_norm({"name": "noisy_bn", "noise_std": 0.5}).build(H)


def test_lp_bn_p2_is_bn_in_train_and_eval() -> None:
    torch.manual_seed(15)
    batches = [torch.randn(64, NF, D) * 3 + 1 for _ in range(3)]
    bn, lp = parse_norm("bn").build((NF, D)), parse_norm({"name": "lp_bn", "p": 2}).build((NF, D))
    for xb in batches:
        torch.testing.assert_close(lp(xb), bn(xb), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lp.bn.running_var, bn.bn.running_var)
    bn.eval(), lp.eval()
    torch.testing.assert_close(lp(batches[0]), bn(batches[0]))


@pytest.mark.parametrize("p", [1, "inf"])
def test_lp_bn_matches_its_formula(p) -> None:
    torch.manual_seed(16)
    n = 64
    x = torch.randn(n, H) * 3 + 1
    norm = randomise_affine(parse_norm({"name": "lp_bn", "p": p, "momentum": 0.5}).build(H))
    c = x - x.mean(0)
    if p == 1:
        s = c.abs().mean(0) * math.sqrt(math.pi / 2)
    else:  # E[max of n |Z|] by quadrature of its density n * 2 phi(t) * (2 Phi(t) - 1)^(n - 1) * t
        t = torch.linspace(0, 10, 100001, dtype=torch.float64)
        phi = torch.exp(-(t**2) / 2) / math.sqrt(2 * math.pi)
        e_max = torch.trapezoid(t * n * 2 * phi * torch.erf(t / math.sqrt(2)) ** (n - 1), t).item()
        s = c.abs().amax(0) / e_max
    expected = c / torch.sqrt(s**2 + 1e-5) * norm.bn.weight + norm.bn.bias
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)
    # the first batch sets the running statistics; eval uses them like bn
    torch.testing.assert_close(norm.bn.running_var, s**2 * n / (n - 1), atol=1e-5, rtol=1e-5)
    norm.eval()
    xe = torch.randn(5, H)
    eval_expected = (xe - x.mean(0)) / torch.sqrt(s**2 * n / (n - 1) + 1e-5) * norm.bn.weight + norm.bn.bias
    torch.testing.assert_close(norm(xe), eval_expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", ["1", "2", "inf"])
@pytest.mark.parametrize("n", [256, 4096])
def test_lp_bn_scale_is_the_std_for_gaussian_data(p: str, n: int) -> None:
    """S estimates sigma without bias for Gaussian data (p = inf: the constant of Hoffer et al.'s released code
    would give about 1.42 sigma)."""
    torch.manual_seed(17)
    x = torch.randn(n, 2000) * 3 + 1
    norm = parse_norm({"name": "lp_bn", "p": p}).build(2000)
    s = norm.scale(x - x.mean(0))  # (2000,)
    assert abs(s.mean().item() / 3 - 1) < 0.01  # averaged over 2000 units


@pytest.mark.parametrize("p", [1, 2, "inf", float("inf"), "1"])
def test_lp_bn_accepts_p(p) -> None:
    parse_norm({"name": "lp_bn", "p": p}).build(H)


def test_lp_bn_refuses_other_p() -> None:
    with pytest.raises(ConfigError, match="lp_bn: p=3 is not one of: 1, 2, inf"):
        parse_norm({"name": "lp_bn", "p": 3}).build(H)


@pytest.mark.parametrize("name", BATCH_NORMS)
def test_batch_norms_warm_start_from_the_first_batch(name: str) -> None:
    torch.manual_seed(18)
    norm = parse_norm({"name": name, "momentum": 0.01}).build(H)
    x = torch.randn(128, H) * 0.01 + 3
    norm(x)
    torch.testing.assert_close(norm.bn.running_mean, x.mean(0))  # momentum 1 on the first batch
    assert not norm.fresh
    norm(x + 1)
    torch.testing.assert_close(norm.bn.running_mean, x.mean(0) + 0.01)  # then the momentum
    loaded = parse_norm(name).build(H)
    loaded.load_state_dict(norm.state_dict())
    assert not loaded.fresh  # loaded running statistics are kept


GAIN_NORMS = [n for n in list_norms() if "init_gain" in norm_options(n)]


def _with_gain(name: str, **options) -> dict:
    """``name`` with its gain on (vo_ln has none by default)."""
    return {"name": name, **({"affine": True} if name == "vo_ln" else {}), **options}


def test_every_norm_with_a_gain_takes_init_gain() -> None:
    assert set(GAIN_NORMS) == {"bn", "noisy_bn", "lp_bn", "ln", "vo_ln", "rms", "gn"}


@pytest.mark.parametrize("name", GAIN_NORMS)
def test_init_gain_scales_the_initial_output(name: str) -> None:
    x = torch.randn(B, NF, D)
    torch.manual_seed(19)  # the same noise draws for noisy_bn
    y1 = parse_norm(_with_gain(name), "numeric").build((NF, D))(x)
    torch.manual_seed(19)
    y = parse_norm(_with_gain(name, init_gain=0.25), "numeric").build((NF, D))(x)
    torch.testing.assert_close(y, 0.25 * y1)  # biases start at 0


@pytest.mark.parametrize("name", GAIN_NORMS)
def test_embedding_norms_start_at_the_default_gain_unless_set(name: str) -> None:
    x = torch.randn(B, NF, D)

    def out(spec: dict, **kwargs) -> torch.Tensor:
        torch.manual_seed(20)
        return EmbeddingNorm(parse_norm(spec, "numeric"), NF, D, **kwargs)(x)

    ref = out(_with_gain(name))  # gain 1
    torch.testing.assert_close(out(_with_gain(name), init_gain=0.01), 0.01 * ref)
    torch.testing.assert_close(out(_with_gain(name, init_gain=0.5), init_gain=0.01), 0.5 * ref)


@pytest.mark.parametrize("name", ["ln", {"name": "vo_ln", "affine": True}, "rms", "bn", "lp_bn", "noisy_bn", "wn"])
def test_switching_an_embedding_norm_on_keeps_the_initial_scale(name) -> None:
    """Normalised embeddings start at the table's init std, not at unit scale (which blows up FM-style products)."""
    batch = tiny_batch(batch_size=256)
    plain = FieldEmbedding(tiny_schema(), 16)(batch)
    normed = FieldEmbedding(tiny_schema(), 16, numeric=name, categorical=name)(batch)
    ratio = (normed.pow(2).mean() / plain.pow(2).mean()).sqrt().item()
    assert 0.5 < ratio < 2.0, ratio


def test_vo_ln_default_at_an_embedding_stage_has_no_gain_to_keep_the_initial_scale() -> None:
    """Like ln_simple, parameter-free VO-LN does not start at the init std: its output is about unit scale."""
    batch = tiny_batch(batch_size=256)
    plain = FieldEmbedding(tiny_schema(), 16)(batch)[:, 4:]  # the categorical fields
    normed = FieldEmbedding(tiny_schema(), 16, categorical="vo_ln")(batch)[:, 4:]
    ratio = (normed.pow(2).mean() / plain.pow(2).mean()).sqrt().item()
    assert ratio > 50, ratio  # embeddings start at std 0.01


# ------------------------------------------------------------------------------------------------ embedding scopes


def test_scope_field_normalises_each_field_over_d() -> None:
    x = torch.randn(B, NF, D) * 4 + 2
    y = EmbeddingNorm(parse_norm("ln", "numeric"), NF, D)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(B, NF), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(B, NF), atol=5e-3, rtol=0)  # eps 1e-5 vs var


def test_scope_all_normalises_across_fields() -> None:
    x = torch.randn(B, NF, D) * 4 + 2
    y = EmbeddingNorm(parse_norm({"name": "ln", "scope": "all"}, "numeric"), NF, D)(x)
    torch.testing.assert_close(y.mean((1, 2)), torch.zeros(B), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((1, 2), unbiased=False), torch.ones(B), atol=1e-3, rtol=0)
    assert not torch.allclose(y.mean(-1), torch.zeros(B, NF), atol=1e-2)  # not per field


def test_scope_dim_bn_shares_stats_across_fields() -> None:
    x = torch.randn(B, NF, D) * 4 + torch.arange(NF).view(1, NF, 1)  # field means differ
    norm = EmbeddingNorm(parse_norm({"name": "bn", "scope": "dim"}, "numeric"), NF, D)
    y = norm(x)
    assert norm.norm.bn.num_features == D  # one gain/bias per dim
    torch.testing.assert_close(y.mean((0, 1)), torch.zeros(D), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var((0, 1), unbiased=False), torch.ones(D), atol=1e-3, rtol=0)
    assert not torch.allclose(y.mean(0), torch.zeros(NF, D), atol=1e-2)  # per-field means survive


def test_scope_field_bn_is_per_field_and_dim() -> None:
    x = torch.randn(B, NF, D) * 4 + 2
    norm = EmbeddingNorm(parse_norm("bn", "numeric"), NF, D)
    torch.testing.assert_close(norm(x).mean(0), torch.zeros(NF, D), atol=1e-5, rtol=0)
    assert norm.norm.bn.num_features == NF * D


# ------------------------------------------------------------------------------------------- numeric magnitude


def _scopes(name: str) -> list[str]:
    return ["field", "dim"] if is_batch_norm(name) else ["field"] if name == "wn" else ["field", "all"]


def _magnitude_batch(values: tuple[float, float]):
    batch = tiny_batch(batch_size=2)
    batch.dense[:] = 0.5
    batch.dense_missing[:] = False
    batch.ids[1] = batch.ids[0]
    batch.dense[0, 0], batch.dense[1, 0] = values  # rows differ only in the magnitude of field I1
    return batch


@pytest.mark.parametrize("name,scope", [(n, s) for n in list_norms() for s in _scopes(n)])
def test_numeric_magnitude_survives_every_norm_and_scope(name: str, scope: str) -> None:
    torch.manual_seed(6)
    embed = FieldEmbedding(tiny_schema(), D, numeric=parse_norm({"name": name, "scope": scope}, "numeric"))
    out = embed(_magnitude_batch((1.0, 3.0)))  # (2, F, D); field 0 is I1
    assert (out[0, 0] - out[1, 0]).abs().max() > 1e-3, f"{name}/{scope} erased the magnitude of a dense value"


def test_bias_free_value_times_vector_under_per_field_ln_keeps_only_the_sign() -> None:
    """Documents the trap: LN(x * v) = sign(x) * LN(v), so 1.0 and 3.0 become the same vector.
    FieldEmbedding's bias b in ``x * v + b`` is what prevents this; LN across fields (scope all) also keeps it."""
    torch.manual_seed(7)
    for scope, erased in (("field", True), ("all", False)):
        embed = FieldEmbedding(tiny_schema(), D, numeric=parse_norm({"name": "ln", "scope": scope}, "numeric"))
        with torch.no_grad():
            embed.dense_bias.zero_()  # bias-free x * v
            embed.dense_weight.normal_()  # |x| * std(v) >> sqrt(eps): no soft-sign regime
        out = embed(_magnitude_batch((1.0, 3.0)))
        assert torch.allclose(out[0, 0], out[1, 0], atol=1e-4) == erased
        flipped = embed(_magnitude_batch((1.0, -3.0)))
        assert not torch.allclose(flipped[0, 0], flipped[1, 0], atol=1e-2)  # the sign survives either way


# ------------------------------------------------------------------------------------------------- config errors


def test_unknown_norm_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="norm.mlp: unknown norm 'layernorm'; valid: ") as err:
        parse_norm("layernorm", "mlp")
    for name in list_norms():
        assert name in str(err.value)


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match="unknown option 'momentum' for norm 'ln'; valid: eps, affine"):
        parse_norm({"name": "ln", "momentum": 0.1}, "mlp")


@pytest.mark.parametrize(
    "value,match",
    [
        ({"name": "ln", "eps": "small"}, "option 'eps' of norm 'ln' must be float"),
        ({"name": "gn", "groups": 2.5}, "option 'groups' of norm 'gn' must be int"),
        ({"name": "ln", "affine": 1}, "option 'affine' of norm 'ln' must be bool"),
    ],
)
def test_wrong_option_type(value: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_norm(value, "mlp")


def test_int_accepted_for_float_option() -> None:
    assert parse_norm({"name": "bn", "momentum": 1}).options["momentum"] == 1.0


def test_scope_on_non_embedding_stage() -> None:
    with pytest.raises(ConfigError, match="norm.mlp: option 'scope' applies only to the numeric and categorical"):
        parse_norm({"name": "ln", "scope": "all"}, "mlp")


@pytest.mark.parametrize("name,scope", [("ln", "dim"), ("bn", "all"), ("lp_bn", "all"), ("rms", "nowhere")])
def test_bad_scope_for_the_norm(name: str, scope: str) -> None:
    with pytest.raises(ConfigError, match=f"scope '{scope}' is not valid for norm '{name}'; valid: "):
        parse_norm({"name": name, "scope": scope}, "numeric")


def test_malformed_norm_value() -> None:
    with pytest.raises(ConfigError, match="expected a norm name or a mapping with 'name'"):
        parse_norm({"eps": 1e-5}, "cin")


def test_config_errors_surface_through_model_construction() -> None:
    def model(**norm: object) -> tuple:
        return model_config("dnn", D, {"hidden": [8]}, **norm)

    with pytest.raises(ConfigError, match="norm.mlp: option 'scope'"):
        build_model(tiny_schema(), *model(mlp={"name": "ln", "scope": "all"}))
    with pytest.raises(ConfigError, match="norm.numeric: unknown norm 'batchnorm'"):
        build_model(tiny_schema(), *model(numeric="batchnorm"))


def test_norm_spec_passthrough() -> None:
    spec = NormSpec("ln", {"eps": 1e-6})
    assert parse_norm(spec) is spec
    assert parse_norm(None).is_none
