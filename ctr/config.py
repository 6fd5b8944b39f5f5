"""Strict run configuration: YAML files -> dataclasses, then ``--set a.b=value`` overrides.

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key. Model-specific
hyperparameters live under ``model:`` next to ``name`` and ``embed_dim`` and are checked against the registered
model's ``Options`` dataclass (see ``ctr.models``), so a typo never vanishes into ``**kwargs``.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
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


@dataclass
class DataConfig:
    path: str | None = None  # raw Criteo file or a directory with train/valid/test; None = bundled sample
    cache_dir: str | None = None  # where prepared data is cached; None = <path's dir>/.ctr_cache
    min_count: int = 10  # categorical values seen fewer times in train share the OOV id
    numeric_transform: str = "log2_bucket"  # log2_bucket | log_standard | quantile_bucket
    quantile_buckets: int = 32
    on_bad_rows: str = "error"  # error | skip
    split_seed: int = 2018
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    block_size: int = 1 << 20  # bytes per pyarrow CSV read block
    streaming: bool = False  # iterate Parquet row groups with a shuffle buffer instead of loading splits in memory
    shuffle_buffer: int = 1 << 20  # rows held by the streaming shuffle buffer


@dataclass
class ModelConfig:
    name: str = "deepfm"
    embed_dim: int = 16
    options: dict[str, Any] = field(default_factory=dict)  # checked against the model's Options dataclass


@dataclass
class NormConfig:
    """A norm per stage: a registered norm name or a mapping ``{name: ..., <option>: ...}``."""

    numeric: Any = "none"
    categorical: Any = "none"
    mlp: Any = "none"
    cin: Any = "none"
    cross: Any = "none"
    attention: Any = "none"
    mlp_position: str = "pre_act"  # pre_act: Linear -> Norm -> act | post_act: Linear -> act -> Norm
    attention_position: str = "post"  # post: residual -> norm | pre: norm -> attention (+ final norm)


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int = 0  # stop training after this many steps (0 = no limit); for benchmarks and smoke runs
    batch_size: int = 4096
    lr: float = 1e-3
    seed: int = 2024
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    decay: str = "none"  # none | linear | cosine, to 0 at the last step, after warm-up
    patience: int = 2  # epochs without a better valid AUC before stopping
    weight_decay: float = 0.0  # on >= 2-d dense weights
    norm_weight_decay: float = 0.0  # on norm gains and biases
    embedding_weight_decay: float = 0.0  # on embedding tables (dense Adam decay; applies to all rows)
    sparse_embeddings: bool = False  # sparse gradients + SparseAdam (lazy Adam) for embedding tables; no DDP
    eval_batch_size: int = 65536
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16
    compile: bool = False
    threads: int = 0  # torch intra-op threads; 0 = torch default
    progress: bool = True  # progress bars and data log lines on stderr (of rank 0)
    log_every: int = 50  # steps between loss records in metrics.jsonl (train curve)


@dataclass
class DiagnosticsConfig:
    every: int = 0  # steps between probes; 0 = off
    grad_norms: bool = True
    landscape: bool = False
    activations: bool = True
    landscape_steps: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.4])
    magnitude: bool = True  # correlation of |x| with the numeric embedding norm (dense numeric fields)
    bn_gap: bool = True  # train-mode vs eval-mode predictions, for models with BatchNorm


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)

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


def check_fields(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Check ``values`` against dataclass ``cls``: unknown keys and wrong types raise ConfigError naming the key."""
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
    return out


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from a nested mapping; model options are validated against the model's Options."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    sections = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    hints = typing.get_type_hints(RunConfig)
    kwargs = {}
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown config section '{name}'; valid: {', '.join(sections)}")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"config section '{name}' must be a mapping, got {value!r}")
        cls = hints[name]
        if cls is ModelConfig:
            value = dict(value)
            core = {k: value.pop(k) for k in ("name", "embed_dim") if k in value}
            core = check_fields(ModelConfig, core, "model.")
            kwargs[name] = ModelConfig(**core, options=_check_model_options(core.get("name", "deepfm"), value))
        else:
            kwargs[name] = cls(**check_fields(cls, value, f"{name}."))
    cfg = RunConfig(**kwargs)
    _check_choices(cfg)
    return cfg


