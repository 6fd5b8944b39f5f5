"""The ablation report: ``report.md`` with the summary table and PNG plots next to it.

Plots (matplotlib, Agg backend):

* ``heatmap.png``: delta test AUC vs baseline, norm kind x stage, one panel per context (e.g. per model), for the
  cells that differ from their baseline in one ``norm.<stage>``; annotated with the mean paired difference and
  the half-width of its 95% interval, ``*`` where the Holm-adjusted p-value of the paired t-test is below alpha.
* ``deltas.png``: delta test AUC of every cell with its 95% interval, for designs that are not norm x stage.
* ``curves[-<context>].png``: training loss by step and validation AUC by epoch per cell (mean over seeds,
  band +- 1 std).
* ``diagnostics[-<context>].png`` and ``grad_norms[-<context>].png``: the training diagnostics where collected.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ctr.ablation.grid import Plan, format_value  # noqa: E402
from ctr.ablation.runner import RUNS  # noqa: E402
from ctr.config import STAGES  # noqa: E402
from ctr.data.generate import default_data_path, oracle_auc  # noqa: E402
from ctr.train import io  # noqa: E402
from ctr.train.diagnostics import DIAGNOSTICS, read_diagnostics  # noqa: E402


def write_report(out: Path, plan: Plan, runs: pd.DataFrame, summary: pd.DataFrame) -> Path:
    """Write ``report.md`` and its PNGs into ``out``; returns the report's path."""
    out = Path(out)
    for old in out.glob("*.png"):  # plots of an earlier design must not linger
        old.unlink()
    title = plan.spec.path.stem if plan.spec.path else "ablation"
    groups = _groups(summary, title)
    images: list[tuple[str, str]] = []
    if plot_heatmap(summary, out / "heatmap.png", plan.spec.alpha):
        images.append(("Delta test AUC vs baseline: norm x stage", "heatmap.png"))
    if plot_deltas(summary, out / "deltas.png", plan.spec.alpha):
        images.append(("Delta test AUC vs baseline, every cell", "deltas.png"))
    for name, cells in groups:
        suffix = f"-{_slug(name)}" if len(groups) > 1 else ""
        run_dirs = _run_dirs(out, runs, cells)
        if plot_curves(cells, run_dirs, out / f"curves{suffix}.png", name):
            images.append((f"Training curves: {name}", f"curves{suffix}.png"))
        diags = {cid: [read_diagnostics(d / DIAGNOSTICS) for d in dirs] for cid, dirs in run_dirs.items()}
        if plot_diagnostics(cells, diags, out / f"diagnostics{suffix}.png", name):
            images.append((f"Diagnostics: {name}", f"diagnostics{suffix}.png"))
        if plot_grad_norms(cells, diags, out / f"grad_norms{suffix}.png", name):
            images.append((f"Per-layer gradient norms: {name}", f"grad_norms{suffix}.png"))
    budgets = loss_at_budgets(summary, _run_dirs(out, runs, summary))
    path = out / "report.md"
    io.atomic_write(path, lambda tmp: Path(tmp).write_text(_markdown(out, plan, runs, summary, images) + budgets))
    return path


def loss_at_budgets(cells: pd.DataFrame, run_dirs: dict[str, list[Path]]) -> str:
    """A markdown section: each cell's training loss at a third, two thirds and all of the longest run's steps.

    The loss of a run at budget ``b`` is its last logged training loss at a step <= ``b`` (the mean over the epoch
    so far, as logged every ``train.log_every`` steps); a run that stopped before ``b`` (diverged, or stopped
    early) does not count there, and the cell shows how many of its runs reached ``b``.
    """
    curves = {cid: [_read_metrics(d)[0] for d in dirs] for cid, dirs in run_dirs.items()}
    last = max((max(c) for cs in curves.values() for c in cs if c), default=0)
    if last < 3:
        return ""
    budgets = sorted({round(last / 3), round(2 * last / 3), int(last)})
    rows = []
    for r in cells.itertuples():
        row = [r.cell]
        for b in budgets:
            reached = [c[max(s for s in c if s <= b)] for c in curves.get(r.cell_id, []) if c and min(c) <= b <= max(c)]
            total = len(curves.get(r.cell_id, []))
            row.append(f"{np.mean(reached):.4f} ({len(reached)}/{total})" if reached else f"— (0/{total})")
        rows.append(row)
    header = ["cell"] + [f"loss at step {b}" for b in budgets]
    intro = (
        "Training loss (mean over the epoch so far, last record at or before the step), mean over the runs that "
        "reached the step (reached / runs); a run that diverged or stopped early does not count after it stopped."
    )
    return "\n".join(["## Training loss at step budgets", "", intro, "", _md_table(header, rows), ""])


