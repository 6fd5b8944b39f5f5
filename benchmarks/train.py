"""Training speed and AUC: ctr vs a hand-written PyTorch DeepFM on the same split, per-model throughput, GEMM limit.

    python benchmarks/train.py compare [--rows 1000000] [--data FILE] [--precision fp32] [--seeds 2024,1,2,3,4,5]
        DeepFM (emb 16, MLP 400-400-400, batch 4096, Adam lr 1e-3), 1 epoch, through ctr's train_run and through
        benchmarks/reference_deepfm.py on the same prepared tensors, once per seed; prints test AUC and samples/s
        of both (per seed and mean). With equal initial weights and batches the two train identically
        (tests/test_reference_deepfm.py), so AUC differences between them are seed noise.
    python benchmarks/train.py models [--rows 1000000] [--steps 60] [--models deepfm,dcn,...] [--norms default,normdnn]
                                      [--precision fp32,bf16] [--set KEY=VALUE ...]
        test AUC, logloss and samples/s of every model after a fixed number of training steps (all timed;
        --steps 0 = one full epoch), with each model's own default norms (`default`) and with the NormDNN preset's norms on
        the stages the model has, in each precision; beside each, the model's forward MFLOP/sample (as `flops`),
        its bound (the GEMM rate measured at the start, fp32 or bf16, over 3x the forward FLOPs: the samples/s if
        every product ran at that rate and nothing else took time) and the share of the bound reached;
        --set overrides a config key of every run (e.g. --set "model.cin_layers=[100, 100]").
    python benchmarks/train.py gemm
        the MLP's matrix products alone: the fp32 and bf16 GEMM-bound limit on DeepFM samples/s.
    python benchmarks/train.py adam [--table-rows 625460]
        one Adam step over DeepFM's parameters (table of N x 16): default loop, foreach and fused (used by ctr).
    python benchmarks/train.py flops [--models deepfm,dcn,...] [--set KEY=VALUE ...]
        forward matrix-product FLOPs (mm, bmm, conv, attention; not elementwise work) per sample of every model's default
        config (torch.utils.flop_counter on the 1M-row data's schema): why a model is slower than DeepFM per sample.
    python benchmarks/train.py profile [--models autoint,...] [--set KEY=VALUE ...]
        where one training step's time goes, per op (torch.profiler, forward and backward, 3 steps at batch 4096).
    python benchmarks/train.py allocator [--models autoint,...] [--set KEY=VALUE ...]
        training-step samples/s with glibc's default malloc and with the kept heap that training applies
        (ctr/train/memory.py), each in a fresh process.
    python benchmarks/train.py loader [--rows 1000000]
        time per batch of the in-memory loader and of the streaming loader (one epoch, batch 4096, no model) as a
        share of a DeepFM training step (forward, backward, Adam) timed on the same batches.
    python benchmarks/train.py scale [--sizes 1000000,4000000,16000000] [--steps 200]
        per size: DeepFM samples/s over --steps steps and the process's peak RSS (one fresh process per size:
        generate and prepare if needed, load, train, evaluate); in-memory loading for all but the largest size,
        which streams Parquet row groups.

Figures go to stdout as a table and as one JSON line (``--json FILE`` also writes it). Threads: torch default.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_deepfm import predict_reference, train_reference  # noqa: E402

from ctr.config import load_config  # noqa: E402
from ctr.data.generate import generate_criteo  # noqa: E402
from ctr.data.loader import iterate_batches, load_split, stream_batches  # noqa: E402
from ctr.data.prepare import prepare_data  # noqa: E402
from ctr.metrics import auc, logloss  # noqa: E402
from ctr.models import build_model, get_model, list_models  # noqa: E402
from ctr.train.optim import build_optimizer  # noqa: E402
from ctr.train.run import train_run  # noqa: E402
from ctr.types import Schema  # noqa: E402
from prepare import peak_rss_mib  # noqa: E402

DEEPFM = [
    "model.name=deepfm",
    "model.embed_dim=16",
    "model.hidden=[400, 400, 400]",
    "train.batch_size=4096",
    "train.lr=0.001",
    "train.epochs=1",
    "train.progress=false",
]
NORMDNN = {"numeric": {"name": "ln", "eps": 1e-6}, "categorical": {"name": "bn", "scope": "dim"}, "mlp": "vo_ln"}


def data_file(args) -> Path:
    return Path(args.data) if args.data else generated_file(args.rows)


def generated_file(rows: int) -> Path:
    """``rows`` generated Criteo-format rows (seed 0), written on first use and reused."""
    path = Path(tempfile.gettempdir()) / "ctr_bench" / f"criteo_{rows}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_criteo(path, rows=rows, seed=0)
    return path


def compare(args) -> dict:
    path = data_file(args)
    cfg = load_config([], DEEPFM + [f"data.path={path}", f"train.precision={args.precision}", *args.set])
    prepared = prepare_data(cfg.data)
    train, test = load_split(prepared, "train"), load_split(prepared, "test")
    vocab = [f.vocab_size for f in prepared.schema.id_fields]
    y = test.label.double().numpy()
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = load_config(
            [], DEEPFM + [f"data.path={path}", f"train.precision={args.precision}", f"train.seed={seed}", *args.set]
        )
        ours = train_run(cfg, Path(tempfile.mkdtemp(prefix="ctr_bench_run_")), prepared=prepared)
        model, ref_rate, ref_sec = train_reference(
            train.ids, train.dense, train.label, vocab, batch_size=4096, lr=1e-3, seed=seed
        )
        logits = predict_reference(model, test.ids, test.dense)
        runs.append(
            {
                "seed": seed,
                "ctr": {**ours["test"], "samples_per_sec": ours["train"]["samples_per_sec"]},
                "hand_written": {
                    "auc": auc(y, logits),
                    "logloss": logloss(y, 1 / (1 + np.exp(-logits))),
                    "samples_per_sec": ref_rate,
                },
            }
        )
        print(
            f"seed {seed}: ctr AUC {runs[-1]['ctr']['auc']:.5f} {runs[-1]['ctr']['samples_per_sec']:,.0f}/s; "
            f"hand-written AUC {runs[-1]['hand_written']['auc']:.5f} {ref_rate:,.0f}/s",
            flush=True,
        )
    res = {
        "benchmark": "compare",
        "data": str(path),
        "train_rows": len(train),
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "runs": runs,
    }
    print(f"{'mean over ' + str(len(runs)) + ' seeds':22} {'test AUC':>10} {'logloss':>10} {'samples/s':>12}")
    for k in ("ctr", "hand_written"):
        res[k] = {m: float(np.mean([r[k][m] for r in runs])) for m in ("auc", "logloss", "samples_per_sec")}
        res[k]["auc_std"] = float(np.std([r[k]["auc"] for r in runs], ddof=1)) if len(runs) > 1 else float("nan")
        r = res[k]
        print(f"{k:22} {r['auc']:10.5f} {r['logloss']:10.5f} {r['samples_per_sec']:12,.0f}")
    res["speed_ratio"] = res["ctr"]["samples_per_sec"] / res["hand_written"]["samples_per_sec"]
    res["auc_delta"] = res["ctr"]["auc"] - res["hand_written"]["auc"]
    print(f"speed ratio ctr / hand-written: {res['speed_ratio']:.3f}; mean AUC delta: {res['auc_delta']:+.5f}")
    return res


def models(args) -> dict:
    path = data_file(args)
    names = args.models.split(",") if args.models else list_models()
    precisions = args.precision.split(",")
    gflops = {p: gemm_gflops(p) for p in precisions}
    rows = []
    print(
        f"GEMM rate (the MLP's products at batch 4096): {', '.join(f'{p} {g:.0f} GFLOP/s' for p, g in gflops.items())}"
    )
    print("| model | norms | precision | test AUC | logloss | samples/s | MFLOP/sample | bound | share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for variant in args.norms.split(","):
            for precision in precisions:
                over = [
                    f"model.name={name}",
                    f"data.path={path}",
                    "train.progress=false",
                    f"train.max_steps={args.steps}",
                    "train.epochs=1",
                    f"train.batch_size={args.batch_size}",
                    f"train.precision={precision}",
                    *args.set,
                ]
                stages = get_model(name).stages
                if variant == "normdnn":
                    if not set(NORMDNN) & set(stages):
                        continue
                    over += [f"norm.{s}={json.dumps(v)}" for s, v in NORMDNN.items() if s in stages]
                cfg = load_config([], over)
                out = Path(tempfile.mkdtemp(prefix=f"ctr_bench_{name}_"))
                r = train_run(cfg, out)
                mflop = forward_mflop(cfg)
                # forward + backward = 3x the forward's products (the backward's two per forward product)
                bound = gflops[precision] * 1e3 / (3 * mflop) if mflop else None
                speed = r["train"]["samples_per_sec"]
                row = {
                    "model": name,
                    "norms": variant,
                    "precision": precision,
                    "test_auc": r["test"]["auc"],
                    "test_logloss": r["test"]["logloss"],
                    "samples_per_sec": speed,
                    "mflop_per_sample": mflop,
                    "bound_samples_per_sec": bound,
                    "share_of_bound": speed / bound if bound else None,
                    "steps": args.steps or "1 epoch",
                    "batch_size": args.batch_size,
                }
                rows.append(row)
                shown = f"{bound:,.0f} | {speed / bound:.2f}" if bound else "- | -"
                print(
                    f"| {name} | {variant} | {precision} | {r['test']['auc']:.4f} | {r['test']['logloss']:.4f} | "
                    f"{speed:,.0f} | {mflop:.2f} | {shown} |",
                    flush=True,
                )
    return {
        "benchmark": "models",
        "data": str(path),
        "threads": torch.get_num_threads(),
        "gemm_gflops": gflops,
        "rows": rows,
    }


def gemm_gflops(precision: str) -> float:
    """GFLOP/s of the DeepFM MLP's forward and backward products at batch 4096 in ``precision`` (fp32 or bf16)."""
    return gemm_rates()[{"fp32": "float32", "bf16": "bfloat16"}[precision]]["gflops"]


