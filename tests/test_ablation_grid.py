"""Ablation configs: expansion, validation (clear errors, invalid cells dropped), baselines and run names."""

from __future__ import annotations

import copy

import pytest
import yaml

from ctr.ablation.grid import config_hash, expand, parse_ablation, plan_ablation, read_ablation
from ctr.config import load_config, shipped_configs
from ctr.errors import ConfigError

SMALL = {"model": {"name": "dnn", "hidden": [8]}, "train": {"epochs": 1}}


def spec(**raw):
    return parse_ablation({**copy.deepcopy(SMALL), **raw})


def test_product_of_grid_and_stage_norms():
    s = spec(
        grid={"model.name": ["dnn", "deepfm"], "train.lr": [1e-3, 1e-2]},
        stage_norms={"stages": ["categorical", "mlp"], "norms": ["bn", "ln", "vo_ln"]},
    )
    cells = expand(s)
    assert len(cells) == 2 * 2 * 3 * 2
    assert cells[0] == {"model.name": "dnn", "train.lr": 1e-3, "norm.categorical": "bn"}
    assert cells[1] == {"model.name": "dnn", "train.lr": 1e-3, "norm.mlp": "bn"}
    plan = plan_ablation(s)
    assert len(plan.cells) == 24 + 4  # plus one all-none baseline per (model, lr)
    assert plan.keys == ["model.name", "train.lr", "norm.categorical", "norm.mlp"]


def test_explicit_cells_and_seeds():
    s = spec(
        cells=[{"norm.mlp": {"name": "ln", "position": "post_act"}}, {"norm.mlp": {"name": "bn", "momentum": 0.01}}],
        seeds=[3, 4, 5],
    )
    plan = plan_ablation(s)
    assert [c.label for c in plan.cells] == ["mlp=ln(position=post_act)", "mlp=bn(momentum=0.01)", "baseline"]
    assert len(plan.runs) == 3 * 3 and {r.seed for r in plan.runs} == {3, 4, 5}
    assert all(r.config.train.seed == r.seed for r in plan.runs)
    assert plan.cells[1].config.norm.mlp == {"name": "bn", "momentum": 0.01}


def test_every_cell_has_its_models_baseline_and_single_stage_coordinates():
    plan = plan_ablation(
        spec(grid={"model.name": ["dnn", "deepfm"]}, stage_norms={"stages": ["numeric", "mlp"], "norms": ["ln"]})
    )
    by_id = {c.id: c for c in plan.cells}
    for c in plan.cells:
        base = by_id[c.baseline_id]
        assert base.is_baseline and base.config.model.name == c.config.model.name
        assert base.config.norm.numeric == base.config.norm.mlp == "none"
        if not c.is_baseline:
            assert (c.stage, c.norm) in {("numeric", "ln"), ("mlp", "ln")}
            assert c.context == f"model={c.config.model.name}"
    assert sum(c.is_baseline for c in plan.cells) == 2


def test_a_baseline_already_in_the_grid_is_not_duplicated():
    plan = plan_ablation(spec(grid={"norm.mlp": ["none", "bn"]}))
    assert len(plan.cells) == 2
    assert plan.cells[0].is_baseline and plan.cells[1].baseline_id == plan.cells[0].id


def test_custom_baseline():
    plan = plan_ablation(
        spec(
            norm={"mlp": "ln"},
            grid={"norm.mlp": ["ln", {"name": "ln", "position": "post_act"}]},
            baseline={"norm.mlp": "ln"},
        )
    )
    assert len(plan.cells) == 2 and plan.cells[0].is_baseline
    assert plan.cells[1].baseline_id == plan.cells[0].id and plan.cells[1].stage == "mlp"


def test_invalid_cells_are_dropped_with_a_reason():
    plan = plan_ablation(
        spec(
            grid={"model.name": ["dnn", "autoint"]},
            stage_norms={"stages": ["mlp", "attention"], "norms": ["ln"]},
            model={"name": "dnn"},
        )
    )
    assert [c.label for c in plan.cells if not c.is_baseline] == ["model=dnn, mlp=ln", "model=autoint, attention=ln"]
    assert plan.invalid == [
        ("model=dnn, attention=ln", "model 'dnn' has no 'attention' stage (it has: numeric, categorical, mlp)"),
        ("model=autoint, mlp=ln", "model 'autoint' has no 'mlp' stage (it has: numeric, categorical, attention)"),
    ]


