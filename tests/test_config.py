import dataclasses
import importlib.resources

import pytest

from ctr.config import load_config, model_names, parse_override, shipped_configs
from ctr.errors import ConfigError
from ctr.models import list_models
from ctr.models.base import model_spec


def resolve(*overrides: str):
    """What ``train.py --set ...`` checks before preparing data: the config, then the model's options and norms."""
    cfg = load_config([], list(overrides))
    model_spec(cfg.model, cfg.norm)
    return cfg


def test_defaults_and_overrides_with_types():
    cfg = load_config(
        [],
        [
            "train.lr=1e-3",
            "train.epochs=3",
            "data.min_count=5",
            "model.hidden=[8, 4]",
            "norm.mlp={name: bn, momentum: 0.01}",
            "train.seed=7",
        ],
    )
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.data.min_count == 5 and cfg.train.seed == 7
    assert cfg.model.options["hidden"] == [8, 4]
    assert cfg.norm.mlp == {"name": "bn", "momentum": 0.01}


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config([], ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs.*must be int"):
        load_config([], ["train.epochs=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("trian.lr=1", "unknown config section 'trian'"),
        ("model.hiddn=[4]", "unknown config key 'model.hiddn'"),
        ("train.batch_size=big", "train.batch_size' must be int"),
        ("model.name=nosuchmodel", "unknown model 'nosuchmodel'; valid: .*deepfm"),
        ("norm.mlp=nosuchnorm", "norm.mlp: unknown norm 'nosuchnorm'; valid: none, bn"),
        ("norm.mlp={name: bn, momentun: 0.1}", "unknown option 'momentun' for norm 'bn'"),
        ("norm.mlp={name: ln, eps: big}", "option 'eps' of norm 'ln' must be float"),
        ("norm.mlp={name: ln, scope: all}", "scope' applies only to the numeric and categorical"),
        ("train.decay=exp", "train.decay' = 'exp' is not one of"),
        ("norm.mlp={name: ln, position: middle}", "norm.mlp: position 'middle' is not one of: pre_act, post_act"),
        ("norm.cin={name: ln, position: pre}", "norm.cin: option 'position' applies only to the mlp and attention"),
        (
            "norm.attention={name: ln, position: post_act}",
            "norm.attention: position 'post_act' is not one of: post, pre",
        ),
        ("data.on_bad_rows=ignore", "data.on_bad_rows"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(override)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="dotted"):
        parse_override("lr=1")


def test_config_files_merge_left_to_right(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {lr: 0.01, epochs: 4}\n")
    b.write_text("train: {lr: 0.02}\n")
    cfg = load_config([a, b], ["train.epochs=5"])
    assert (cfg.train.lr, cfg.train.epochs) == (0.02, 5)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config([bad])


def test_norm_on_a_stage_the_model_lacks_is_an_error():
    with pytest.raises(ConfigError, match="norm.cin=ln: model 'deepfm' has no 'cin' stage"):
        resolve("norm.cin=ln")


def test_merge_keeps_model_keys_when_the_name_is_overridden_and_replaces_norm_specs():
    cfg = load_config([], ["model.hidden=[8]", "model.name=dnn", "norm.mlp={name: bn, momentum: 0.01}", "norm.mlp=ln"])
    assert cfg.model.name == "dnn" and cfg.model.options["hidden"] == [8]
    assert cfg.norm.mlp == "ln"
    cfg = load_config(
        [shipped_configs() / "presets" / "normdnn.yaml"], ["model.name=deepfm", "norm.categorical={name: ln}"]
    )
    assert cfg.model.embed_dim == 10 and cfg.norm.categorical == {"name": "ln"}


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 1e-3}\nnorm: {numeric: {name: ln, eps: 1e-6}}\n")
    cfg = load_config([f], ["norm.mlp={name: rms, eps: 1e-8}"])
    assert cfg.train.lr == 1e-3 and cfg.norm.numeric["eps"] == 1e-6 and cfg.norm.mlp["eps"] == 1e-8


def test_shipped_defaults_are_complete_and_the_only_defaults():
    """base.yaml sets every key of every section; the dataclasses have no defaults that could disagree with it."""
    from ctr import config

    for cls in (config.DataConfig, config.ModelConfig, config.NormConfig, config.TrainConfig, config.DiagnosticsConfig):
        assert all(
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in dataclasses.fields(cls)
        ), cls
    assert load_config().train.epochs == 2


def test_shipped_configs_come_from_the_package():
    """Defaults are found through the installed package, not relative to a checkout."""
    base = importlib.resources.files("ctr") / "configs" / "base.yaml"
    assert base.is_file() and "train:" in base.read_text()


def test_one_default_config_per_registered_model():
    assert model_names() == sorted(list_models())
    for name in list_models():
        cfg = resolve(f"model.name={name}")
        assert cfg.model.name == name


def test_a_missing_default_is_an_error(monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "base.yaml").write_text((shipped_configs() / "base.yaml").read_text().replace("  lr: 0.001\n", ""))
    (tmp_path / "models" / "deepfm.yaml").write_text((shipped_configs() / "models" / "deepfm.yaml").read_text())
    monkeypatch.setattr("ctr.config.shipped_configs", lambda: tmp_path)
    with pytest.raises(ConfigError, match="config key 'train.lr' has no value"):
        load_config()
    assert load_config([], ["train.lr=0.1"]).train.lr == 0.1


def test_data_commands_do_not_import_model_code_or_torch():
    """``ctr.config`` resolves a full config without importing the model zoo or torch."""
    import subprocess
    import sys

    code = "import sys, ctr.config; ctr.config.load_config(); print(any(m.startswith(('torch', 'ctr.models')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
