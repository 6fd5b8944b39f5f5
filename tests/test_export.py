"""Export to TorchScript and ONNX, generated from the registries: every model of the zoo (its shipped norms, on a
schema with multi-valued fields) and every norm at every stage (:class:`AllStages`) give the eager model's
probabilities within 1e-5 at batch sizes the export did not see; the refusals; the files written.

Models are trained a few steps first, so that zero-initialised weights move and BN's running statistics are the
data's rather than the identity. ONNX checks export several models side by side in one file (:class:`SideBySide`):
the exporter costs about half a second per export plus time per operation.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny import model_config, tiny_batch, tiny_options, tiny_schema
from torch import nn

from ctr import export
from ctr.cli import run_cli
from ctr.config import STAGES
from ctr.errors import CTRError
from ctr.models import build_model, get_model, list_models
from ctr.models.base import CTRModel
from ctr.nn.attention import SelfAttentionStack
from ctr.nn.cin import CIN
from ctr.nn.cross import CrossNet
from ctr.nn.embedding import FieldEmbedding
from ctr.nn.mlp import MLP
from ctr.nn.norm import NormSpec, list_norms, parse_norm
from ctr.types import Batch, Field, Schema

DIM = 4
SIZES = (1, 13)  # checked batch sizes; the export sees export.EXPORT_BATCH rows
HIST = Field("hist", "categorical", "multi", "vocab", 7, {"max_len": 3, "pooling": "mean"})
TAGS = Field("tags", "categorical", "multi", "vocab", 5, {"max_len": 2, "pooling": "sum"})
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # docs/export.md: TorchScript


def multi_schema() -> Schema:
    """The tiny schema plus two multi-valued fields of different max_len (L = 3)."""
    return Schema(tiny_schema().fields + [HIST, TAGS])


def needs(fmt: str) -> None:
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(module)


def trained(model: CTRModel, schema: Schema, steps: int = 3) -> CTRModel:
    """``steps`` Adam steps (lr 0.05) on tiny batches, then eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for step in range(steps):
        batch = tiny_batch(schema, batch_size=32, seed=100 + step)
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build(schema: Schema, name: str, options: dict | None = None, **norms) -> tuple[CTRModel, dict]:
    torch.manual_seed(0)
    model_cfg, norm_cfg = model_config(name, DIM, tiny_options(name, **(options or {})), **norms)
    return trained(build_model(schema, model_cfg, norm_cfg), schema), dataclasses.asdict(norm_cfg)


def inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    return (batch.ids, batch.dense, batch.dense_missing) + ((batch.multi,) if batch.multi is not None else ())


def load(path: Path, fmt: str):
    """The exported file at ``path`` as a function of a Batch, loaded the way a user would: torch.jit.load, or an
    onnxruntime session fed by the documented input names."""
    if fmt == "torchscript":
        module = torch.jit.load(str(path))

        def run_torchscript(batch: Batch) -> np.ndarray:
            with torch.no_grad():
                return module(*inputs(batch)).numpy()

        return run_torchscript
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run_onnx(batch: Batch) -> np.ndarray:
        return session.run(["probability"], {n: t.numpy() for n, t in zip(export.INPUTS, inputs(batch))})[0]

    return run_onnx


def eager(model: CTRModel, batch: Batch) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(batch)).numpy()


