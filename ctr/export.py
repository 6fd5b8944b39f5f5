"""Export a trained run for serving: TorchScript or ONNX, plain tensors in, click probabilities out.

    python -m ctr.export --run DIR --format torchscript|onnx --out FILE

The exported module (:class:`ProbabilityModel`) has one signature for every model (letters as in
:mod:`ctr.types`; L = the longest ``max_len`` of the multi-valued fields):

    forward(ids: int64 (B, Fc), dense: float32 (B, Fn), dense_missing: bool (B, Fn)[, multi: int64 (B, Fm, L)])
        -> float32 (B,) probabilities (the sigmoid of the model's logits)

``multi`` is an input only when the schema has multi-valued fields. B is dynamic. Beside ``FILE`` the export
writes ``FILE.schema.json`` (the run's schema: how raw rows become these tensors, :func:`ctr.data.prepare.encode_raw`)
and ``FILE.signature.json`` (the inputs with their shapes, dtypes and column names, the output, the model and its
norms). Every file is written atomically (temp file + rename), and the exported file is loaded back and checked
against the model at another batch size before it replaces ``FILE``: an export that cannot reproduce the model
fails with a :class:`ctr.errors.CTRError` naming the model, its norms and the reason. See ``docs/export.md``.

ONNX export needs the ``export`` extra (``pip install 'ctr[export]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ctr.errors import CTRError
from ctr.models.base import CTRModel
from ctr.types import Batch, Schema

FORMATS = ("torchscript", "onnx")
INPUTS = ("ids", "dense", "dense_missing", "multi")
OUTPUT = "probability"
EXPORT_BATCH, CHECK_BATCH = 4, 7  # traced / exported at one batch size, checked at another (B stays dynamic)
TOLERANCE = 1e-5  # largest |exported - eager| probability accepted by the check
ONNX_SINGLE_FILE_BYTES = 1 << 30  # larger weights go to FILE.data (protobuf caps one ONNX file at 2 GiB)


class ProbabilityModel(nn.Module):
    """A CTR model behind the export signature: plain tensors in, probabilities out.

    Args:
        model: a model mapping a :class:`Batch` to (B,) logits; used in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, dense: Tensor, dense_missing: Tensor, multi: Tensor | None = None) -> Tensor:
        """ids (B, Fc) int64, dense (B, Fn) float32, dense_missing (B, Fn) bool, multi (B, Fm, L) int64 or None
        -> (B,) float32 probabilities."""
        label = dense.new_zeros(ids.shape[0])  # (B,): a Batch carries labels; models never read them
        logits = self.model(Batch(ids, dense, dense_missing, label, multi=multi))  # (B,)
        return torch.sigmoid(logits.float())


def multi_length(schema: Schema) -> int:
    """L, the last dimension of ``multi``: the longest ``max_len`` of the multi-valued fields (0 if none)."""
    return max((int(f.stats["max_len"]) for f in schema.multi_fields), default=0)


def example_inputs(schema: Schema, batch_size: int, seed: int = 0) -> tuple[Tensor, ...]:
    """Random valid inputs for ``schema``: ids in range, some dense values missing (0 there), 1..max_len values
    per multi-valued cell (-1 after them). Used to export and to check an export; not meaningful data."""
    g = torch.Generator().manual_seed(seed)
    n = batch_size
    columns = [torch.randint(0, f.vocab_size, (n,), generator=g) for f in schema.id_fields]
    ids = torch.stack(columns, dim=1) if columns else torch.zeros(n, 0, dtype=torch.long)  # (B, Fc)
    fn = len(schema.dense_fields)
    missing = torch.rand(n, fn, generator=g) < 0.2  # (B, Fn)
    dense = torch.randn(n, fn, generator=g).masked_fill(missing, 0.0)  # (B, Fn)
    inputs = (ids, dense, missing)
    if not schema.multi_fields:
        return inputs
    length = multi_length(schema)
    multi = torch.full((n, len(schema.multi_fields), length), -1, dtype=torch.long)  # (B, Fm, L)
    for j, f in enumerate(schema.multi_fields):
        count = torch.randint(1, int(f.stats["max_len"]) + 1, (n, 1), generator=g)  # (B, 1)
        values = torch.randint(0, f.vocab_size, (n, length), generator=g)  # (B, L)
        multi[:, j] = torch.where(torch.arange(length) < count, values, -1)
    return (*inputs, multi)


def signature(schema: Schema, fmt: str, model: str, norms: dict[str, Any]) -> dict[str, Any]:
    """The ``FILE.signature.json`` of an export: inputs (name, dtype, shape with ``"B"`` for the batch, the schema
    field of every column), output, format, model and norms."""
    inputs = [
        {"name": "ids", "dtype": "int64", "shape": ["B", len(schema.id_fields)], "columns": _names(schema.id_fields)},
        {
            "name": "dense",
            "dtype": "float32",
            "shape": ["B", len(schema.dense_fields)],
            "columns": _names(schema.dense_fields),
        },
        {
            "name": "dense_missing",
            "dtype": "bool",
            "shape": ["B", len(schema.dense_fields)],
            "columns": _names(schema.dense_fields),
        },
    ]
    if schema.multi_fields:
        inputs.append(
            {
                "name": "multi",
                "dtype": "int64",
                "shape": ["B", len(schema.multi_fields), multi_length(schema)],
                "columns": _names(schema.multi_fields),
                "padding": -1,
            }
        )
    return {
        "format": fmt,
        "model": model,
        "norms": norms,
        "inputs": inputs,
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["B"], "meaning": "click probability"},
        "torch": torch.__version__.split("+")[0],
    }


