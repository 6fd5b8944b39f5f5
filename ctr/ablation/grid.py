"""Ablation configs: parse, expand into cells, validate, and name every run by a hash of its resolved config.

An ablation file is a run config (any of ``data``, ``model``, ``norm``, ``train``, ``diagnostics``, applied to
every run) plus these keys::

    base: [../presets/normdnn.yaml]  # optional run-config file(s), relative to this file, merged first
    grid:                           # dotted key -> values; the cartesian product of all keys
      model.name: [dnn, deepfm]
      norm.categorical.init_gain: [0.01, 1.0]   # an option of each cell's norm on a stage (not of `none`)
    stage_norms:                    # one stage at a time: a cell per (norm, stage), the other stages untouched
      stages: [numeric, categorical, mlp]
      norms: [bn, ln, vo_ln]
    cells:                          # explicit cells (dotted key -> value), for designs that are not products
      - {norm.mlp: {name: ln, position: post_act}}
    seeds: [1, 2, 3]                # every cell runs once per seed (sets train.seed)
    baseline: {}                    # keys that turn a cell into its baseline; default: every norm.<stage> = none
    alpha: 0.05                     # significance level of the paired tests, Holm-corrected across the study
    tune: train.lr                  # optional: a grid key; each arm (baseline included) is also reported at the
                                    # value of this key with its best mean validation AUC (summary_tuned.csv)

Cells = product(grid) x (stage_norms cells + explicit cells). Each cell is compared with its baseline: the same
cell with the ``baseline`` keys applied (so with a ``model.name`` grid each model has its own baseline); a
baseline that is not already a cell is added. Cells whose resolved configs are identical are run once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr.config import STAGES, RunConfig, load_config, nest, parse_override, read_yaml
from ctr.errors import ConfigError
from ctr.models import get_model
from ctr.models.base import model_spec
from ctr.nn.norm import parse_norm

ABLATION_KEYS = ("base", "grid", "stage_norms", "cells", "seeds", "baseline", "alpha", "tune")
RUN_SECTIONS = tuple(f.name for f in dataclasses.fields(RunConfig))
# keys that do not change what a run computes; left out of the run hash so that changing them reuses runs
NOISE_KEYS = (
    ("train", "seed"),
    ("train", "progress"),
    ("train", "threads"),
    ("train", "checkpoint_every"),
    ("train", "tensorboard"),
    ("data", "cache_dir"),
)


@dataclass
class AblationSpec:
    """A parsed ablation file (see the module docstring for the format).

    Attributes:
        path: the file it came from (None when built in code).
        base: run-config files merged before ``config``.
        config: the inline run-config sections, applied to every run.
        grid: dotted key -> values, expanded as a cartesian product.
        variants: cells combined with every grid point: the ``stage_norms`` cells then the explicit ``cells``.
        seeds: one run per cell and seed.
        baseline: dotted key -> value applied to a cell to get its baseline.
        alpha: significance level of the paired tests after Holm's correction across the study.
        tune: a grid key whose best value (by mean validation AUC) is chosen per arm, or None.
    """

    path: Path | None
    base: list[Path]
    config: dict[str, Any]
    grid: dict[str, list[Any]]
    variants: list[dict[str, Any]]
    seeds: list[int]
    baseline: dict[str, Any]
    alpha: float = 0.05
    tune: str | None = None


@dataclass
class Cell:
    """One point of the design: a resolved config that runs once per seed.

    Attributes:
        id: 8 hex digits of the hash of the resolved config without seed and noise keys.
        label: short human name, e.g. ``model=dnn, mlp=bn``.
        assignment: the dotted keys the design set for this cell.
        config: the resolved run config (``train.seed`` is set per run).
        baseline_id: id of the cell it is compared with (its own id for a baseline).
        context: the cell's assignment without the baseline keys; cells with one context share a baseline.
        stage, norm: when the cell differs from its baseline in one ``norm.<stage>`` only: that stage and norm.
    """

    id: str
    label: str
    assignment: dict[str, Any]
    config: RunConfig
    baseline_id: str = ""
    context: str = ""
    stage: str = ""
    norm: str = ""

    @property
    def is_baseline(self) -> bool:
        return self.id == self.baseline_id


@dataclass
class Run:
    """One training run: a cell at one seed, in ``<out>/runs/<name>``."""

    name: str
    cell: Cell
    seed: int
    config: RunConfig


@dataclass
class Plan:
    """The expanded, validated design.

    Attributes:
        spec: the ablation it came from.
        cells: valid cells, grid order, baselines added after the cells that need them.
        invalid: (label, reason) of the cells dropped before running (a norm on a stage the model lacks).
        runs: every (cell, seed) run.
        keys: the design's dotted keys, the columns of ``runs.csv`` / ``summary.csv``.
    """

    spec: AblationSpec
    cells: list[Cell]
    invalid: list[tuple[str, str]]
    runs: list[Run]
    keys: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------- parsing


def read_ablation(path: str | Path) -> AblationSpec:
    """Read and check an ablation file; relative ``base`` paths are resolved against its directory."""
    path = Path(path)
    return parse_ablation(read_yaml(path), path)


def parse_ablation(raw: dict[str, Any], path: Path | None = None) -> AblationSpec:
    """Check an ablation mapping and return its spec; errors are ConfigErrors naming the key."""
    where = f"{path}: " if path else ""
    unknown = [k for k in raw if k not in ABLATION_KEYS + RUN_SECTIONS]
    if unknown:
        raise ConfigError(
            f"{where}unknown ablation key '{unknown[0]}'; valid: {', '.join(ABLATION_KEYS + RUN_SECTIONS)}"
        )
    root = path.parent if path else Path.cwd()
    base = raw.get("base") or []
    base = [base] if isinstance(base, str) else base
    if not isinstance(base, list) or not all(isinstance(b, str) for b in base):
        raise ConfigError(f"{where}'base' must be a file name or a list of them, got {base!r}")
    base_paths = [p if p.is_absolute() else root / p for p in map(Path, base)]
    for p in base_paths:
        if not p.is_file():
            raise ConfigError(f"{where}base config not found: {p}")
    config = {k: raw[k] for k in RUN_SECTIONS if k in raw}
    for section, values in config.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{where}section '{section}' must be a mapping, got {values!r}")

    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}'grid' must map dotted keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        _check_key(key, f"{where}grid")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}grid key '{key}' must have a non-empty list of values, got {values!r}")

    variants = _stage_norm_cells(raw.get("stage_norms"), where) + _explicit_cells(raw.get("cells"), where)
    for v in variants:
        clash = set(v) & set(grid)
        if clash:
            raise ConfigError(f"{where}key '{sorted(clash)[0]}' is set by both 'grid' and a cell; set it in one place")

    seeds = raw.get("seeds", [2024])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if (
        not isinstance(seeds, list)
        or not seeds
        or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{where}'seeds' must be a non-empty list of distinct integers, got {seeds!r}")

    baseline = raw.get("baseline")
    if baseline is None:
        baseline = {f"norm.{s}": "none" for s in STAGES}
    if not isinstance(baseline, dict):
        raise ConfigError(f"{where}'baseline' must map dotted keys to values, got {baseline!r}")
    for key in baseline:
        _check_key(key, f"{where}baseline")

    alpha = raw.get("alpha", 0.05)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ConfigError(f"{where}'alpha' must be a number in (0, 1), got {alpha!r}")
    tune = raw.get("tune")
    if tune is not None and (not isinstance(tune, str) or tune not in grid or len(grid[tune]) < 2):
        raise ConfigError(f"{where}'tune' must name a grid key with at least two values, got {tune!r}")
    return AblationSpec(path, base_paths, config, grid, variants, seeds, baseline, float(alpha), tune)


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or len(key.split(".")) < 2 or not all(key.split(".")):
        raise ConfigError(f"{where}: key {key!r} must be dotted like norm.mlp or train.lr")
    if key.split(".")[0] not in RUN_SECTIONS:
        raise ConfigError(f"{where}: key '{key}' is not in a config section; valid sections: {', '.join(RUN_SECTIONS)}")
    if key == "train.seed":
        raise ConfigError(f"{where}: set seeds with the top-level 'seeds' list, not 'train.seed'")


def _stage_norm_cells(raw: Any, where: str) -> list[dict[str, Any]]:
    """``{stages: [...], norms: [...]}`` -> one cell ``{norm.<stage>: norm}`` per norm and stage."""
    if raw is None:
        return []
    if not isinstance(raw, dict) or set(raw) != {"stages", "norms"}:
        raise ConfigError(f"{where}'stage_norms' must be a mapping with exactly 'stages' and 'norms', got {raw!r}")
    stages, norms = raw["stages"], raw["norms"]
    if not isinstance(stages, list) or not stages or not isinstance(norms, list) or not norms:
        raise ConfigError(f"{where}'stage_norms.stages' and 'stage_norms.norms' must be non-empty lists")
    for s in stages:
        if s not in STAGES:
            raise ConfigError(f"{where}stage_norms: unknown stage {s!r}; valid: {', '.join(STAGES)}")
    for n in norms:
        for s in stages:
            try:
                parse_norm(n, s)
            except ConfigError as e:
                raise ConfigError(f"{where}stage_norms.norms: {e}") from None
    return [{f"norm.{s}": n} for n in norms for s in stages]


def _explicit_cells(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) and c for c in raw):
        raise ConfigError(f"{where}'cells' must be a list of non-empty mappings of dotted keys to values")
    for c in raw:
        for key in c:
            _check_key(key, f"{where}cells")
    return [dict(c) for c in raw]


# -------------------------------------------------------------------------------------------------------- expansion


def expand(spec: AblationSpec) -> list[dict[str, Any]]:
    """The design's cell assignments: product(grid) x variants, in order, duplicates kept."""
    keys = list(spec.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))]
    return [{**p, **v} for p in points for v in (spec.variants or [{}])]