class SideBySide(nn.Module):
    """Several models behind the export signature, one probability column each: (B, K). The ONNX exporter's cost
    is per operation plus a fixed part per export; one export of K models is the cheaper way to check K."""

    def __init__(self, models: list[CTRModel]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(export.ProbabilityModel(m) for m in models)

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor, dense_missing: torch.Tensor, multi: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.stack([p(ids, dense, dense_missing, multi) for p in self.parts], dim=1)  # (B, K)


def check_side_by_side(models: dict[str, CTRModel], schema: Schema, path: Path) -> None:
    """Export ``models`` to ONNX in one file; each column equals its eager model within 1e-5 at every size."""
    needs("onnx")
    module = SideBySide(list(models.values())).eval()
    export.to_onnx(module, export.example_inputs(schema, export.EXPORT_BATCH), path)
    run = load(path, "onnx")
    for size in SIZES:
        batch = tiny_batch(schema, batch_size=16, seed=size).rows(slice(0, size))
        got = run(batch)  # (B, K)
        assert got.dtype == np.float32 and got.shape == (size, len(models))
        for k, (what, model) in enumerate(models.items()):
            np.testing.assert_allclose(got[:, k], eager(model, batch), rtol=0, atol=1e-5, err_msg=f"{what} B={size}")


# ------------------------------------------------------------------------------------------- every model, both formats


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_to_torchscript_with_a_dynamic_batch(name: str, tmp_path: Path) -> None:
    """The shipped norms of every model, on a schema with dense, id and multi-valued fields."""
    schema = multi_schema()
    model, norms = build(schema, name)
    out = tmp_path / f"{name}.pt"
    sig = export.export_model(model.train(), schema, "torchscript", out, norms)  # exported in eval mode
    assert model.training  # the mode it had is restored
    model.eval()
    run = load(out, "torchscript")
    for size in SIZES:
        batch = tiny_batch(schema, batch_size=16, seed=size).rows(slice(0, size))
        got = run(batch)
        assert got.dtype == np.float32 and got.shape == (size,)
        np.testing.assert_allclose(got, eager(model, batch), rtol=0, atol=1e-5, err_msg=f"{name} B={size}")
    assert sig["model"] == name and [i["name"] for i in sig["inputs"]] == list(export.INPUTS)


def test_every_model_exports_to_onnx_with_a_dynamic_batch(tmp_path: Path) -> None:
    """The same models, all in one ONNX file (:class:`SideBySide`), run with onnxruntime."""
    schema = multi_schema()
    check_side_by_side({name: build(schema, name)[0] for name in list_models()}, schema, tmp_path / "zoo.onnx")


# ------------------------------------------------------------------------------- every norm at every stage, both formats

NORMS = [n for n in list_norms() if n != "none"]


class AllStages(CTRModel):
    """Every norm stage in one tiny model, built from the blocks the zoo's models use (no registered model has
    them all): field embeddings (``numeric``, ``categorical``), an MLP (``mlp``), a cross network (``cross``, as
    in dcn), a CIN (``cin``, as in xdeepfm) and AutoInt's interacting layers with the norm ``post`` and ``pre``
    (``attention``), one layer each, their outputs summed into one logit. One model per norm instead of four
    (dnn, dcn, xdeepfm, autoint twice) keeps the ONNX exports of the norm matrix to about half the operations.
    """

    name = "all_stages"
    stages = STAGES

    def __init__(self, schema: Schema, norm: str) -> None:
        super().__init__(schema, None)

        def spec(stage: str, **options) -> NormSpec:
            return parse_norm({"name": norm, **options}, stage)

        self.embed = FieldEmbedding(schema, DIM, spec("numeric"), spec("categorical"))
        f = self.embed.num_fields
        self.mlp = MLP(f * DIM, [8], spec("mlp"), out_dim=1)
        self.cross = CrossNet(f * DIM, 1, spec("cross"))
        self.cin = CIN(f, DIM, [4], spec("cin"))
        self.post = SelfAttentionStack(f, DIM, [8], 2, spec("attention", position="post"))
        self.pre = SelfAttentionStack(f, DIM, [8], 2, spec("attention", position="pre"))
        self.out = nn.Linear(f * DIM + self.cin.out_dim + 2 * f * 8, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embed(batch)  # (B, F, D)
        x = e.flatten(1)  # (B, F*D)
        h = torch.cat([self.cross(x), self.cin(e), self.post(e).flatten(1), self.pre(e).flatten(1)], dim=1)
        return self.mlp(x).squeeze(-1) + self.out(h).squeeze(-1)  # (B,)


def test_all_stages_has_every_stage_of_the_zoo() -> None:
    assert set(AllStages.stages) >= {s for name in list_models() for s in get_model(name).stages}


def norm_model(norm: str) -> CTRModel:
    torch.manual_seed(0)
    return trained(AllStages(tiny_schema(), norm), tiny_schema())


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_at_every_stage_exports_to_torchscript(norm: str, tmp_path: Path) -> None:
    model = norm_model(norm)
    export.export_model(model, tiny_schema(), "torchscript", tmp_path / "m.pt")
    run = load(tmp_path / "m.pt", "torchscript")
    for size in SIZES:
        batch = tiny_batch(batch_size=16, seed=size).rows(slice(0, size))
        np.testing.assert_allclose(run(batch), eager(model, batch), rtol=0, atol=1e-5, err_msg=f"{norm} B={size}")


def test_every_norm_at_every_stage_exports_to_onnx(tmp_path: Path) -> None:
    models = {norm: norm_model(norm) for norm in NORMS}
    check_side_by_side(models, tiny_schema(), tmp_path / "norms.onnx")


def test_batch_norms_are_not_the_identity_after_training() -> None:
    """The norm matrix would prove little if BN's running statistics were still mean 0, variance 1."""
    bns = [m for m in norm_model("bn").modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 8  # numeric, categorical, mlp, cross, cin, attention post, attention pre and its final norm
    for bn in bns:
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


# ------------------------------------------------------------------------------------------------- files and refusals


def test_signature_and_schema_files(tmp_path: Path) -> None:
    schema = multi_schema()
    model, norms = build(schema, "dnn", mlp="bn")
    out = tmp_path / "sub" / "model.pt"
    export.export_model(model, schema, "torchscript", out, norms)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.pt",
        "model.pt.schema.json",
        "model.pt.signature.json",
    ]
    assert Schema.from_json(f"{out}.schema.json") == schema
    sig = json.loads(Path(f"{out}.signature.json").read_text())
    assert sig["format"] == "torchscript" and sig["model"] == "dnn"
    assert sig["norms"] == {"numeric": "none", "categorical": "none", "mlp": "bn"}
    assert sig["inputs"] == [
        {"name": "ids", "dtype": "int64", "shape": ["B", 6], "columns": ["I3", "I4", "C1", "C2", "C3", "C4"]},
        {"name": "dense", "dtype": "float32", "shape": ["B", 2], "columns": ["I1", "I2"]},
        {"name": "dense_missing", "dtype": "bool", "shape": ["B", 2], "columns": ["I1", "I2"]},
        {"name": "multi", "dtype": "int64", "shape": ["B", 2, 3], "columns": ["hist", "tags"], "padding": -1},
    ]
    assert sig["output"]["name"] == "probability" and sig["output"]["shape"] == ["B"]
    assert sig["max_abs_diff"] <= 1e-5


def test_a_schema_without_multi_valued_fields_has_three_inputs(tmp_path: Path) -> None:
    model, norms = build(tiny_schema(), "deepfm")
    sig = export.export_model(model, tiny_schema(), "torchscript", tmp_path / "m.pt", norms)
    assert [i["name"] for i in sig["inputs"]] == ["ids", "dense", "dense_missing"]
    with pytest.raises(RuntimeError):  # the traced module takes no fourth input
        torch.jit.load(str(tmp_path / "m.pt"))(*inputs(tiny_batch(multi_schema(), batch_size=2)))


class NumpyModel(CTRModel):
    """A forward that leaves torch (numpy): tracing records its output as a constant of the export's batch size."""

    name = "numpy_model"

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema, None)
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, batch: Batch) -> torch.Tensor:
        return torch.from_numpy(batch.dense.numpy().sum(1)) * self.w  # (B,)