def gemm(args) -> dict:
    """Time the DeepFM MLP's forward+backward matrix products alone at batch 4096 (F=39, D=16)."""
    res = {"benchmark": "gemm", "threads": torch.get_num_threads(), "batch": 4096, "mlp": GEMM_DIMS, **gemm_rates()}
    for name in ("float32", "bfloat16"):
        r = res[name]
        print(f"{name:9} {r['gflops']:8.1f} GFLOP/s -> MLP-bound limit {r['samples_per_sec_limit']:12,.0f} samples/s")
    return res


GEMM_DIMS = [39 * 16, 400, 400, 400, 1]


def gemm_rates() -> dict:
    b, dims = 4096, GEMM_DIMS
    flops = sum(6 * b * i * o for i, o in zip(dims, dims[1:]))  # forward 2*i*o, backward 4*i*o per sample
    res = {}
    for dtype in (torch.float32, torch.bfloat16):
        xs = [torch.randn(b, i, dtype=dtype) for i in dims[:-1]]
        ws = [torch.randn(i, o, dtype=dtype) for i, o in zip(dims, dims[1:])]
        gs = [torch.randn(b, o, dtype=dtype) for o in dims[1:]]

        def step(xs=xs, ws=ws, gs=gs):
            for x, w, g in zip(xs, ws, gs):
                x @ w, g @ w.T, x.T @ g

        for _ in range(3):
            step()
        n, t0 = 20, time.perf_counter()
        for _ in range(n):
            step()
        sec = (time.perf_counter() - t0) / n
        res[str(dtype).split(".")[-1]] = {"gflops": flops / sec / 1e9, "samples_per_sec_limit": b / sec}
    return res


