"""Published models as published: the norms and options their own code ships with are the shipped defaults, and
``norm: none`` remains an arm; the pre-LN study's schedule ends its warm-up inside the run and probes after it."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import model_config, tiny_batch, tiny_schema
from torch import nn

from ctr.ablation.grid import plan_ablation, read_ablation
from ctr.config import load_config, shipped_configs
from ctr.errors import ConfigError
from ctr.models import build_model
from ctr.nn.attention import SelfAttentionStack, TransformerStack
from ctr.nn.norm import LayerNorm, NormSpec, parse_norm

OFFICIAL_POST_LN = NormSpec("ln", {"eps": 1e-8}, "field", "post")


def defaults(name: str):
    return load_config([], [f"model.name={name}"])


def build_default(name: str, **options) -> nn.Module:
    cfg = defaults(name)
    torch.manual_seed(0)
    return build_model(tiny_schema(), cfg.model.__class__(name, 4, {**cfg.model.options, **options}), cfg.norm)


@pytest.mark.parametrize("name", ["autoint", "autoint_plus"])
def test_autoint_defaults_to_the_official_post_ln(name: str) -> None:
    cfg = defaults(name)
    assert parse_norm(cfg.norm.attention, "attention") == OFFICIAL_POST_LN
    model = build_default(name, attention_layers=2, attention_dim=8)
    layers = model.attention.layers
    assert all(isinstance(layer.norm, LayerNorm) and layer.norm.eps == 1e-8 for layer in layers)
    assert isinstance(model.attention.final_norm, nn.Identity)  # post: no final norm
    no_norm = build_model(
        tiny_schema(), *model_config(name, 4, {"attention_layers": 2, "attention_dim": 8}, attention="none")
    )
    assert not any(isinstance(m, LayerNorm) for m in no_norm.modules())  # the paper's norm-free arm


def test_masknet_defaults_are_its_layernorms() -> None:
    cfg = defaults("masknet")
    for stage in ("numeric", "categorical"):
        assert parse_norm(getattr(cfg.norm, stage), stage) == NormSpec("ln", {"init_gain": 1.0}, "field", "")
    assert parse_norm(cfg.norm.mlp, "mlp") == NormSpec("ln", {}, "field", "pre_act")
    model = build_default("masknet", num_blocks=2, block_dim=8, hidden=[8])
    for stage_norm in (model.embed.numeric_norm, model.embed.categorical_norm):  # LayerNorm(D) per field, gain 1
        assert isinstance(stage_norm.norm, LayerNorm) and stage_norm.norm.shape[-1] == 4
        torch.testing.assert_close(stage_norm.norm.weight, torch.ones_like(stage_norm.norm.weight))
    for block in model.blocks:  # Linear -> LN -> ReLU
        assert [type(m) for m in block.hidden.net] == [nn.Linear, LayerNorm, nn.ReLU]
    assert not any(isinstance(m, LayerNorm) for m in model.head.modules())  # FuxiCTR's head has no norm
    headed = build_default("masknet", num_blocks=2, block_dim=8, hidden=[8], head_norm=True)
    assert any(isinstance(m, LayerNorm) for m in headed.head.modules())


@pytest.mark.parametrize("structure", ["parallel", "serial"])
def test_masknet_masks_come_from_the_embeddings_before_the_stage_norms(structure: str) -> None:
    """mask = MLP(V_emb) with V_emb un-normalised; the first blocks' input is LN_EMB(V_emb)."""
    model = build_default("masknet", structure=structure, num_blocks=2, block_dim=8, hidden=[8, 8])
    batch = tiny_batch()
    raw = model.embed.lookup(batch).flatten(1)
    normed = model.embed(batch).flatten(1)
    assert not torch.allclose(raw, normed, atol=1e-3)
    seen = []
    block = model.blocks[0]
    block.mask.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    block.hidden.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    embed_calls = []
    model.embed.register_forward_hook(lambda m, inp, out: embed_calls.append(out))  # what diagnostics hook
    model(batch)
    (mask_in, mask), (hidden_in, _) = seen[:2]
    torch.testing.assert_close(mask_in, raw)
    torch.testing.assert_close(hidden_in, mask * normed)
    assert len(embed_calls) == 1
    torch.testing.assert_close(embed_calls[0].flatten(1), normed)


def test_xdeepfm_defaults_to_split_half() -> None:
    assert defaults("xdeepfm").model.options["split_half"] is True
    model = build_default("xdeepfm", cin_layers=[4, 4], hidden=[8])
    assert model.cin.split_half and model.cin.out_dim == 2 + 4
    assert build_default("xdeepfm", cin_layers=[4, 4], hidden=[8], split_half=False).cin.out_dim == 8


def test_autoint_block_option() -> None:
    assert defaults("autoint").model.options["block"] == "autoint"  # today's layer stays the default
    assert isinstance(build_default("autoint", attention_layers=2, attention_dim=8).attention, SelfAttentionStack)
    model = build_default("autoint", block="transformer", attention_layers=2, attention_dim=4, ffn_dim=8)
    assert isinstance(model.attention, TransformerStack)
    assert isinstance(model.attention.project, nn.Identity)  # attention_dim == embed_dim: identity residuals
    assert model(tiny_batch()).shape == (32,)
    with pytest.raises(ConfigError, match="model.block 'bert' is not one of: autoint, transformer"):
        build_default("autoint", block="bert")


# ------------------------------------------------------------------------------------------ the pre-LN study


def test_prenorm_study_warms_up_inside_the_run_and_probes_after_it() -> None:
    """On the bundled sample (239,914 train rows) every run's warm-up ends before its last step, and gradient norms
    are probed after the warm-up, with at least 10 probes per run."""
    spec = read_ablation(shipped_configs() / "ablations" / "prenorm_attention.yaml")
    plan = plan_ablation(spec)
    train_rows = 239_914
    lrs, warmups, positions = set(), set(), set()
    for cell in plan.cells:
        cfg = cell.config
        tc, every = cfg.train, cfg.diagnostics.every
        assert cfg.model.options["block"] == "transformer"
        assert 3 <= cfg.model.options["attention_layers"] <= 6
        steps = min((train_rows // tc.batch_size) * tc.epochs, tc.max_steps or math.inf)
        assert tc.max_steps and steps == tc.max_steps  # a fixed budget, reached within the epochs
        assert tc.patience >= tc.epochs  # early stopping never shortens a run
        assert tc.warmup_steps < steps
        if tc.warmup_steps:
            assert 0.02 <= tc.warmup_steps / steps <= 0.1  # a few percent of the run
        after = [s for s in range(0, steps, every) if s >= tc.warmup_steps]
        assert len(after) >= 10 and cfg.diagnostics.grad_norms
        (
            lrs.add(tc.lr),
            warmups.add(tc.warmup_steps),
            positions.add(parse_norm(cfg.norm.attention, "attention").position),
        )
    assert sorted(lrs) == [1e-3, 3e-3, 1e-2, 3e-2] and len(warmups) == 2 and positions == {"pre", "post"}