def test_common_norm_for_a_stage_only_the_grid_models_have():
    plan = plan_ablation(
        parse_ablation(
            {
                "norm": {"attention": "ln"},
                "grid": {"model.name": ["autoint", "autoint_plus"]},
                "model": {"attention_layers": 1},
            }
        )
    )
    assert [c.config.model.name for c in plan.cells if not c.is_baseline] == ["autoint", "autoint_plus"]


def test_run_names_hash_the_resolved_config_without_seed_and_noise():
    a = plan_ablation(spec(seeds=[1, 2]))
    b = plan_ablation(spec(seeds=[7], train={"epochs": 1, "progress": False, "threads": 1}))
    assert a.cells[0].id == b.cells[0].id
    assert [r.name for r in a.runs] == [f"dnn-{a.cells[0].id}-s1", f"dnn-{a.cells[0].id}-s2"]
    c = plan_ablation(spec(train={"epochs": 1, "lr": 0.01}))
    assert c.cells[0].id != a.cells[0].id
    assert config_hash(a.runs[0].config) == config_hash(a.runs[1].config) == a.cells[0].id


def test_data_override_changes_the_runs(tmp_path):
    a, b = plan_ablation(spec()), plan_ablation(spec(), data_path=tmp_path / "x.txt")
    assert b.runs[0].config.data.path == str(tmp_path / "x.txt") and a.cells[0].id != b.cells[0].id


def test_cells_resolve_like_load_config():
    s = spec(
        norm={"mlp": {"name": "bn", "momentum": 0.01}},
        train={"epochs": 1, "lr": 1e-8},
        grid={"norm.mlp": ["ln", {"name": "vo_ln", "eps": 1e-8}], "train.warmup_steps": [0, 5]},
    )
    for cell in plan_ablation(s).cells:
        overrides = ["model.name=dnn", "model.hidden=[8]", "train.epochs=1", "train.lr=1e-8"]
        overrides += [
            f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in cell.assignment.items()
        ]
        if "norm.mlp" not in cell.assignment:
            overrides.insert(0, "norm.mlp={name: bn, momentum: 0.01}")
        assert cell.config == load_config([], overrides)


def test_model_options_survive_a_model_name_grid(tmp_path):
    """Options set next to a model.name that the grid changes (inline or in a base file) are kept."""
    plan = plan_ablation(spec(model={"hidden": [8], "embed_dim": 4}, grid={"model.name": ["dnn", "deepfm"]}))
    assert {
        (c.config.model.name, c.config.model.embed_dim, tuple(c.config.model.options["hidden"])) for c in plan.cells
    } == {("dnn", 4, (8,)), ("deepfm", 4, (8,))}
    path = tmp_path / "abl.yaml"
    path.write_text(
        yaml.safe_dump(
            {"base": str(shipped_configs() / "presets" / "normdnn.yaml"), "grid": {"model.name": ["deepfm"]}}
        )
    )
    cell, baseline = plan_ablation(read_ablation(path)).cells
    assert baseline.config.norm.mlp == "none" and baseline.config.model.embed_dim == 10
    assert (
        cell.config.model.name == "deepfm" and cell.config.model.embed_dim == 10
    )  # normdnn.yaml's, not the default 16
    assert cell.config.norm.mlp == "vo_ln"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"grdi": {}}, "unknown ablation key 'grdi'"),
        ({"grid": {"lr": [1]}}, "must be dotted"),
        ({"grid": {"trian.lr": [1]}}, "not in a config section"),
        ({"grid": {"train.lr": []}}, "non-empty list"),
        ({"grid": {"train.seed": [1, 2]}}, "top-level 'seeds'"),
        ({"seeds": [1, 1]}, "distinct integers"),
        ({"seeds": []}, "distinct integers"),
        ({"stage_norms": {"stages": ["mlpp"], "norms": ["ln"]}}, "unknown stage 'mlpp'"),
        ({"stage_norms": {"stages": ["mlp"], "norms": ["lnn"]}}, "unknown norm 'lnn'"),
        ({"stage_norms": {"stages": ["mlp"]}}, "exactly 'stages' and 'norms'"),
        ({"grid": {"norm.mlp": ["ln"]}, "cells": [{"norm.mlp": "bn"}]}, "set by both 'grid' and a cell"),
        ({"cells": [{}]}, "non-empty mappings"),
        ({"alpha": 2}, "'alpha'"),
        ({"base": "nope.yaml"}, "base config not found"),
    ],
)
def test_format_errors_are_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        spec(**raw)


