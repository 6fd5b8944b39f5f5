"""Strict run configuration: YAML files -> dataclasses, then ``--set a.b=value`` overrides.

Unknown keys, missing keys and values of the wrong type raise :class:`ConfigError` naming the dotted key. Defaults
live only in the YAML files shipped in the package (``configs/``). Model-specific hyperparameters live under
``model:`` next to ``name`` and ``embed_dim``; they and the stage norms are checked against the registered model
where it is built (``ctr.models.model_spec``), so this module imports no model code (and no torch).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from ctr.errors import ConfigError

_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-6`` as a float (YAML 1.2; PyYAML's 1.1 rules need ``1.0e-6``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


STAGES = ("numeric", "categorical", "mlp", "cin", "cross", "attention")


# Every field is documented and given its default in configs/base.yaml (model options in configs/models/<name>.yaml);
# the dataclasses hold no defaults, so the YAML files are the only place a default can live.


@dataclass
class DataConfig:
    dataset: str | None
    path: str | None
    format: str
    delimiter: str
    header: bool
    column_names: list[str] | None
    label: Any
    columns: dict[str, Any]
    group: str | None
    weight: str | None
    extra_columns: str
    cache_dir: str | None
    min_count: int
    numeric_transform: str
    quantile_buckets: int
    on_bad_rows: str
    split_seed: int
    split: list[float]
    split_by_time: str | None
    block_size: int
    streaming: bool
    shuffle_buffer: int


@dataclass
class ModelConfig:
    name: str
    embed_dim: int
    options: dict[str, Any]  # the model's other keys, checked against its Options where the model is built


@dataclass
class NormConfig:
    """A norm per stage: a registered norm name or a mapping ``{name: ..., <option>: ...}``; checked where the
    model is built (``ctr.models.model_spec``)."""

    numeric: Any
    categorical: Any
    mlp: Any
    cin: Any
    cross: Any
    attention: Any


@dataclass
class TrainConfig:
    epochs: int
    max_steps: int
    batch_size: int
    lr: float
    seed: int
    warmup_steps: int
    decay: str
    patience: int
    weight_decay: float
    norm_weight_decay: float
    embedding_weight_decay: float
    sparse_embeddings: bool
    eval_batch_size: int
    device: str
    precision: str
    compile: bool
    threads: int
    progress: bool
    log_every: int
    checkpoint_every: int
    on_nonfinite: str
    skip_limit: int
    tensorboard: bool


@dataclass
class DiagnosticsConfig:
    every: int
    grad_norms: bool
    landscape: bool
    activations: bool
    landscape_steps: list[float]
    magnitude: bool
    bn_gap: bool
    init_batches: int
    ics: bool


@dataclass
class RunConfig:
    data: DataConfig
    model: ModelConfig
    norm: NormConfig
    train: TrainConfig
    diagnostics: DiagnosticsConfig

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = {"name": self.model.name, "embed_dim": self.model.embed_dim, **self.model.options}
        return d


# ---------------------------------------------------------------------------------------------------------- parsing


def _type_ok(value: Any, tp: Any) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float only) or raise TypeError."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _type_ok(value, arg)
            except TypeError:
                pass
        raise TypeError
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        (arg,) = typing.get_args(tp)
        return [_type_ok(v, arg) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise TypeError
    if isinstance(value, tp):
        return value
    raise TypeError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def check_fields(cls: type, values: dict[str, Any], where: str, complete: bool = False) -> dict[str, Any]:
    """Check ``values`` against dataclass ``cls``: unknown keys and wrong types raise ConfigError naming the key;
    with ``complete``, so does a field ``values`` lacks."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{where}{key}'; valid: {', '.join(names)}")
        try:
            out[key] = _type_ok(value, hints[key])
        except TypeError:
            raise ConfigError(
                f"config key '{where}{key}' must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}"
            ) from None
    missing = [n for n in names if n not in out] if complete else []
    if missing:
        raise ConfigError(f"config key '{where}{missing[0]}' has no value (its default belongs in the shipped configs)")
    return out


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a complete nested mapping (every key of every section present)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(RunConfig)
    kwargs = {}
    for name, value in raw.items():
        if name not in hints:
            raise ConfigError(f"unknown config section '{name}'; valid: {', '.join(hints)}")
        if not isinstance(value, dict):
            raise ConfigError(f"config section '{name}' must be a mapping, got {value!r}")
        cls = hints[name]
        if cls is ModelConfig:
            value = dict(value)
            core = check_fields(ModelConfig, {k: value.pop(k) for k in ("name", "embed_dim") if k in value}, "model.")
            kwargs[name] = ModelConfig(**check_fields(ModelConfig, {**core, "options": value}, "model.", complete=True))
        else:
            kwargs[name] = cls(**check_fields(cls, value, f"{name}.", complete=True))
    missing = [n for n in hints if n not in kwargs]
    if missing:
        raise ConfigError(f"config section '{missing[0]}' is missing")
    cfg = RunConfig(**kwargs)
    _check_choices(cfg)
    return cfg


