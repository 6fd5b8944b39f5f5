"""Kill/resume trials: train, kill the process at random steps, resume, compare with an uninterrupted run.

    python benchmarks/reliability.py --trials 20 [--signal KILL|INT|TERM] [--torchrun 2] [--streaming]
    python benchmarks/reliability.py --guard-cost     # time of the divergence guard's check against a step

Each trial sends the signal after a random optimizer step (tests/_faults.py injects it), resumes with
``train.py --resume`` and checks that the best weights are bitwise those of the uninterrupted run and that the
test metrics are equal. Prints a markdown table (one row per trial) and the count of identical outcomes.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [
    "train.epochs=3",
    "train.patience=3",
    "train.batch_size=128",
    "train.lr=0.003",
    "train.checkpoint_every=10",
    "train.progress=false",
    "train.threads=1",
    "model.name=dnn",
    "model.hidden=[32, 32]",
    "model.dropout=0.3",
    "model.embed_dim=4",
    "data.min_count=2",
]


def launcher(processes: int) -> list[str]:
    if processes <= 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]


def same(a: Path, b: Path) -> tuple[bool, bool]:
    wa, wb = (torch.load(d / "model.pt", weights_only=True) for d in (a, b))
    weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = (json.loads((d / "results.json").read_text())["test"] for d in (a, b))
    return weights, ra == rb


def guard_cost(threads: int = 1, steps: int = 12) -> None:
    """Median time of one guard check (loss and per-group gradient norms) against a training step of the
    default job (DeepFM on the bundled sample, batch 4096)."""
    import statistics
    import time

    from ctr.config import load_config
    from ctr.data.loader import iterate_batches, load_split
    from ctr.data.prepare import prepare_data
    from ctr.models import build_model
    from ctr.train.epoch import EpochTrainer, weighted_bce
    from ctr.train.guard import nonfinite_parts

    torch.set_num_threads(threads)
    cfg = load_config([], ["train.progress=false"])
    prepared = prepare_data(cfg.data)
    model = build_model(prepared.schema, cfg.model, cfg.norm)
    trainer = EpochTrainer(model, cfg.train, torch.device("cpu"), steps)
    batches = iterate_batches(load_split(prepared, "train"), cfg.train.batch_size, True, 1, 1, drop_last=True)
    step_s, check_s = [], []
    for _, batch in zip(range(steps), batches):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        step_s.append(time.perf_counter() - t0)
        loss = weighted_bce(model(batch), batch.label, None)  # gradients to check (the step cleared its own)
        trainer.optimizer.zero_grad()
        loss.backward()
        t0 = time.perf_counter()
        nonfinite_parts(loss, trainer.optimizer.param_groups, True)
        check_s.append(time.perf_counter() - t0)
    step, check = statistics.median(step_s), statistics.median(check_s)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{cfg.model.name}, {params:,} parameters, batch {cfg.train.batch_size}, {threads} thread(s): "
        f"step {step * 1e3:.1f} ms (check included), check {check * 1e3:.2f} ms = {check / step:.1%} of a step"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--signal", default="KILL", choices=["KILL", "INT", "TERM"])
    p.add_argument("--torchrun", type=int, default=1, help="processes per run (torchrun when > 1)")
    p.add_argument("--streaming", action="store_true", help="data.streaming=true")
    p.add_argument("--rows", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill steps")
    p.add_argument("--guard-cost", action="store_true", help="time the divergence guard instead")
    args = p.parse_args()
    if args.guard_cost:
        return guard_cost()
    from ctr.data.generate import generate_criteo

    settings = SETTINGS + (["data.streaming=true"] if args.streaming else [])
    sets = [a for s in settings for a in ("--set", s)]
    run = launcher(args.torchrun)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "clicks.txt"
        generate_criteo(raw, rows=args.rows, seed=11)
        ref = tmp / "ref"
        subprocess.run([*run, str(ROOT / "train.py"), "--data", str(raw), "--out", str(ref), *sets], check=True)
        steps = max(json.loads(r)["step"] for r in (ref / "metrics.jsonl").read_text().splitlines())
        rows, identical = [], 0
        for trial in range(1, args.trials + 1):
            at = rng.randint(1, steps - 1)
            out = tmp / f"trial{trial}"
            fault = ["--fault-signal", args.signal, "--fault-step", str(at), "--fault-rank", "0", "--"]
            killed = subprocess.run(
                [*run, str(ROOT / "tests/_faults.py"), *fault, "--data", str(raw), "--out", str(out), *sets],
                capture_output=True,
            )
            ck = out / "checkpoint.pt"
            from_step = torch.load(ck, weights_only=True)["trainer"]["step"] if ck.exists() else 0
            resumed = subprocess.run([*run, str(ROOT / "train.py"), "--resume", str(out)], capture_output=True)
            weights, metrics = same(ref, out) if resumed.returncode == 0 else (False, False)
            identical += weights and metrics
            rows.append((trial, at, killed.returncode, from_step, resumed.returncode, weights, metrics))
    print("| trial | killed after step | exit | resumed from step | resume exit | same weights | same test metrics |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    print(
        f"\n{identical}/{args.trials} trials identical to the uninterrupted run ({args.signal}, "
        f"{args.torchrun} process(es){', streaming' if args.streaming else ''})"
    )


if __name__ == "__main__":
    main()