def adam(args) -> dict:
    """Time one Adam step over DeepFM's parameters with an embedding table of ``--table-rows`` x 16: the default
    per-parameter loop, foreach and fused implementations (ctr uses fused)."""
    shapes = [(args.table_rows, 16), (39 * 16, 400), (400, 400), (400, 400), (400, 1)]
    res = {"benchmark": "adam", "threads": torch.get_num_threads(), "shapes": shapes}
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(torch.randn(*s)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = torch.optim.Adam(params, lr=1e-3, **kw)
        for _ in range(3):
            opt.step()
        n, t0 = 20, time.perf_counter()
        for _ in range(n):
            opt.step()
        res[name] = ms = (time.perf_counter() - t0) / n * 1e3
        print(f"{name:8} {ms:7.2f} ms per step ({args.table_rows:,} x 16 table)")
    return res


def flops(args) -> dict:
    path = data_file(args)
    names = args.models.split(",") if args.models else list_models()
    rows = []
    print("| model | forward matmul MFLOP/sample | x DeepFM |\n|---|---|---|")
    for name in names:
        cfg = load_config([], [f"model.name={name}", f"data.path={path}", *args.set])
        rows.append({"model": name, "mflop_per_sample": forward_mflop(cfg)})
    base = next((r["mflop_per_sample"] for r in rows if r["model"] == "deepfm"), None)
    for r in rows:
        ratio = f"{r['mflop_per_sample'] / base:.1f}" if base else "-"
        print(f"| {r['model']} | {r['mflop_per_sample']:.2f} | {ratio} |")
    return {"benchmark": "flops", "data": str(path), "rows": rows}


def forward_mflop(cfg) -> float:
    """Matrix-product MFLOP per sample of one forward pass of ``cfg``'s model (256 validation rows; mm, bmm, conv
    and CPU attention, whose product FLOPs torch's counter does not map on CPU)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    prepared = prepare_data(cfg.data)
    batch = load_split(prepared, "valid").rows(slice(0, 256))
    model = build_model(prepared.schema, cfg.model, cfg.norm).eval()

    def attention_flop(q, k, v, *args, out_shape=None, **kwargs) -> int:  # shapes, as torch's formulas get them
        return sdpa_flop_count(q, k, v)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flop}
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter, torch.no_grad():
        model(batch)
    return counter.get_total_flops() / len(batch) / 1e6


def profile(args) -> dict:
    """Per op (forward and backward together), where a training step's time goes: torch.profiler over 3 steps of
    forward, loss and backward (no optimizer) at ``--batch-size``, each model's default config plus ``--set``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from ctr.train.memory import keep_freed_memory

    keep_freed_memory()  # as in training
    path = data_file(args)
    names = args.models.split(",") if args.models else list_models()
    res = {"benchmark": "profile", "threads": torch.get_num_threads(), "models": {}}
    for name in names:
        cfg = load_config([], [f"model.name={name}", f"data.path={path}", *args.set])
        prepared = prepare_data(cfg.data)
        batch = load_split(prepared, "train").rows(slice(0, args.batch_size))
        model = build_model(prepared.schema, cfg.model, cfg.norm)

        def step(model=model, batch=batch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label.float())
            loss.backward()

        for _ in range(2):
            step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        ops = [
            {"op": e.key, "ms_per_step": e.self_cpu_time_total / 3e3, "share": e.self_cpu_time_total / total}
            for e in events[:12]
        ]
        res["models"][name] = {"ms_per_step": total / 3e3, "ops": ops}
        print(f"\n{name}: {total / 3e3:.0f} ms per step (forward + backward, batch {args.batch_size})")
        print("| op | ms per step | share |\n|---|---|---|")
        for o in ops:
            print(f"| {o['op']} | {o['ms_per_step']:.0f} | {o['share']:.0%} |")
    return res


def allocator(args) -> dict:
    """Training-step samples/s (forward, loss, backward; no optimizer) at ``--batch-size`` with glibc's default
    malloc settings and with :func:`ctr.train.memory.keep_freed_memory` (what training applies), each in a fresh
    process so neither setting leaks into the other."""
    path = data_file(args)
    names = args.models.split(",") if args.models else list_models()
    prepare_data(load_config([], [f"data.path={path}"]).data)  # once, outside the timed processes
    ctx = multiprocessing.get_context("spawn")
    rows = []
    print("| model | default malloc: samples/s | kept heap: samples/s | ratio |\n|---|---|---|---|")
    for name in names:
        speeds = []
        for keep in (False, True):
            with ctx.Pool(1) as pool:
                speeds.append(pool.apply(step_speed, (name, str(path), args.batch_size, keep, args.set)))
        rows.append({"model": name, "default": speeds[0], "kept": speeds[1]})
        print(f"| {name} | {speeds[0]:,.0f} | {speeds[1]:,.0f} | {speeds[1] / speeds[0]:.2f} |", flush=True)
    return {"benchmark": "allocator", "threads": torch.get_num_threads(), "rows": rows}


def step_speed(name: str, path: str, batch_size: int, keep: bool, overrides: list[str], steps: int = 5) -> float:
    from ctr.train.memory import keep_freed_memory

    if keep:
        keep_freed_memory()
    cfg = load_config([], [f"model.name={name}", f"data.path={path}", *overrides])
    prepared = prepare_data(cfg.data)
    batch = load_split(prepared, "train").rows(slice(0, batch_size))
    model = build_model(prepared.schema, cfg.model, cfg.norm)

    def step():
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label.float()).backward()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch_size * steps / (time.perf_counter() - t0)