def _names(fields: list) -> list[str]:
    return [f.name for f in fields]


# ------------------------------------------------------------------------------------------------ the two formats


def to_torchscript(module: nn.Module, inputs: tuple[Tensor, ...], path: str | Path) -> None:
    """Trace ``module`` (eval mode) on ``inputs`` and save the TorchScript module to ``path``.

    Tracing records the operations the inputs take, with the batch size left symbolic; a model whose control
    flow depends on input values would be recorded for these values only. The tracer's warnings about such
    risks are silenced: :func:`check_export` runs the saved file at another batch size and catches the real ones.
    TorchScript is deprecated in torch (its successor is ``torch.export``, which the ONNX path uses); its
    deprecation warnings are silenced too, the format being what the user asked for (``docs/export.md``).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, inputs, check_trace=False)
        torch.jit.save(traced, str(path))


def to_onnx(module: nn.Module, inputs: tuple[Tensor, ...], path: str | Path, external_data: bool = False) -> None:
    """Export ``module`` (eval mode) to ONNX at ``path`` through ``torch.export`` with a dynamic batch dimension.

    ``external_data`` puts the weights in ``<path>.data`` next to ``path`` (needed past 2 GiB).
    """
    require_onnx()
    from torch.export import Dim

    batch = Dim("batch", min=1)
    names = list(INPUTS[: len(inputs)])
    with _quiet_onnx_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            inputs,
            dynamo=True,
            input_names=names,
            output_names=[OUTPUT],
            dynamic_shapes=tuple({0: batch} for _ in inputs),
            verbose=False,
        )
    program.save(str(path), external_data=external_data)


def require_onnx() -> None:
    """Raise CTRError unless the ``export`` extra (onnx, onnxscript, onnxruntime) is installed."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise CTRError(
                f"ONNX export needs the '{module}' package, which is not installed: pip install 'ctr[export]'"
            ) from None


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """The exporter logs a warning per optional operator library it does not find (e.g. torchvision's), warns
    about its own internals (axis renaming, pytree deprecations), and prints each graph it failed to export:
    none of it concerns a model that exports, and the error of one that does not says why (:func:`_reason`)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
            warnings.filterwarnings("ignore", message=r".*treespec.*deprecated", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def load_exported(path: str | Path, fmt: str):
    """A function ``run(*inputs) -> (B,) numpy probabilities`` over the exported file ``path``."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
            module = torch.jit.load(str(path))

        def run_torchscript(*inputs: Tensor) -> np.ndarray:
            with torch.no_grad():
                return module(*inputs).numpy()

        return run_torchscript
    require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run_onnx(*inputs: Tensor) -> np.ndarray:
        if names != list(INPUTS[: len(inputs)]):
            raise ValueError(f"the exported file takes inputs {names}, not {list(INPUTS[: len(inputs)])}")
        return session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]

    return run_onnx


class ExportMismatch(ValueError):
    """An exported file that runs but does not reproduce the model."""


