"""Inference speed: a hand-written eval loop, ctr's scoring path, the TorchScript export and ONNX Runtime.

    python benchmarks/predict.py [--models deepfm,dnn] [--batch-size 4096] [--rows 100000] [--repeats 3]
                                 [--precisions fp32,bf16] [--threads N] [--set KEY=VALUE ...] [--json FILE]

On the bundled generated sample (``data.path: null``; prepared on first use), the first ``--rows`` rows of its
train split as in-memory tensors, each model with the default config of ``configs/models/<name>.yaml`` (weights
at initialisation: speed does not depend on their values) and ``--set`` overrides. Every path turns all rows into
probabilities, ``--batch-size`` rows per forward pass:

* ``loop``: the hand-written reference, ``torch.sigmoid(model(batch))`` over zero-copy slices of the tensors under
  ``torch.inference_mode``, written into one preallocated (N,) tensor;
* ``ctr``: ``ctr.train.evaluation.predict_logits`` over ``ctr.data.loader.iterate_batches`` (what ``evaluate.py``
  runs), then the sigmoid;
* ``torchscript``: the module ``python -m ctr.export --format torchscript`` writes, loaded with ``torch.jit.load``;
* ``onnxruntime``: the ``--format onnx`` file in an ``onnxruntime.InferenceSession`` (CPU provider, as many
  intra-op threads as torch uses), fed numpy views of the same slices;
* ``predict.py``: end to end from raw text: the first ``--rows`` lines of the sample's raw file without their label
  column, parsed, encoded, scored and written to Parquet by ``ctr.predict.predict_file`` (not the same rows as the
  other paths, the same number: its probabilities are not compared).

``bf16`` runs the two eager paths under ``torch.autocast("cpu", torch.bfloat16)``; the exported files are fp32
graphs, so they run in fp32 only. Each path makes one warm-up pass, then ``--repeats`` rounds run every path of a
model once in turn; the time of a path is its best pass. The table gives samples/s, the ratio to the hand-written
loop at the same precision, and the largest difference of the probabilities from the fp32 loop's. Threads: ``--threads``, else torch's default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ctr.config import load_config
from ctr.data.loader import iterate_batches, load_split
from ctr.data.prepare import prepare_data
from ctr.export import ProbabilityModel, example_inputs, to_onnx, to_torchscript
from ctr.models import build_model
from ctr.train.evaluation import predict_logits
from ctr.types import Batch


def tensors(b: Batch) -> tuple[torch.Tensor, ...]:
    """The export signature's inputs of ``b``: ids, dense, dense_missing[, multi]."""
    return (b.ids, b.dense, b.dense_missing) + ((b.multi,) if b.multi is not None else ())


def best_times(fns: dict[str, Callable[[], np.ndarray]], repeats: int) -> dict[str, tuple[float, np.ndarray]]:
    """One warm-up call of each function, then ``repeats`` rounds that call each once in turn: the best wall time
    of each and its last result. Taking turns spreads the load of other processes over all paths alike."""
    out = {k: (float("inf"), fn()) for k, fn in fns.items()}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            prob = fn()
            out[k] = (min(out[k][0], time.perf_counter() - t0), prob)
    return out


def hand_written(model: torch.nn.Module, t: Batch, bs: int, precision: str) -> np.ndarray:
    n = len(t)
    out = torch.empty(n)
    dtype = torch.bfloat16 if precision == "bf16" else None
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        for start in range(0, n, bs):
            out[start : start + bs] = torch.sigmoid(model(t.rows(slice(start, start + bs))).float())
    return out.numpy()


def ctr_path(model: torch.nn.Module, t: Batch, bs: int, precision: str) -> np.ndarray:
    batches = iterate_batches(t, bs, shuffle=False, seed=0, epoch=0)
    logits, _, _ = predict_logits(model, batches, torch.device("cpu"), precision)
    return 1.0 / (1.0 + np.exp(-logits))


def torchscript_path(module: torch.jit.ScriptModule, t: Batch, bs: int) -> np.ndarray:
    n = len(t)
    out = torch.empty(n)
    with torch.inference_mode():
        for start in range(0, n, bs):
            out[start : start + bs] = module(*tensors(t.rows(slice(start, start + bs))))
    return out.numpy()


def onnx_path(session, arrays: tuple[np.ndarray, ...], bs: int) -> np.ndarray:
    n = len(arrays[0])
    names = [i.name for i in session.get_inputs()]
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, bs):
        feed = {name: a[start : start + bs] for name, a in zip(names, arrays)}
        out[start : start + bs] = session.run(None, feed)[0]
    return out