def loader(args) -> dict:
    path = data_file(args)
    cfg = load_config([], DEEPFM + [f"data.path={path}"])
    prepared = prepare_data(cfg.data)
    train = load_split(prepared, "train")
    bs = cfg.train.batch_size

    def per_batch(batches) -> tuple[float, int]:
        t0, n = time.perf_counter(), 0
        for _ in batches:
            n += 1
        return (time.perf_counter() - t0) / max(n, 1), n

    mem, n = per_batch(iterate_batches(train, bs, shuffle=True, seed=0, epoch=1))
    stream, _ = per_batch(stream_batches(prepared, "train", bs, cfg.data.shuffle_buffer, seed=0, epoch=1))
    torch.manual_seed(0)
    model = build_model(prepared.schema, cfg.model, cfg.norm)
    opt = build_optimizer(model, cfg.train)
    batches = [b for _, b in zip(range(40), iterate_batches(train, bs, shuffle=True, seed=0, epoch=1))]
    for i, b in enumerate(batches):
        if i == 10:  # 10 warm-up steps
            t0 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b), b.label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t0) / (len(batches) - 10)
    res = {
        "benchmark": "loader",
        "data": str(path),
        "batches": n,
        "batch_size": bs,
        "threads": torch.get_num_threads(),
        "step_ms": step * 1e3,
        "in_memory_ms": mem * 1e3,
        "streaming_ms": stream * 1e3,
        "in_memory_share": mem / (mem + step),
        "streaming_share": stream / (stream + step),
    }
    print(f"DeepFM step (forward, backward, Adam): {step * 1e3:7.2f} ms/batch")
    print(f"in-memory loader: {mem * 1e3:7.2f} ms/batch = {100 * res['in_memory_share']:.1f}% of a step with loading")
    print(
        f"streaming loader: {stream * 1e3:7.2f} ms/batch = {100 * res['streaming_share']:.1f}% of a step with loading"
    )
    return res


