import pytest

from ctr.config import load_config, load_data_config, parse_override
from ctr.errors import ConfigError


def test_defaults_and_overrides_with_types():
    cfg = load_config([], ["train.lr=1e-3", "train.epochs=3", "data.min_count=5", "model.hidden=[8, 4]",
                           "norm.mlp={name: bn, momentum: 0.01}", "train.seed=7"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.data.min_count == 5 and cfg.train.seed == 7
    assert cfg.model.options["hidden"] == [8, 4]
    assert cfg.norm.mlp == {"name": "bn", "momentum": 0.01}


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config([], ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs.*must be int"):
        load_config([], ["train.epochs=1.5"])


@pytest.mark.parametrize("override, message", [
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
    ("norm.mlp_position=middle", "norm.mlp_position"),
    ("data.on_bad_rows=ignore", "data.on_bad_rows"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


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
        load_config([], ["norm.cin=ln"])


def test_merge_keeps_model_keys_when_the_name_is_overridden_and_replaces_norm_specs():
    cfg = load_config([], ["model.hidden=[8]", "model.name=dnn", "norm.mlp={name: bn, momentum: 0.01}", "norm.mlp=ln"])
    assert cfg.model.name == "dnn" and cfg.model.options["hidden"] == [8]
    assert cfg.norm.mlp == "ln"
    from ctr.config import CONFIG_DIR

    cfg = load_config([CONFIG_DIR / "models" / "normdnn.yaml"], ["model.name=deepfm", "norm.categorical={name: ln}"])
    assert cfg.model.embed_dim == 10 and cfg.norm.categorical == {"name": "ln"}


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 1e-3}\nnorm: {numeric: {name: ln, eps: 1e-6}}\n")
    cfg = load_config([f], ["norm.mlp={name: rms, eps: 1e-8}"])
    assert cfg.train.lr == 1e-3 and cfg.norm.numeric["eps"] == 1e-6 and cfg.norm.mlp["eps"] == 1e-8


def test_data_config_alone_resolves_like_the_full_config(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("data:\n  min_count: 3\nmodel:\n  name: dcn\ntrain:\n  lr: 0.01\n")
    sets = ["data.numeric_transform=log_standard", "data.split=[0.7, 0.2, 0.1]"]
    assert load_data_config([f], sets) == load_config([f], sets).data
    with pytest.raises(ConfigError, match="only data.* keys can be set here, got 'train.lr'"):
        load_data_config([], ["train.lr=0.1"])
    with pytest.raises(ConfigError, match="unknown config key 'data.min_cnt'"):
        load_data_config([], ["data.min_cnt=3"])
    with pytest.raises(ConfigError, match="data.on_bad_rows"):
        load_data_config([], ["data.on_bad_rows=ignore"])
