"""Every registered model x every registered norm x every stage it declares, generated from the registries.

Each case builds the model on the tiny schema, checks finite (B,) logits, a finite gradient on every parameter,
and that the mean BCE loss falls over 20 Adam steps on one fixed batch.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _tiny import check_trains, model_config, tiny_batch, tiny_options, tiny_schema

from ctr.config import STAGES, load_config, shipped_configs
from ctr.errors import ConfigError
from ctr.models import build_model, get_model, list_models
from ctr.models.base import model_spec
from ctr.nn.norm import NORMS, list_norms, parse_norm

DIM = 4
# option variants that change a model's structure, each run without a norm and with wn on the relevant stage
VARIANTS = [
    ("dcnv2", {"structure": "stacked"}, "cross"),
    ("dcnv2", {"structure": "crossnet_only"}, "cross"),
    ("dcnv2", {"low_rank": 3}, "cross"),
    ("dcnv2", {"low_rank": 3, "num_experts": 3}, "cross"),
    ("masknet", {"structure": "serial"}, "mlp"),
    ("fibinet", {"bilinear_type": "field_all"}, "mlp"),
    ("fibinet", {"bilinear_type": "field_each"}, "mlp"),
    ("finalmlp", {"use_gating": False, "fusion_heads": 2}, "mlp"),
    ("autoint", {"residual": False, "projection_relu": False}, "attention"),
    ("autoint", {"block": "transformer"}, "attention"),
    ("autoint_plus", {"block": "transformer"}, "attention"),
    ("masknet", {"head_norm": True}, "mlp"),
    ("xdeepfm", {"split_half": False}, "cin"),
]


def build(name: str, options: dict | None = None, **norm):
    torch.manual_seed(0)
    return build_model(
        tiny_schema(), *model_config(name, DIM, tiny_options(name) if options is None else options, **norm)
    )


def _cases() -> list:
    cases = []
    for name in list_models():
        stages = get_model(name).stages
        cases.append(pytest.param(name, {}, id=f"{name}-defaults"))  # the shipped configs/models/<name>.yaml norms
        if any(parse_norm(getattr(load_config([], [f"model.name={name}"]).norm, s), s).name != "none" for s in stages):
            cases.append(pytest.param(name, {s: "none" for s in stages}, id=f"{name}-none"))
        for stage in stages:
            for norm in list_norms():
                if norm != "none":
                    cases.append(pytest.param(name, {stage: norm}, id=f"{name}-{stage}={norm}"))
        for norm in list_norms():
            if "mlp" in stages and norm != "none":
                cases.append(
                    pytest.param(
                        name, {"mlp": {"name": norm, "position": "post_act"}}, id=f"{name}-mlp={norm}-post_act"
                    )
                )
            if "attention" in stages:
                cases.append(
                    pytest.param(
                        name, {"attention": {"name": norm, "position": "pre"}}, id=f"{name}-attention={norm}-pre"
                    )
                )
    return cases


@pytest.mark.parametrize("name,norm", _cases())
def test_model_norm_stage(name: str, norm: dict) -> None:
    check_trains(build(name, **norm))


@pytest.mark.parametrize(
    "name,options,stage", VARIANTS, ids=[n + "-" + ",".join(f"{k}={v}" for k, v in o.items()) for n, o, _ in VARIANTS]
)
@pytest.mark.parametrize("norm", ["none", "wn", "ln", "gn"])  # gn: odd inner widths (rank 3) must not matter
def test_model_variants(name: str, options: dict, stage: str, norm: str) -> None:
    check_trains(build(name, tiny_options(name, **options), **{stage: norm}))


@pytest.mark.parametrize("name", list_models())
def test_default_config_loads_and_trains(name: str) -> None:
    cfg = load_config(overrides=[f"model.name={name}"])
    assert cfg.model.name == name
    torch.manual_seed(0)
    check_trains(build_model(tiny_schema(), cfg.model, cfg.norm), steps=10, lr=1e-3)


def test_normdnn_preset() -> None:
    """The published protocol family: numeric values embedded, Adam 1e-4, batch 1024, up to 10 epochs with early
    stopping, emb 10, MLP 400-400-400 with parameter-free VO-LN."""
    cfg = load_config([shipped_configs() / "presets" / "normdnn.yaml"])
    assert cfg.model.name == "dnn"
    assert cfg.data.numeric_transform == "log_standard"
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.epochs, cfg.train.patience) == (1e-4, 1024, 10, 2)
    assert cfg.model.embed_dim == 10 and cfg.model.options["hidden"] == [400, 400, 400]
    torch.manual_seed(0)
    model = build_model(tiny_schema(), cfg.model, cfg.norm)
    assert model.embed.categorical_norm.scope == "dim"
    vo = [m for m in model.mlp.modules() if isinstance(m, NORMS.get("vo_ln"))]
    assert len(vo) == 3 and all(not list(m.parameters()) for m in vo)
    check_trains(model, steps=30, lr=1e-3)  # embeddings start at std 0.01: slower to fit a batch than unit scale


@pytest.mark.parametrize("name", list_models())
def test_model_options_have_no_defaults_in_code(name: str) -> None:
    """Model defaults live only in configs/models/<name>.yaml."""
    for f in dataclasses.fields(get_model(name).Options):
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (name, f.name)


@pytest.mark.parametrize("name", list_models())
def test_norm_on_missing_stage_raises(name: str) -> None:
    missing = [s for s in STAGES if s not in get_model(name).stages]
    for stage in missing:
        with pytest.raises(ConfigError, match=rf"norm\.{stage}=ln: model '{name}' has no '{stage}' stage"):
            build(name, **{stage: "ln"})


@pytest.mark.parametrize("name", list_models())
def test_declared_stages_are_known(name: str) -> None:
    stages = get_model(name).stages
    assert set(stages) <= set(STAGES)
    assert len(set(stages)) == len(stages)


def test_eval_mode_gives_finite_logits() -> None:
    for name in list_models():
        model = build(name, **({"mlp": "bn"} if "mlp" in get_model(name).stages else {}))
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(tiny_batch(batch_size=3))).all(), name


EMBEDDING_MODELS = [n for n in list_models() if {"numeric", "categorical"} <= set(get_model(n).stages)]


@pytest.mark.parametrize("name", EMBEDDING_MODELS)
def test_embed_init_std_sets_the_embedding_scale(name: str) -> None:
    """``model.embed_init_std`` sets every embedding parameter's init std, and an embedding-stage norm's gain."""
    for std in (0.01, 0.5):
        model = build(name, tiny_options(name, embed_init_std=std), categorical="ln")
        table = model.embed.table.weight
        assert abs(table.std().item() - std) < 0.2 * std, (name, std)
        gain = model.embed.categorical_norm.norm.weight
        torch.testing.assert_close(gain, torch.full_like(gain, std))


def test_embed_init_std_is_checked() -> None:
    with pytest.raises(ConfigError, match="model.embed_init_std must be > 0, got 0"):
        build("deepfm", tiny_options("deepfm", embed_init_std=0))
    with pytest.raises(ConfigError, match="embed_init_std"):  # lr has no embeddings
        cfg = load_config([], ["model.name=lr", "model.embed_init_std=0.1"])
        model_spec(cfg.model, cfg.norm)