def design_keys(spec: AblationSpec) -> list[str]:
    """Every dotted key the design varies, in first-seen order."""
    keys = list(spec.grid)
    for v in spec.variants:
        keys += [k for k in v if k not in keys]
    return keys


def plan_ablation(spec: AblationSpec, data_path: str | Path | None = None, overrides: Sequence[str] = ()) -> Plan:
    """Resolve every cell, drop invalid ones, attach baselines, and list the runs.

    Args:
        spec: the parsed ablation.
        data_path: overrides ``data.path`` of every run (the CLI's ``--data``).
        overrides: ``KEY=VALUE`` settings for every run, over the ablation's own sections (the CLI's ``--set``);
            the cells' grid keys still win. They change the runs' configs, hence their names.

    Raises:
        ConfigError: a key or value that no run config accepts (names the cell).
    """
    common = [spec.config] + [parse_override(text) for text in overrides]
    if data_path is not None:
        common.insert(1, {"data": {"path": str(Path(data_path).resolve())}})
    keys = design_keys(spec)
    shorts = _short_names(keys + list(spec.baseline))

    cells: dict[str, Cell] = {}
    invalid: list[tuple[str, str]] = []
    for assignment in expand(spec):
        label = _label(assignment, shorts)
        cfg = _resolve(spec, common, assignment, f"cell '{label}'")
        reason = _invalid_reason(assignment, cfg.model.name)
        if reason:
            invalid.append((label, reason))
            continue
        _check_model(cfg, f"cell '{label}'")
        cid = config_hash(cfg)
        if cid in cells:
            continue
        context = _label({k: v for k, v in assignment.items() if k not in spec.baseline}, shorts)
        cells[cid] = Cell(cid, label or "base", assignment, cfg, context=context)

    for cell in list(cells.values()):
        base_assignment = {**cell.assignment, **spec.baseline}
        base_cfg = _resolve(spec, common, base_assignment, f"baseline of cell '{cell.label}'")
        _check_model(base_cfg, f"baseline of cell '{cell.label}'")
        bid = config_hash(base_cfg)
        if bid not in cells:
            label = ", ".join(x for x in (cell.context, "baseline") if x)
            cells[bid] = Cell(bid, label, base_assignment, base_cfg, bid, cell.context)
        cell.baseline_id = bid
        cell.stage, cell.norm = _single_norm_difference(cell.config, cells[bid].config)

    ordered = list(cells.values())
    runs = [
        Run(f"{c.config.model.name}-{c.id}-s{seed}", c, seed, _with_seed(c.config, seed))
        for c in ordered
        for seed in spec.seeds
    ]
    return Plan(spec, ordered, invalid, runs, keys)