def raw_rows(schema, n: int, workdir: Path) -> Path:
    """The first ``n`` lines of the raw file the sample was prepared from, without their label column (as new
    traffic comes), in a file of their own."""
    path = workdir / "raw.txt"
    if not path.exists():
        with open(schema.source["path"]) as src, open(path, "w") as dst:
            for _, line in zip(range(n), src):
                dst.write(line.split("\t", 1)[1])
    return path


def saved_run(cfg, schema, model: torch.nn.Module, path: Path):
    """A run directory holding ``model`` (what ``predict.py`` loads), read back as ``ctr.load_run`` does."""
    from ctr.train.run_dir import RunDir
    from ctr.train.saved_run import load_run

    run = RunDir(path)
    run.create()
    run.write_config(cfg)
    run.write_schema(schema)
    run.save_model(model.state_dict())
    return load_run(path, device="cpu")


def raw_file_path(run, raw: Path, bs: int, out: Path) -> np.ndarray:
    """``predict.py`` end to end: parse, encode and score the raw file, write Parquet; read the scores back."""
    import pyarrow.parquet as pq

    from ctr.predict import predict_file

    predict_file(run, raw, out, batch_size=bs, progress=False)
    return pq.read_table(out, columns=["probability"])["probability"].to_numpy()


def bench_model(name: str, t: Batch, schema, args, workdir: Path) -> list[dict]:
    cfg = load_config([], [f"model.name={name}", *args.set])
    torch.manual_seed(0)
    model = build_model(schema, cfg.model, cfg.norm).eval()
    bs = args.batch_size
    fns: dict[tuple[str, str], Callable[[], np.ndarray]] = {}
    for precision in args.precisions.split(","):
        fns["loop", precision] = lambda p=precision: hand_written(model, t, bs, p)
        fns["ctr", precision] = lambda p=precision: ctr_path(model, t, bs, p)
    wrapped = ProbabilityModel(model).eval()
    example = example_inputs(schema, 4)
    to_torchscript(wrapped, example, workdir / f"{name}.pt")
    module = torch.jit.load(str(workdir / f"{name}.pt"))
    fns["torchscript", "fp32"] = lambda: torchscript_path(module, t, bs)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed (pip install 'ctr[export]'): no ONNX Runtime row", file=sys.stderr)
    else:
        to_onnx(wrapped, example, workdir / f"{name}.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(workdir / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        arrays = tuple(x.numpy() for x in tensors(t))
        fns["onnxruntime", "fp32"] = lambda: onnx_path(session, arrays, bs)
    raw = raw_rows(schema, len(t), workdir)
    run = saved_run(cfg, schema, model, workdir / f"{name}-run")
    fns["predict.py", "fp32"] = lambda: raw_file_path(run, raw, bs, workdir / f"{name}.parquet")
    rows = []
    for (path, precision), (seconds, prob) in best_times(fns, args.repeats).items():
        rows.append({"model": name, "path": path, "precision": precision, "seconds": seconds, "prob": prob})
        print(f"  {name:8} {path:12} {precision:5} {len(t) / seconds:12,.0f} samples/s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="deepfm,dnn")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--rows", type=int, default=100_000, help="rows of the sample's train split to score")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=0, help="torch and onnxruntime intra-op threads (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every model")
    p.add_argument("--json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prepared = prepare_data(load_config([], list(args.set)).data)
    t = load_split(prepared, "train").rows(slice(0, args.rows))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ctr_bench_predict_") as workdir:
        for name in args.models.split(","):
            rows += bench_model(name, t, prepared.schema, args, Path(workdir))
    n = len(t)
    print(f"{n:,} rows, batch {args.batch_size}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| model | path | precision | samples/s | x loop (same precision) | max abs diff vs loop fp32 |")
    print("|---|---|---|---|---|---|")
    result = []
    for r in rows:
        loop = next(
            x for x in rows if x["model"] == r["model"] and x["path"] == "loop" and x["precision"] == r["precision"]
        )
        ref = next(x for x in rows if x["model"] == r["model"] and x["path"] == "loop" and x["precision"] == "fp32")
        rate = n / r["seconds"]
        other_rows = r["path"] == "predict.py"  # scores other rows: nothing to compare
        diff = math.nan if other_rows else float(np.max(np.abs(r["prob"].astype(np.float64) - ref["prob"])))
        print(
            f"| {r['model']} | {r['path']} | {r['precision']} | {rate:,.0f} | {loop['seconds'] / r['seconds']:.2f} "
            f"| {diff:.1e} |"
        )
        result.append({k: v for k, v in r.items() if k != "prob"} | {"samples_per_sec": rate, "max_abs_diff": diff})
    line = json.dumps(
        {
            "benchmark": "predict",
            "rows": n,
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "runs": result,
        }
    )
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