def scale(args) -> dict:
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    print("| rows | loading | embedding rows | samples/s | peak RSS MiB |\n|---|---|---|---|---|")
    for n in sizes:
        streaming = n == max(sizes) and len(sizes) > 1
        code = (
            f"import sys, json, tempfile; sys.argv = ['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import train as b; print('RESULT', json.dumps(b.scale_child({n}, {args.steps}, {streaming})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        r = json.loads(out.split("RESULT", 1)[1])
        rows.append(r)
        print(
            f"| {n:,} | {'streaming' if streaming else 'in memory'} | {r['embedding_rows']:,} | {r['samples_per_sec']:,.0f} "
            f"| {r['peak_rss_mib']:,.0f} |",
            flush=True,
        )
    return {"benchmark": "scale", "steps": args.steps, "threads": torch.get_num_threads(), "rows": rows}


def scale_child(n: int, steps: int, streaming: bool) -> dict:
    """One size of :func:`scale`, in a fresh process."""
    cfg = load_config(
        [],
        DEEPFM
        + [
            f"data.path={generated_file(n)}",
            "train.progress=false",
            f"train.max_steps={steps}",
            f"data.streaming={str(streaming).lower()}",
        ],
    )
    out = Path(tempfile.mkdtemp(prefix="ctr_bench_scale_"))
    r = train_run(cfg, out)
    return {
        "rows": n,
        "streaming": streaming,
        "steps": steps,
        "samples_per_sec": r["train"]["samples_per_sec"],
        "peak_rss_mib": peak_rss_mib(),
        "test_auc": r["test"]["auc"],
        "embedding_rows": Schema.from_json(out / "schema.json").id_rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "what", choices=["compare", "models", "gemm", "adam", "flops", "profile", "allocator", "loader", "scale"]
    )
    p.add_argument("--table-rows", type=int, default=625_460, help="adam: embedding rows (default: the 16M-row file's)")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--data")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--models")
    p.add_argument("--norms", default="default,normdnn", help="models: default (each model's config) and/or normdnn")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--seeds", default="2024,1,2,3,4,5", help="compare: one run of each loop per seed")
    p.add_argument("--sizes", default="1000000,4000000,16000000", help="scale: generated rows per size")
    p.add_argument("--json")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="compare, models: config override for every run"
    )
    args = p.parse_args()
    res = {
        "compare": compare,
        "models": models,
        "gemm": gemm,
        "adam": adam,
        "flops": flops,
        "profile": profile,
        "allocator": allocator,
        "loader": loader,
        "scale": scale,
    }[args.what](args)
    line = json.dumps(res)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