def check_export(module: nn.Module, path: str | Path, fmt: str, inputs: tuple[Tensor, ...]) -> float:
    """The largest |exported - eager| probability over ``inputs`` (a batch size the export did not see).

    Raises:
        ExportMismatch: the exported file gives another shape than the module, or a difference above
            :data:`TOLERANCE` (the message says which and by how much).
    """
    with torch.no_grad():
        want = module(*inputs).numpy()
    got = load_exported(path, fmt)(*inputs)
    if got.shape != want.shape:
        raise ExportMismatch(f"the exported file returns shape {got.shape} at batch size {len(want)}, not {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    if not diff <= TOLERANCE:  # also NaN
        raise ExportMismatch(
            f"its exported probabilities differ from the model's by up to {diff:.3g} at batch size {len(want)} "
            "(the export fixed something that depends on the input values or the batch size)"
        )
    return diff


# ----------------------------------------------------------------------------------------------------- exporting


def export_model(
    model: CTRModel, schema: Schema, fmt: str, out: str | Path, norms: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export ``model`` (in eval mode; its mode is restored) to ``out`` with its schema and signature beside it.

    Args:
        model: maps a :class:`Batch` of ``schema`` to (B,) logits; errors name it by ``model.name``.
        schema: the prepared data's schema.
        fmt: ``torchscript`` or ``onnx``.
        out: the exported file; ``out.schema.json`` and ``out.signature.json`` are written beside it.
        norms: the config's norm of every stage (``norm:``), for errors and the signature file.

    Returns:
        The signature (also in ``out.signature.json``), with ``max_abs_diff`` of the check.

    Raises:
        CTRError: unknown format, ONNX packages missing, or the model cannot be exported to ``fmt`` (the exporter's
            error, or an exported file that does not reproduce the model), naming the model and its norms.
    """
    if fmt not in FORMATS:
        raise CTRError(f"unknown export format '{fmt}'; valid: {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    out, norms = Path(out), norms or {}
    stage_norms = {s: norms[s] for s in model.stages if s in norms}
    sig = signature(schema, fmt, model.name, stage_norms)
    was_training = model.training
    try:
        module = ProbabilityModel(model).eval()
        _write_checked(module, schema, sig, out, describe(model.name, stage_norms))
    finally:
        model.train(was_training)
    return sig


def _write_checked(module: nn.Module, schema: Schema, sig: dict[str, Any], out: Path, description: str) -> None:
    """Export ``module`` into a temporary directory beside ``out``, check it, write the schema and the signature
    (with the check's ``max_abs_diff``) there, then rename each file over its final name, the model file last."""
    fmt = sig["format"]
    inputs, check_inputs = example_inputs(schema, EXPORT_BATCH, seed=0), example_inputs(schema, CHECK_BATCH, seed=1)
    external = fmt == "onnx" and _weight_bytes(module) > ONNX_SINGLE_FILE_BYTES
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    tmp = tmp_dir / out.name  # the final name: ONNX external data refers to it by name
    try:
        try:
            if fmt == "torchscript":
                to_torchscript(module, inputs, tmp)
            else:
                to_onnx(module, inputs, tmp, external_data=external)
            sig["max_abs_diff"] = check_export(module, tmp, fmt, check_inputs)
        except CTRError:
            raise
        except ExportMismatch as e:
            raise CTRError(f"cannot export {description} to {fmt}: {e}") from e
        except Exception as e:  # the exporters raise many types; each means "this model does not export"
            raise CTRError(f"cannot export {description} to {fmt}: {_reason(e)}") from e
        schema.to_json(tmp_dir / f"{out.name}.schema.json")
        (tmp_dir / f"{out.name}.signature.json").write_text(json.dumps(sig, indent=1) + "\n")
        names = [f"{out.name}.schema.json", f"{out.name}.signature.json"] + ([f"{out.name}.data"] if external else [])
        for name in [*names, out.name]:  # the model file last: it is the commit
            os.replace(tmp_dir / name, out.parent / name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _reason(e: BaseException) -> str:
    """The first line of the innermost cause of an exporter's error, its type first (e.g. torch.export's
    ``GuardOnDataDependentSymNode: Could not guard on data-dependent expression ...``: Python control flow on a
    tensor's value), without terminal colour codes."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def describe(model: str, norms: dict[str, Any]) -> str:
    """``deepfm (norm.mlp=bn, norm.categorical={"name": "bn", "scope": "dim"})``: the model and its non-``none``
    norms, as export errors name them."""
    set_norms = [f"norm.{s}={v if isinstance(v, str) else json.dumps(v)}" for s, v in norms.items() if v != "none"]
    return f"{model} ({', '.join(set_norms) or 'no norms'})"


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> dict[str, Any]:
    """Export the trained model of a run directory; see :func:`export_model`."""
    import dataclasses

    from ctr.train.saved_run import load_run

    run = load_run(run_dir, device="cpu")
    return export_model(run.model, run.schema, fmt, out, dataclasses.asdict(run.config.norm))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ctr.export",
        description=(
            "Export a trained run's model for serving: ids, dense, dense_missing[, multi] tensors in, click "
            "probabilities out (docs/export.md). Writes FILE, FILE.schema.json and FILE.signature.json."
        ),
    )
    p.add_argument("--run", required=True, metavar="DIR", help="run directory written by train.py")
    p.add_argument("--format", required=True, choices=FORMATS, help="torchscript (torch.jit) or onnx (ctr[export])")
    p.add_argument("--out", required=True, metavar="FILE", help="the exported file, e.g. model.onnx or model.pt")
    args = p.parse_args(argv)
    sig = export_run(args.run, args.format, args.out)
    inputs = ", ".join(f"{i['name']} {i['dtype']} ({', '.join(map(str, i['shape']))})" for i in sig["inputs"])
    print(f"exported: {args.out} ({args.format}, {_size(Path(args.out))})")
    print(f"inputs: {inputs}")
    print(f"output: {OUTPUT} float32 (B); max |exported - model| on a check batch: {sig['max_abs_diff']:.2g}")
    print(f"schema: {args.out}.schema.json, signature: {args.out}.signature.json")
    return 0


def _size(path: Path) -> str:
    n = path.stat().st_size + (Path(f"{path}.data").stat().st_size if Path(f"{path}.data").exists() else 0)
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{max(1, math.ceil(n / 1024))} KiB"


if __name__ == "__main__":
    from ctr.cli import run_cli

    sys.exit(run_cli(main))
