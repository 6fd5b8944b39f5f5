"""Norm registry: shapes, the invariances that define each norm, embedding scopes, and config errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny import model_config, tiny_batch, tiny_schema
from torch import nn

from ctr.errors import ConfigError
from ctr.models import build_model
from ctr.nn.embedding import FieldEmbedding
from ctr.nn.norm import NORMS, EmbeddingNorm, NormSpec, list_norms, norm_options, parse_norm

B, NF, D, H = 16, 3, 4, 6
ROW_NORMS = ["ln", "ln_simple", "vo_ln", "rms"]


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


def test_vo_ln_is_x_over_std_and_not_rms() -> None:
    torch.manual_seed(2)
    x = torch.randn(B, H) + 2.0  # mean far from 0
    vo = parse_norm({"name": "vo_ln", "affine": False}).build(H)
    rms = parse_norm({"name": "rms", "affine": False}).build(H)
    expected = x / torch.sqrt(x.var(dim=-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(vo(x), expected)
    assert not torch.allclose(vo(x), rms(x), atol=1e-2)
    centred = x - x.mean(-1, keepdim=True)  # with mean 0 they agree
    torch.testing.assert_close(vo(centred), rms(centred), atol=1e-4, rtol=1e-4)


def test_vo_ln_keeps_the_mean_direction() -> None:
    x = torch.randn(B, H) + 5.0
    y = parse_norm({"name": "vo_ln", "affine": False}).build(H)(x)
    assert (y.mean(-1) > 1).all()  # not re-centred: unlike ln


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


def test_wn_at_an_embedding_stage_gives_unit_rows_times_gain() -> None:
    x = torch.randn(B, NF, D)
    y = EmbeddingNorm(parse_norm("wn", "numeric"), NF, D)(x)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(B, NF))


GAIN_NORMS = [n for n in list_norms() if "init_gain" in norm_options(n)]


def test_every_norm_with_a_gain_takes_init_gain() -> None:
    assert set(GAIN_NORMS) == {"bn", "ln", "vo_ln", "rms", "gn", "wn"}


@pytest.mark.parametrize("name", GAIN_NORMS)
def test_init_gain_scales_the_initial_output(name: str) -> None:
    x = torch.randn(B, NF, D)
    y1 = parse_norm(name, "numeric").build((NF, D))(x)
    y = parse_norm({"name": name, "init_gain": 0.25}, "numeric").build((NF, D))(x)
    torch.testing.assert_close(y, 0.25 * y1)  # biases start at 0


def test_wn_init_gain_only_at_embedding_stages() -> None:
    with pytest.raises(ConfigError, match="unknown option 'init_gain' for norm 'wn'"):
        parse_norm({"name": "wn", "init_gain": 0.5}, "mlp")


@pytest.mark.parametrize("name", GAIN_NORMS)
def test_embedding_norms_start_at_the_default_gain_unless_set(name: str) -> None:
    x = torch.randn(B, NF, D)
    ref = EmbeddingNorm(parse_norm(name, "numeric"), NF, D)(x)  # gain 1
    torch.testing.assert_close(EmbeddingNorm(parse_norm(name, "numeric"), NF, D, init_gain=0.01)(x), 0.01 * ref)
    explicit = parse_norm({"name": name, "init_gain": 0.5}, "numeric")
    torch.testing.assert_close(EmbeddingNorm(explicit, NF, D, init_gain=0.01)(x), 0.5 * ref)


@pytest.mark.parametrize("name", ["ln", "vo_ln", "rms", "bn"])
def test_switching_an_embedding_norm_on_keeps_the_initial_scale(name: str) -> None:
    """Normalised embeddings start at the table's init std, not at unit scale (which blows up FM-style products)."""
    batch = tiny_batch(batch_size=256)
    plain = FieldEmbedding(tiny_schema(), 16)(batch)
    normed = FieldEmbedding(tiny_schema(), 16, numeric=name, categorical=name)(batch)
    ratio = (normed.pow(2).mean() / plain.pow(2).mean()).sqrt().item()
    assert 0.5 < ratio < 2.0, ratio


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
    return ["field", "dim"] if name == "bn" else ["field", "all"]


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


@pytest.mark.parametrize("value,match", [
    ({"name": "ln", "eps": "small"}, "option 'eps' of norm 'ln' must be float"),
    ({"name": "gn", "groups": 2.5}, "option 'groups' of norm 'gn' must be int"),
    ({"name": "ln", "affine": 1}, "option 'affine' of norm 'ln' must be bool"),
])
def test_wrong_option_type(value: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_norm(value, "mlp")


def test_int_accepted_for_float_option() -> None:
    assert parse_norm({"name": "bn", "momentum": 1}).options["momentum"] == 1.0


def test_scope_on_non_embedding_stage() -> None:
    with pytest.raises(ConfigError, match="norm.mlp: option 'scope' applies only to the numeric and categorical"):
        parse_norm({"name": "ln", "scope": "all"}, "mlp")


@pytest.mark.parametrize("name,scope", [("ln", "dim"), ("bn", "all"), ("rms", "nowhere")])
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