def _resolve(spec: AblationSpec, common: list[dict[str, Any]], assignment: dict[str, Any], what: str) -> RunConfig:
    """The run config of a cell: ``ctr.config.load_config`` over the base files, then the ablation's own
    sections and the CLI's settings (``common``), then the cell's keys (later wins).

    Dotted keys set one leaf and keep its siblings; a ``norm.<stage>`` value replaces the previous one whole, and
    a ``norm.<stage>.<option>`` key (``init_gain`` as a grid axis, say) then sets that option of the cell's norm,
    where the cell has one on that stage (a stage at ``none``, e.g. in a baseline, has no options to set).
    """
    options = {k: v for k, v in assignment.items() if k.startswith("norm.") and k.count(".") == 2}
    rest = {k: v for k, v in assignment.items() if k not in options}
    try:
        if not options:
            return load_config(spec.base, extra_layers=[*common, nest(rest)])
        norms = load_config(spec.base, extra_layers=[*common, nest(rest)]).norm
        stage_of = {k: k.split(".")[1] for k in options}
        options = {
            k: v for k, v in options.items() if parse_norm(getattr(norms, stage_of[k]), stage_of[k]).name != "none"
        }
        return load_config(spec.base, extra_layers=[*common, nest(rest), nest(options)])
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def _check_model(cfg: RunConfig, what: str) -> None:
    """The model options and stage norms of ``cfg`` are valid for its model (checked before any run starts)."""
    try:
        model_spec(cfg.model, cfg.norm)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def _invalid_reason(assignment: dict[str, Any], model_name: str) -> str:
    """Why a cell cannot run (a norm the design sets on a stage its model lacks), or ''."""
    model = get_model(model_name)
    for key, value in assignment.items():
        stage = key[len("norm.") :] if key.startswith("norm.") else ""
        if stage in STAGES and stage not in model.stages and not parse_norm(value, stage).is_none:
            return f"model '{model.name}' has no '{stage}' stage (it has: {', '.join(model.stages)})"
    return ""