def _check_choices(cfg: RunConfig) -> None:
    data = cfg.data
    _check_one_of(
        {
            "data.numeric_transform": (
                data.numeric_transform,
                ("log2_bucket", "log_standard", "quantile_bucket", "minmax", "none"),
            ),
            "data.on_bad_rows": (data.on_bad_rows, ("error", "skip")),
            "data.format": (data.format, ("criteo", "csv", "parquet")),
            "data.extra_columns": (data.extra_columns, ("error", "ignore")),
            "train.decay": (cfg.train.decay, ("none", "linear", "cosine")),
            "train.precision": (cfg.train.precision, ("fp32", "bf16", "fp16")),
            "train.on_nonfinite": (cfg.train.on_nonfinite, ("stop", "skip_batch")),
        }
    )
    if len(data.split) != 3 or any(s <= 0 for s in data.split):
        raise ConfigError(f"config key 'data.split' must be three positive fractions, got {data.split}")
    for key in ("epochs", "batch_size", "eval_batch_size", "skip_limit"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"config key 'train.{key}' must be >= 1")
    if cfg.train.lr <= 0:
        raise ConfigError("config key 'train.lr' must be > 0")


def _check_one_of(choices: dict[str, tuple[Any, tuple[str, ...]]]) -> None:
    """``{key: (value, valid values)}``: a value outside its valid values raises ConfigError naming the key."""
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"config key '{key}' = {value!r} is not one of: {', '.join(valid)}")


def merge(base: dict[str, Any], over: dict[str, Any], _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins. A ``norm.<stage>`` value with a name replaces the old one whole (a name
    replaces a mapping with options, and a mapping does not inherit options of another norm); a mapping of options
    without a name (``norm.categorical.init_gain=1.0``) sets those options of the stage's current norm."""
    out = dict(base)
    for k, v in over.items():
        is_norm_stage = _path == ("norm",) and k in STAGES
        if is_norm_stage and isinstance(v, dict) and "name" not in v and k in out:
            current = out[k] if isinstance(out[k], dict) else {"name": out[k]}
            out[k] = {**current, **copy.deepcopy(v)}
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and not is_norm_stage:
            out[k] = merge(out[k], v, _path + (k,))
        else:
            out[k] = copy.deepcopy(v)
    return out


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"norm.mlp": "ln", "train.lr": 0.1}`` -> ``{"norm": {"mlp": "ln"}, "train": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        cur = out
        for p in parents:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"key '{key}' sets inside '{p}', which another key sets to a value")
        cur[leaf] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=1e-3"`` -> ``{"train": {"lr": 0.001}}``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got '{text}'")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set key must be dotted like train.lr, got '{key}'")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
        value = float(value)
    return nest({".".join(parts): value})


def read_yaml(path: str | Path | Traversable) -> dict[str, Any]:
    p = path if isinstance(path, Traversable) and not isinstance(path, Path) else Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return raw


def shipped_configs() -> Traversable:
    """The ``configs/`` directory shipped inside the package (``base.yaml``, ``models/``, ``presets/``,
    ``ablations/``), wherever the package is installed."""
    return importlib.resources.files("ctr") / "configs"


def model_names() -> list[str]:
    """Models with a default config, i.e. ``configs/models/<name>.yaml`` (one per registered model)."""
    return sorted(f.name[: -len(".yaml")] for f in (shipped_configs() / "models").iterdir() if f.name.endswith(".yaml"))


def dataset_names() -> list[str]:
    """Dataset presets: ``configs/datasets/<name>.yaml``."""
    return sorted(
        f.name[: -len(".yaml")] for f in (shipped_configs() / "datasets").iterdir() if f.name.endswith(".yaml")
    )


def load_config(
    paths: Sequence[str | Path] = (), overrides: Sequence[str] = (), extra_layers: Sequence[dict[str, Any]] = ()
) -> RunConfig:
    """Resolve a run config; the only place config layers are merged. Later layers win:

    1. ``configs/base.yaml`` (every data/train/diagnostics default, every stage norm ``none``), then the dataset
       preset ``configs/datasets/<data.dataset>.yaml`` when ``data.dataset`` is set;
    2. ``configs/models/<model.name>.yaml``, the model's defaults, chosen after the other layers are merged so
       ``--set model.name=dcn`` picks up DCN's defaults (explicit keys still win over it);
    3. ``paths``, in order; 4. ``overrides`` (``KEY=VALUE``); 5. ``extra_layers`` (nested mappings; the ablation
       grid's common sections and cell keys).

    Model options and norms are checked where the model is built (``ctr.models.model_spec``).
    """
    user: dict[str, Any] = {}
    for p in paths:
        user = merge(user, read_yaml(p))
    for o in overrides:
        user = merge(user, parse_override(o))
    for layer in extra_layers:
        user = merge(user, layer)
    raw = read_yaml(shipped_configs() / "base.yaml")
    data = user.get("data", {})
    dataset = (data if isinstance(data, dict) else {}).get("dataset")
    if dataset is not None:
        if dataset not in dataset_names():
            raise ConfigError(f"unknown dataset {dataset!r}; valid: {', '.join(dataset_names())}")
        raw = merge(raw, read_yaml(shipped_configs() / "datasets" / f"{dataset}.yaml"))
    model = user.get("model", {})
    name = (model if isinstance(model, dict) else {}).get("name", raw["model"]["name"])
    if name not in model_names():
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(model_names())}")
    raw = merge(raw, read_yaml(shipped_configs() / "models" / f"{name}.yaml"))
    return from_dict(merge(raw, user))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