def _check_model_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    from ctr.models import get_model  # models import config; import lazily

    opts_cls = get_model(name).Options
    checked = check_fields(opts_cls, options, "model.")
    return dataclasses.asdict(opts_cls(**checked))


def _check_choices(cfg: RunConfig) -> None:
    _check_data(cfg.data)
    choices = {
        "norm.mlp_position": (cfg.norm.mlp_position, ("pre_act", "post_act")),
        "norm.attention_position": (cfg.norm.attention_position, ("post", "pre")),
        "train.decay": (cfg.train.decay, ("none", "linear", "cosine")),
        "train.precision": (cfg.train.precision, ("fp32", "bf16", "fp16")),
    }
    _check_one_of(choices)
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"config key 'train.{key}' must be >= 1")
    if cfg.train.lr <= 0:
        raise ConfigError("config key 'train.lr' must be > 0")
    from ctr.models import get_model  # validates every stage's norm, and that the model has the stage

    get_model(cfg.model.name).check_norms(cfg.norm)


def _check_one_of(choices: dict[str, tuple[Any, tuple[str, ...]]]) -> None:
    """``{key: (value, valid values)}``: a value outside its valid values raises ConfigError naming the key."""
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"config key '{key}' = {value!r} is not one of: {', '.join(valid)}")


def _check_data(data: DataConfig) -> None:
    _check_one_of({
        "data.numeric_transform": (data.numeric_transform, ("log2_bucket", "log_standard", "quantile_bucket")),
        "data.on_bad_rows": (data.on_bad_rows, ("error", "skip")),
    })
    if len(data.split) != 3 or any(s <= 0 for s in data.split):
        raise ConfigError(f"config key 'data.split' must be three positive fractions, got {data.split}")


def merge(base: dict[str, Any], over: dict[str, Any], _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins. A ``norm.<stage>`` value replaces the old one whole (a name replaces a
    mapping with options, and a mapping does not inherit options of another norm)."""
    out = dict(base)
    for k, v in over.items():
        is_norm_stage = _path == ("norm",) and k in STAGES
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not is_norm_stage:
            out[k] = merge(out[k], v, _path + (k,))
        else:
            out[k] = v
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
    out: dict[str, Any] = {}
    cur = out
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return raw


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> RunConfig:
    """Resolve a run config: ``configs/base.yaml``, the model's default config, ``paths`` in order, then overrides.

    The model default ``configs/models/<name>.yaml`` is chosen after the files and overrides are merged, so
    ``--set model.name=dcn`` picks up DCN's defaults; explicit keys still win over it.
    """
    raw: dict[str, Any] = {}
    base = CONFIG_DIR / "base.yaml"
    if base.is_file():
        raw = read_yaml(base)
    user: dict[str, Any] = {}
    for p in paths:
        user = merge(user, read_yaml(p))
    for o in overrides:
        user = merge(user, parse_override(o))
    name = user.get("model", {}).get("name", raw.get("model", {}).get("name", "deepfm"))
    model_file = CONFIG_DIR / "models" / f"{name}.yaml"
    if model_file.is_file():
        raw = merge(raw, read_yaml(model_file))
    return from_dict(merge(raw, user))


def load_data_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> DataConfig:
    """Only the ``data:`` section, resolved like :func:`load_config` (other sections of ``paths`` are ignored,
    overrides must be ``data.*``), without importing models or torch: for data-only commands."""
    base = CONFIG_DIR / "base.yaml"
    raw = (read_yaml(base).get("data") or {}) if base.is_file() else {}
    for p in paths:
        raw = merge(raw, read_yaml(p).get("data") or {})
    for o in overrides:
        over = parse_override(o)
        if set(over) != {"data"}:
            raise ConfigError(f"only data.* keys can be set here, got {o.split('=', 1)[0]!r}")
        raw = merge(raw, over["data"])
    data = DataConfig(**check_fields(DataConfig, raw, "data."))
    _check_data(data)
    return data


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