# ----------------------------------------------------------------------------------------------------------- helpers


def _groups(summary: pd.DataFrame, default: str) -> list[tuple[str, pd.DataFrame]]:
    """Cells grouped by baseline (a baseline with the cells compared against it), in summary order."""
    groups = []
    for bid in dict.fromkeys(summary["baseline_id"]):
        cells = summary[summary["baseline_id"] == bid]
        base = cells[cells["cell_id"] == bid]
        name = (base["context"].iloc[0] if len(base) else cells["context"].iloc[0]) or default
        groups.append((name, cells))
    return groups


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:60] or "cells"


def _run_dirs(out: Path, runs: pd.DataFrame, cells: pd.DataFrame) -> dict[str, list[Path]]:
    ok = runs[runs["status"] == "ok"]
    return {cid: [out / RUNS / r for r in ok[ok["cell_id"] == cid]["run"]] for cid in cells["cell_id"]}


def _fmt(x: float, digits: int = 4, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _fmt_p(p: float, alpha: float | None = None) -> str:
    """A p-value, with ``*`` when below ``alpha`` (given only where the value decides significance)."""
    if p is None or math.isnan(p):
        return "n/a"
    text = f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"
    return text + ("*" if alpha is not None and p < alpha else "")


def _mean_band(series: list[dict[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std (ddof=1; 0 for one series) over series at each x any of them has."""
    xs = sorted({x for s in series for x in s})
    mean, std = [], []
    for x in xs:
        v = np.array([s[x] for s in series if x in s and s[x] is not None and np.isfinite(s[x])], dtype=float)
        mean.append(v.mean() if len(v) else np.nan)
        std.append(v.std(ddof=1) if len(v) > 1 else 0.0)
    return np.array(xs, dtype=float), np.array(mean), np.array(std)


def _short_label(cell: Any) -> str:
    """A cell's label without its group's context (``model=dnn, mlp=bn`` -> ``mlp=bn`` inside the dnn plots)."""
    ctx = cell.context if isinstance(cell.context, str) else ""
    label = cell.cell
    if ctx and label.startswith(ctx + ", "):
        label = label[len(ctx) + 2 :]
    return label


def _band(ax, x, m, s, color, log: bool = False) -> None:
    lo = np.maximum(m - s, m * 0.1) if log else m - s  # keep a log-scale band above 0
    ax.fill_between(x, lo, m + s, color=color, alpha=0.15, lw=0)


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (no warning) for all-NaN columns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


# -------------------------------------------------------------------------------------------------------------- plots


def plot_heatmap(summary: pd.DataFrame, path: Path, alpha: float) -> bool:
    """Delta test AUC heatmaps (norm x stage), one panel per context; False when no cell is a single-stage norm."""
    single = summary[(summary["stage"].fillna("") != "") & ~summary["is_baseline"]]
    if single.empty or not (single["n"] > 0).any():
        return False
    panels = list(dict.fromkeys(single["context"].fillna("")))
    norms = list(dict.fromkeys(single["norm"]))
    stages = [s for s in STAGES if s in set(single["stage"])]
    deltas = single["delta_test_auc"].to_numpy(dtype=float)
    vmax = float(np.nanmax(np.abs(deltas))) if np.isfinite(deltas).any() else 1e-3
    vmax = vmax or 1e-3
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(1.9 * len(stages) * len(panels) + 1.5, 0.62 * len(norms) + 1.8),
        squeeze=False,
        layout="constrained",
    )
    im = None
    for ax, context in zip(axes[0], panels):
        cells = single[single["context"].fillna("") == context]
        grid = np.full((len(norms), len(stages)), np.nan)
        for r in cells.itertuples():
            i, j = norms.index(r.norm), stages.index(r.stage)
            grid[i, j] = r.delta_test_auc
            text = f"{_fmt(r.delta_test_auc, sign=True)}\n±{_fmt(r.delta_test_auc_ci95)}"
            if r.significant:
                text += " *"
            if r.n == 0:
                text = "no run"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
        for i in range(len(norms)):
            for j in range(len(stages)):
                if not ((cells["norm"] == norms[i]) & (cells["stage"] == stages[j])).any():
                    ax.text(j, i, "—", ha="center", va="center", fontsize=8, color="0.5")
        im = ax.imshow(grid, cmap="RdYlGn", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(stages)), stages)
        ax.set_yticks(range(len(norms)), norms)
        if context:
            ax.set_title(context, fontsize=9)
        ax.set_xlabel("stage")
    axes[0][0].set_ylabel("norm")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="Δ test AUC")
    fig.suptitle(
        f"Δ test AUC vs baseline: mean ± 95% CI\nover paired seeds; * Holm-adjusted p < {alpha:g}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_deltas(summary: pd.DataFrame, path: Path, alpha: float) -> bool:
    """Horizontal bars of delta test AUC (error bar: 95% interval of the mean paired difference), every non-baseline
    cell; ``*`` where the Holm-adjusted p is below alpha."""
    cells = summary[~summary["is_baseline"] & (summary["n"] > 0)]
    if cells.empty:
        return False
    y = np.arange(len(cells))
    d = cells["delta_test_auc"].to_numpy(dtype=float)
    err = np.nan_to_num(cells["delta_test_auc_ci95"].to_numpy(dtype=float))
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(cells) + 1.3))
    colors = ["tab:green" if v >= 0 else "tab:red" for v in np.nan_to_num(d)]
    ax.barh(y, np.nan_to_num(d), xerr=err, color=colors, alpha=0.75, capsize=2)
    for yi, v, sig in zip(y, d, cells["significant"]):
        if sig and np.isfinite(v):
            ax.text(v, yi, " *", va="center", ha="left" if v >= 0 else "right")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, cells["cell"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Δ test AUC vs baseline")
    ax.set_title(f"mean ± 95% CI over paired seeds; * Holm-adjusted p < {alpha:g}", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _read_metrics(run_dir: Path) -> tuple[dict[float, float], dict[float, float]]:
    """(step -> train loss, epoch -> valid AUC) from a run's ``metrics.jsonl``."""
    loss, auc = {}, {}
    path = run_dir / io.METRICS
    if not path.is_file():
        return loss, auc
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "valid_auc" in r:
            auc[float(r["epoch"])] = r["valid_auc"]
        elif "train_loss" in r:
            loss[float(r["step"])] = r["train_loss"]
    return loss, auc


def plot_curves(cells: pd.DataFrame, run_dirs: dict[str, list[Path]], path: Path, title: str) -> bool:
    """Training loss by step and validation AUC by epoch, mean over seeds with a +-1 std band, one line per cell."""
    data = {cid: [_read_metrics(d) for d in dirs] for cid, dirs in run_dirs.items() if dirs}
    if not data:
        return False
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (color, cell) in enumerate(zip(_colors(len(cells)), cells.itertuples())):
        if cell.cell_id not in data:
            continue
        for ax, k in ((ax_loss, 0), (ax_auc, 1)):
            x, m, s = _mean_band([r[k] for r in data[cell.cell_id]])
            if len(x) == 0:
                continue
            if k == 1:  # epochs are integers: dodge the cells so their error bars do not overlap
                x = x + 0.4 * ((i + 0.5) / len(cells) - 0.5)
            ax.plot(
                x,
                m,
                color=color,
                lw=1.8 if cell.is_baseline else 1.2,
                ls="--" if cell.is_baseline else "-",
                marker="o" if len(x) < 6 else None,
                ms=3,
                label=_short_label(cell) if k == 0 else None,
            )
            if len(x) == 1:  # one epoch: an error bar, not a band
                ax.errorbar(x, m, yerr=s, color=color, capsize=3, lw=1)
            else:
                _band(ax, x, m, s, color)
    ax_loss.set(xlabel="step", ylabel="training loss (running mean within the epoch)", title="training loss")
    ax_auc.set(xlabel="epoch", ylabel="validation AUC", title="validation AUC")
    epochs = sorted({e for runs in data.values() for _, auc in runs for e in auc})
    ax_auc.set_xticks(epochs)
    _legend(fig, ax_loss)
    fig.suptitle(f"{title}: mean over seeds, band ± 1 std (baseline dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _dig(record: dict, *keys: str) -> Any:
    for k in keys:
        if not isinstance(record, dict) or k not in record:
            return None
        record = record[k]
    return record


# (title, extractor, log scale)
DIAGNOSTIC_SCALARS: list[tuple[str, Callable[[dict], Any], bool]] = [
    ("gradient norm (all parameters)", lambda r: r.get("grad_norm"), True),
    ("loss range along -ηg (landscape)", lambda r: _dig(r, "landscape", "loss_range"), True),
    ("gradient predictiveness: max ||Δ grad||", lambda r: _dig(r, "landscape", "grad_diff_max"), True),
    ("effective β-smoothness", lambda r: _dig(r, "landscape", "beta"), True),
    ("dead ReLU fraction (mean over layers)", lambda r: _dig(r, "activations", "dead_relu_mean"), False),
    ("logit std", lambda r: _dig(r, "activations", "logits", "std"), False),
    ("numeric stage output variance", lambda r: _dig(r, "activations", "stages", "numeric", "var"), True),
    ("categorical stage output variance", lambda r: _dig(r, "activations", "stages", "categorical", "var"), True),
    ("R² of x from its embedding after the numeric norm", lambda r: _dig(r, "numeric_value", "post_mean"), False),
    ("internal covariate shift: mean ||G - G'||", lambda r: _dig(r, "ics", "l2_mean"), True),
    ("BN train vs eval mode: mean |Δp|", lambda r: _dig(r, "bn_gap", "prob_abs_diff"), True),
]


def plot_diagnostics(cells: pd.DataFrame, diags: dict[str, list[list[dict]]], path: Path, title: str) -> bool:
    """One panel per diagnostic scalar present, value by step, mean over seeds +- 1 std, one line per cell."""
    present = []
    for name, get, log in DIAGNOSTIC_SCALARS:
        if any(isinstance(get(r), (int, float)) for runs in diags.values() for recs in runs for r in recs):
            present.append((name, get, log))
    if not present:
        return False
    ncols = min(3, len(present))
    nrows = math.ceil(len(present) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False)
    colors = _colors(len(cells))
    for ax, (name, get, log) in zip(axes.flat, present):
        for color, cell in zip(colors, cells.itertuples()):
            series = [
                {float(r["step"]): get(r) for r in recs if isinstance(get(r), (int, float))}
                for recs in diags.get(cell.cell_id, [])
            ]
            series = [s for s in series if s]
            if not series:
                continue
            x, m, s = _mean_band(series)
            ax.plot(
                x,
                m,
                color=color,
                lw=1.8 if cell.is_baseline else 1.1,
                ls="--" if cell.is_baseline else "-",
                marker="o",
                ms=2.5,
                label=_short_label(cell),
            )
            _band(ax, x, m, s, color, log)
        if log and all(v > 0 for line in ax.get_lines() for v in line.get_ydata() if np.isfinite(v)):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    _legend(fig, axes.flat[0])
    fig.suptitle(f"{title}: diagnostics (step 0 = initialisation; mean over seeds, band ± 1 std)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _init_norms(record: dict) -> dict[str, float]:
    """Per-matrix gradient norms at initialisation of a step-0 record: the mean over ``init_batches`` batches when
    recorded, else the one training batch's."""
    return _dig(record, "init_grad_norms", "grad_norms_mean") or record["grad_norms"]


def plot_grad_norms(cells: pd.DataFrame, diags: dict[str, list[list[dict]]], path: Path, title: str) -> bool:
    """Gradient norm per weight matrix (in model order) at initialisation (step 0: mean over the ``init_batches``
    batches where recorded) and at the last probe."""
    first: dict[str, list[list[float]]] = {}
    last: dict[str, list[list[float]]] = {}
    names: list[str] = []
    for cid, runs in diags.items():
        for recs in runs:
            recs = [r for r in recs if r.get("grad_norms")]
            if recs:
                first.setdefault(cid, []).append(list(_init_norms(recs[0]).values()))
                last.setdefault(cid, []).append(list(recs[-1]["grad_norms"].values()))
                names = max(names, list(_init_norms(recs[0])), key=len)
    if not first:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.5 * len(names) * 2), 4.2), sharey=True)
    x = np.arange(len(names))
    for color, cell in zip(_colors(len(cells)), cells.itertuples()):
        for ax, data in ((axes[0], first), (axes[1], last)):
            if cell.cell_id not in data:
                continue
            vals = np.full((len(data[cell.cell_id]), len(names)), np.nan)
            for i, v in enumerate(data[cell.cell_id]):
                vals[i, : min(len(v), len(names))] = v[: len(names)]
            vals[vals <= 0] = np.nan  # log scale
            ax.plot(
                x,
                _nanmean(vals),
                color=color,
                marker="o",
                ms=3,
                lw=1.8 if cell.is_baseline else 1.1,
                ls="--" if cell.is_baseline else "-",
                label=_short_label(cell) if ax is axes[0] else None,
            )
    for ax, what in zip(axes, ("at initialisation (step 0, mean over batches)", "at the last probe")):
        ax.set_xticks(x, names, rotation=90, fontsize=6)
        ax.set_yscale("log")
        ax.set_title(f"gradient norm per weight matrix, {what}", fontsize=9)
    axes[0].set_ylabel("||∇W||_F (mean over seeds)")
    _legend(fig, axes[0])
    fig.suptitle(f"{title} (Xiong et al. 2020: Post-LN grows toward the output at init)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------------------- markdown


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def oracle_lines(plan: Plan) -> list[str]:
    """Markdown bullets with the oracle test AUC of each generated data set the cells ran on (none when unknown).

    The oracle is known for the bundled sample and for files written by :mod:`ctr.data.generate` with their
    sidecar, split by line number (``data.split_seed``, ``data.split``; no group or time split): the AUC of the
    planted click probabilities on the test split's rows (:func:`oracle_auc`).
    """
    seen: dict[tuple, str] = {}
    for cell in plan.cells:
        data = cell.config.data
        if data.path is None and data.dataset is not None:
            continue  # a dataset preset, not the bundled sample
        if data.format != "criteo" or data.group is not None or data.split_by_time is not None:
            continue  # not split by line number as a generated file is: its test rows are not the oracle's
        key = (data.path, data.split_seed, tuple(data.split))
        if key not in seen:
            path = default_data_path() if data.path is None else Path(data.path)
            value = oracle_auc(path, data.split_seed, list(data.split)) if path.is_file() else None
            if value is not None:
                where = "the bundled sample" if data.path is None else f"`{data.path}`"
                seen[key] = (
                    f"- oracle test AUC of {where}: {value:.4f} (the AUC of the generator's planted click "
                    "probabilities on the test rows; no model beats it in expectation)"
                )
    return list(seen.values())


def _baseline_text(baseline: dict[str, Any]) -> str:
    if baseline == {f"norm.{s}": "none" for s in STAGES}:
        return "every stage norm `none`"
    return ", ".join(f"`{k}={format_value(v)}`" for k, v in baseline.items())


def _markdown(out: Path, plan: Plan, runs: pd.DataFrame, summary: pd.DataFrame, images: list[tuple[str, str]]) -> str:
    spec, alpha = plan.spec, plan.spec.alpha
    counts = runs["status"].value_counts().to_dict()
    name = spec.path.stem if spec.path else "ablation"
    lines = [f"# Ablation: {name}", ""]
    if spec.path:
        lines += [
            f"Config `{spec.path}`; reproduce (finished runs are reused): "
            f"`python -m ctr.ablation {spec.path} --out {out}`",
            "",
        ]
    n_base = sum(c.is_baseline for c in plan.cells)
    lines += [
        f"- cells: {len(plan.cells)} ({n_base} baseline{'s' if n_base != 1 else ''}), "
        f"seeds: {', '.join(map(str, spec.seeds))}, runs: {len(runs)} "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())})",
        f"- design keys: {', '.join(f'`{k}`' for k in plan.keys) or 'none'}; baseline of each cell: the cell with "
        f"{_baseline_text(spec.baseline)}",
        *oracle_lines(plan),
        "",
    ]
    if plan.invalid:
        lines += ["## Dropped cells (invalid for their model)", ""]
        lines += [f"- `{label}`: {reason}" for label, reason in plan.invalid] + [""]
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        lines += ["## Failed runs", ""]
        lines += [f"- `{r.run}` ({r.cell}): {r.error}" for r in failed.itertuples()] + [""]
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        lines += ["## Diverged runs", "", "Stopped by the divergence guard; counted per cell, not averaged in.", ""]
        lines += [f"- `{r.run}` ({r.cell}): step {int(r.diverged_step)}" for r in diverged.itertuples()] + [""]

    tests = int((~summary["is_baseline"] & summary["p_test_auc"].notna()).sum())
    lines += [
        "## Summary",
        "",
        "Test AUC and logloss: mean ± half-width of the 95% Student-t confidence interval over seeds. Δ: mean of "
        "the paired differences cell − baseline over the seeds where both finished, ± its 95% interval; baseline "
        "AUC: the baseline's mean over those seeds, so Δ AUC = the cell's AUC − baseline AUC on them. p: two-sided "
        f"paired t-test of test AUC; p (Holm): adjusted by Holm's step-down procedure over the {tests} tested "
        f"non-baseline cells of this study (the logloss p likewise, as its own family); `*` marks p (Holm) < "
        f"{alpha:g}, the significance decision. With one seed, intervals and p are n/a. Calibration: mean "
        "predicted click rate / observed rate on test; gAUC: group AUC on test (data with `data.group`), means over "
        "seeds.",
        "",
    ]
    header = [
        "cell",
        "n",
        "test AUC",
        "baseline AUC",
        "Δ AUC",
        "p",
        "p (Holm)",
        "test logloss",
        "Δ logloss",
        "p (Holm, logloss)",
        "calibration",
        "gAUC",
        "valid AUC",
        "samples/s",
        "note",
    ]
    rows = []
    for _, cells in _groups(summary, name):
        cells = pd.concat([cells[cells["is_baseline"]], cells[~cells["is_baseline"]]])
        for r in cells.itertuples():
            rows.append(
                [
                    f"**{r.cell}**" if r.is_baseline else r.cell,
                    str(r.n),
                    f"{_fmt(r.test_auc_mean)} ± {_fmt(r.test_auc_ci95)}",
                    "—" if r.is_baseline else _fmt(r.baseline_test_auc_mean),
                    "—" if r.is_baseline else f"{_fmt(r.delta_test_auc, sign=True)} ± {_fmt(r.delta_test_auc_ci95)}",
                    "—" if r.is_baseline else _fmt_p(r.p_test_auc),
                    "—" if r.is_baseline else _fmt_p(r.p_test_auc_holm, alpha),
                    f"{_fmt(r.test_logloss_mean)} ± {_fmt(r.test_logloss_ci95)}",
                    "—"
                    if r.is_baseline
                    else f"{_fmt(r.delta_test_logloss, sign=True)} ± {_fmt(r.delta_test_logloss_ci95)}",
                    "—" if r.is_baseline else _fmt_p(r.p_test_logloss_holm, alpha),
                    _fmt(r.test_calibration_mean),
                    "—" if math.isnan(r.test_gauc_mean) else _fmt(r.test_gauc_mean),
                    _fmt(r.valid_auc_mean),
                    "n/a" if math.isnan(r.samples_per_sec) else f"{r.samples_per_sec:,.0f}",
                    r.note or "",
                ]
            )
    lines += [_md_table(header, rows), ""]
    for caption, file in images:
        lines += [f"## {caption}", "", f"![{caption}]({file})", ""]
    lines += [
        "Files: `runs.csv` (one row per run), `summary.csv` (one row per cell), `runs/<run>/` (config, metrics, "
        "diagnostics, weights).",
        "",
    ]
    return "\n".join(lines)


def tuned_markdown(tuned: pd.DataFrame, key: str, alpha: float) -> str:
    """The report section of each arm at its best value of ``key`` on validation (see ``stats.select_tuned``)."""
    header = [
        "cell",
        f"best {key}",
        "n",
        "valid AUC",
        "test AUC",
        "baseline AUC",
        "Δ AUC",
        "p (Holm)",
        "test logloss",
    ]
    rows = []
    for r in tuned.to_dict("records"):
        base = bool(r["is_baseline"])
        rows.append(
            [
                f"**{r['cell']}**" if base else r["cell"],
                str(r[key]),
                str(r["n"]),
                _fmt(r["valid_auc_mean"]),
                f"{_fmt(r['test_auc_mean'])} ± {_fmt(r['test_auc_ci95'])}",
                "—" if base else _fmt(r["baseline_test_auc_mean"]),
                "—" if base else f"{_fmt(r['delta_test_auc'], sign=True)} ± {_fmt(r['delta_test_auc_ci95'])}",
                "—" if base else _fmt_p(r["p_test_auc_holm"], alpha),
                f"{_fmt(r['test_logloss_mean'])} ± {_fmt(r['test_logloss_ci95'])}",
            ]
        )
    intro = (
        f"Each arm (the cells that differ only in `{key}`, baselines included) at the value of `{key}` with its "
        "best mean validation AUC, then compared on test with its baseline arm at that arm's own best value; "
        f"Holm's correction over these comparisons. The chosen values are in the `best {key}` column (also "
        "`summary_tuned.csv`)."
    )
    return "\n".join([f"## Each arm at its best {key}", "", intro, "", _md_table(header, rows), ""])