def test_a_model_that_does_not_export_to_torchscript_is_refused_and_the_old_file_kept(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    out.write_text("previous export")
    with pytest.raises(CTRError) as e:
        export.export_model(NumpyModel(tiny_schema()), tiny_schema(), "torchscript", out)
    assert str(e.value) == (
        "cannot export numpy_model (no norms) to torchscript: the exported file returns shape (4,) at batch "
        "size 7, not (7,)"
    )
    assert out.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary files, no sidecars


class BranchModel(NumpyModel):
    """Python control flow on a tensor's value: torch.export (the ONNX path) cannot record it."""

    name = "branch_model"

    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.dense.sum() > 0:
            return batch.dense.sum(1) * self.w  # (B,)
        return -batch.dense.sum(1) * self.w


def test_a_model_that_does_not_export_to_onnx_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    needs("onnx")
    with pytest.raises(CTRError) as e:
        export.export_model(BranchModel(tiny_schema()), tiny_schema(), "onnx", tmp_path / "m.onnx")
    assert str(e.value).startswith(
        "cannot export branch_model (no norms) to onnx: GuardOnDataDependentSymNode: Could not guard on "
        "data-dependent expression"
    )
    assert "\n" not in str(e.value)
    assert capfd.readouterr().out == ""  # the exporter's graph dumps are not printed
    assert list(tmp_path.iterdir()) == []


def test_the_refusal_names_the_model_and_its_norms() -> None:
    norms = {"numeric": "none", "mlp": "bn", "categorical": {"name": "bn", "scope": "dim"}}
    assert export.describe("deepfm", norms) == 'deepfm (norm.mlp=bn, norm.categorical={"name": "bn", "scope": "dim"})'


def test_onnx_without_the_export_extra_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    model, norms = build(tiny_schema(), "lr")
    with pytest.raises(CTRError) as e:
        export.export_model(model, tiny_schema(), "onnx", tmp_path / "m.onnx", norms)
    assert str(e.value) == ("ONNX export needs the 'onnx' package, which is not installed: pip install 'ctr[export]'")
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    model, _ = build(tiny_schema(), "lr")
    with pytest.raises(CTRError, match=r"^unknown export format 'tflite'; valid: torchscript, onnx$"):
        export.export_model(model, tiny_schema(), "tflite", tmp_path / "m")


def test_large_onnx_weights_go_to_a_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs("onnx")
    monkeypatch.setattr(export, "ONNX_SINGLE_FILE_BYTES", 0)
    model, norms = build(tiny_schema(), "fm")
    out = tmp_path / "m.onnx"
    export.export_model(model, tiny_schema(), "onnx", out, norms)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx",
        "m.onnx.data",
        "m.onnx.schema.json",
        "m.onnx.signature.json",
    ]
    batch = tiny_batch(batch_size=5, seed=9)
    np.testing.assert_allclose(load(out, "onnx")(batch), eager(model, batch), rtol=0, atol=1e-5)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--run", str(tmp_path / "nothing"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    assert run_cli(export.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'nothing'}: not a complete run directory") and err.count("\n") == 1