def _with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    cfg = copy.deepcopy(cfg)
    cfg.train.seed = seed
    return cfg


def _single_norm_difference(cfg: RunConfig, base: RunConfig) -> tuple[str, str]:
    """``(stage, norm label)`` when ``cfg`` differs from ``base`` in exactly one norm stage and nothing else."""
    a, b = hashable_config(cfg), hashable_config(base)
    diff = [(s, k) for s in a for k in a[s] if a[s][k] != b[s].get(k)]
    if len(diff) == 1 and diff[0][0] == "norm" and diff[0][1] in STAGES:
        return diff[0][1], format_value(a["norm"][diff[0][1]])
    return "", ""


# ------------------------------------------------------------------------------------------------------ names, hash


def hashable_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as a dict without the seed and the keys that do not change results."""
    d = cfg.to_dict()
    for section, key in NOISE_KEYS:
        d[section].pop(key, None)
    return d


def config_hash(cfg: RunConfig) -> str:
    """8 hex digits identifying what a run computes (seed excluded: runs are named ``<model>-<hash>-s<seed>``)."""
    text = json.dumps(hashable_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def config_value(cfg: RunConfig, key: str) -> Any:
    """The value of dotted ``key`` in a resolved config (model options included)."""
    value: Any = cfg.to_dict()
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def format_value(value: Any) -> str:
    """Compact text for a config value: ``bn``, ``bn(momentum=0.01)``, ``[64, 32]``, ``0.001``."""
    if isinstance(value, dict) and "name" in value:
        opts = ", ".join(f"{k}={format_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({opts})" if opts else str(value["name"])
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return "none" if value is None else str(value)


def _short_names(keys: list[str]) -> dict[str, str]:
    """``norm.mlp`` -> ``mlp``, ``model.name`` -> ``model``, ``train.lr`` -> ``lr``; full keys where ambiguous."""
    last = {k: "model" if k == "model.name" else k.split(".")[-1] for k in keys}
    counts: dict[str, int] = {}
    for v in last.values():
        counts[v] = counts.get(v, 0) + 1
    return {k: v if counts[v] == 1 else k for k, v in last.items()}


def _label(assignment: dict[str, Any], shorts: dict[str, str]) -> str:
    return ", ".join(f"{shorts.get(k, k)}={format_value(v)}" for k, v in assignment.items())