def test_bad_run_config_values_name_the_cell():
    with pytest.raises(ConfigError, match=r"cell 'lrr=0.1': unknown config key 'train.lrr'"):
        plan_ablation(spec(grid={"train.lrr": [0.1]}))
    with pytest.raises(ConfigError, match=r"cell 'mlp=ln\(position=middle\)'"):
        plan_ablation(spec(grid={"norm.mlp": [{"name": "ln", "position": "middle"}]}))


def test_base_files_are_relative_to_the_ablation_file(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.02}}))
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **SMALL, "grid": {"norm.mlp": ["ln"]}}))
    plan = plan_ablation(read_ablation(path))
    assert all(c.config.train.lr == 0.02 for c in plan.cells)


SHIPPED_STUDIES = sorted(p.stem for p in (shipped_configs() / "ablations").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED_STUDIES)
def test_shipped_studies_plan(name):
    plan = plan_ablation(read_ablation(shipped_configs() / "ablations" / f"{name}.yaml"))
    assert plan.cells and not plan.invalid and plan.runs
    assert all(c.baseline_id in {x.id for x in plan.cells} for c in plan.cells)
    if name.startswith("norm_placement") and name != "norm_placement_frappe":
        # 2 models x (4 norms x 3 stages + NormDNN's combination + the all-none baseline), 5 seeds
        lrs = len(plan.spec.grid.get("train.lr", [None]))
        assert len(plan.cells) == 2 * (4 * 3 + 1 + 1) * lrs and len(plan.spec.seeds) == 5


def test_overrides_set_every_run_but_grid_keys_win():
    s = spec(grid={"train.lr": [1e-3, 1e-2]}, stage_norms={"stages": ["mlp"], "norms": ["ln"]})
    plain = plan_ablation(s)
    plan = plan_ablation(s, overrides=["train.epochs=3", "train.lr=0.5", "norm.categorical=bn"])
    assert all(r.config.train.epochs == 3 for r in plan.runs)
    assert {r.config.train.lr for r in plan.runs} == {1e-3, 1e-2}
    assert all(c.config.norm.categorical == "bn" for c in plan.cells if not c.is_baseline)
    assert not {r.name for r in plan.runs} & {r.name for r in plain.runs}  # different configs, different names
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        plan_ablation(s, overrides=["train.epoch=3"])


def test_tune_must_name_a_grid_key_with_several_values():
    assert spec(grid={"train.lr": [1e-3, 1e-2]}, tune="train.lr").tune == "train.lr"
    for bad in ("train.lr", "norm.mlp", 3):
        with pytest.raises(ConfigError, match="'tune' must name a grid key with at least two values"):
            spec(grid={"train.lr": [1e-3]}, tune=bad)


def test_a_norm_option_is_a_grid_axis_applied_to_each_cells_norm_and_not_to_its_baseline():
    spec = parse_ablation(
        {
            "grid": {"model.name": ["dnn"], "norm.categorical.init_gain": [0.01, 1.0]},
            "stage_norms": {"stages": ["categorical"], "norms": ["bn", "ln"]},
            "seeds": [1],
        }
    )
    plan = plan_ablation(spec)
    norms = sorted(str(c.config.norm.categorical) for c in plan.cells if not c.is_baseline)
    assert norms == sorted(str({"name": n, "init_gain": g}) for n in ("bn", "ln") for g in (0.01, 1.0))
    baselines = [c for c in plan.cells if c.is_baseline]
    assert len(baselines) == 1 and baselines[0].config.norm.categorical == "none"
    assert {c.baseline_id for c in plan.cells} == {baselines[0].id} and not plan.invalid


def test_a_norm_option_override_keeps_the_stages_norm():
    from ctr.config import load_config

    assert load_config([], ["norm.categorical=bn", "norm.categorical.init_gain=1.0"]).norm.categorical == {
        "name": "bn",
        "init_gain": 1.0,
    }
    cfg = load_config([], ["norm.mlp={name: ln, eps: 0.1}", "norm.mlp.position=post_act"])
    assert cfg.norm.mlp == {"name": "ln", "eps": 0.1, "position": "post_act"}
    assert load_config([], ["norm.mlp.eps=0.1", "norm.mlp=bn"]).norm.mlp == "bn", "a name replaces the stage whole"