# -------------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_export_and_serve_raw_rows(tmp_path: Path) -> None:
    """train.py -> python -m ctr.export (both formats) -> raw rows encoded with FILE.schema.json -> the exported
    probabilities equal evaluate's on the same rows."""
    from ctr.data.generate import generate_criteo
    from ctr.data.prepare import encode_raw
    from ctr.train.saved_run import evaluate_run

    raw = generate_criteo(tmp_path / "clicks.txt", rows=3000, seed=5)
    run = tmp_path / "run"
    settings = ["train.epochs=1", "train.batch_size=256", "model.hidden=[16]", "model.embed_dim=4"]
    settings += ["train.progress=false", 'norm.mlp="bn"', 'norm.categorical="ln"']
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(raw), "--out", str(run)]
    r = subprocess.run(cmd + [a for s in settings for a in ("--set", s)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    _, want = evaluate_run(run, raw)
    onnx = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    formats = [f for f in export.FORMATS if f != "onnx" or onnx]
    for fmt in formats:
        out = tmp_path / f"model.{fmt}"
        cmd = [sys.executable, "-m", "ctr.export", "--run", str(run), "--format", fmt, "--out", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"exported: {out} ({fmt}, ")
        batch = encode_raw(raw, Schema.from_json(f"{out}.schema.json"))
        np.testing.assert_allclose(load(out, fmt)(batch), want, rtol=0, atol=1e-5)
    r = subprocess.run(
        [sys.executable, "-m", "ctr.export", "--run", str(run), "--format", "onnx"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "--out" in r.stderr
