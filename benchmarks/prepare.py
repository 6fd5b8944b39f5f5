"""Speed and memory of ``prepare_data`` against pyarrow merely reading the same raw file.

For each size N (generated Criteo-format rows, cached in ``--dir``), every measurement runs in a fresh Python
subprocess: ``pyarrow.csv.read_csv`` with default options (tab-delimited, no header; the reference of the
target), pyarrow's streaming reader ``pyarrow.csv.open_csv`` with the same options iterated to the end (what
reading costs under prepare's constraint of never holding the file; shown for context), and a full
``prepare_data`` (both passes, Parquet + schema) into an empty cache directory. Each mode first runs once
uncounted, then ``--repeats`` times back to back; times are the best of those. On the VM these figures come
from, a process that allocates much fresh memory right after another process (``read_csv`` holds the whole
table: 1 GB per 1M rows) is often 2-3x slower than its warm runs, so interleaving read and prepare runs would
flatter prepare; warm best-of times compare the two pieces of work. CPU seconds (user + system, all threads)
are those of the best-timed run: how much work each mode does, whatever its parallelism. Peak RSS is the child's
``VmHWM`` (the largest over the counted runs). ``ratio`` is prepare speed / read_csv speed (>= 0.5 is the target),
``ratio_stream`` prepare speed / streaming-read speed; ``rss_growth`` is prepare's peak RSS at the largest N over the
smallest.

Command::

    python benchmarks/prepare.py                      # N = 1M and 4M, 3 repeats, files in /tmp/ctr_bench
    python benchmarks/prepare.py --rows 1000000 --repeats 5 --dir /data/bench
    python benchmarks/prepare.py --rows 1000000 --decimal-categories   # categorical values of 1-7 characters
    python benchmarks/prepare.py --rows 1000000 --avazu   # a headered CSV of Avazu's shape, the avazu preset

With ``--avazu`` the file is a generated headered CSV with Avazu's 24 columns (an id, the label, a YYMMDDHH hour,
21 categorical columns of hex ids and small integers) and prepare uses the ``avazu`` preset; the references read
it comma-separated with its header.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str, cache: str, dataset: str) -> None:
    """Run one measurement in this (fresh) process and print its JSON."""
    sys.path.insert(0, str(ROOT))
    if mode in ("read", "stream"):  # pyarrow's defaults (Criteo: tab-delimited, no header): whole file or streamed
        import pyarrow.csv as pacsv

        if dataset == "avazu":
            options = {}
        else:
            options = dict(
                read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                parse_options=pacsv.ParseOptions(delimiter="\t"),
            )
        start, cpu = time.perf_counter(), _cpu_seconds()
        if mode == "read":
            rows = pacsv.read_csv(path, **options).num_rows
        else:
            rows = sum(batch.num_rows for batch in pacsv.open_csv(path, **options))
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    else:
        import dataclasses

        from ctr.config import load_config
        from ctr.data.prepare import prepare_data

        start, cpu = time.perf_counter(), _cpu_seconds()
        sets = [] if dataset == "criteo" else [f"data.dataset={dataset}"]
        data = load_config([], sets).data
        prepared = prepare_data(dataclasses.replace(data, path=path, cache_dir=cache), progress=False)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        rows = sum(prepared.schema.rows.values())
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "peak_rss_mib": peak_rss_mib()}))


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def measure(mode: str, path: Path, repeats: int, dataset: str = "criteo") -> dict[str, float]:
    best: dict[str, float] = {}
    for i in range(repeats + 1):  # run 0 warms up and is not counted (see the module docstring)
        cache = tempfile.mkdtemp(prefix="ctr_bench_cache_")
        try:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path), cache, dataset],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        r = json.loads(out.strip().splitlines()[-1])
        if i == 0:
            continue
        if not best or r["seconds"] < best["seconds"]:
            best = {**r, "peak_rss_mib": max(r["peak_rss_mib"], best.get("peak_rss_mib", 0.0))}
        else:
            best["peak_rss_mib"] = max(best["peak_rss_mib"], r["peak_rss_mib"])
    return best


def decimal_categories(path: Path) -> Path:
    """The same rows with each categorical value written as a decimal number below 10**7 (cached beside ``path``)."""
    from ctr.data.criteo import NUM_INT

    out = path.with_name(path.stem + "_decimal.txt")
    if not out.exists():
        print(f"writing {out} ...", file=sys.stderr)
        with open(path) as src, open(out.with_suffix(".tmp"), "w") as dst:
            for line in src:
                cells = line.rstrip("\n").split("\t")
                cells[1 + NUM_INT :] = [str(int(c, 16) % 10_000_000) if c else "" for c in cells[1 + NUM_INT :]]
                dst.write("\t".join(cells) + "\n")
        out.with_suffix(".tmp").rename(out)
    return out


def avazu_shaped(path: Path, rows: int, seed: int) -> Path:
    """A headered CSV of ``rows`` rows with Avazu's columns and value shapes (cached at ``path``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.exists():
        return path
    print(f"generating {path} ...", file=sys.stderr)
    rng = np.random.default_rng(seed)

    def hex_ids(vocab: int) -> pa.Array:  # Zipf-like draws from ``vocab`` 8-hex-digit ids
        ranks = np.minimum(rng.zipf(1.3, rows) - 1, vocab - 1)
        return pa.array(np.char.mod("%08x", (ranks * 2654435761) % (1 << 32)))

    def small(values: list[int]) -> pa.Array:
        return pa.array(rng.choice(values, rows).astype(str))

    cols = {
        "id": pa.array(rng.integers(10**18, 10**19 - 1, rows, dtype=np.uint64).astype(str)),
        "click": pa.array((rng.random(rows) < 0.17).astype(np.int8).astype(str)),
        "hour": pa.array((14100000 + rng.integers(21, 31, rows) * 100 + rng.integers(0, 24, rows)).astype(str)),
        "C1": small([1001, 1002, 1005, 1007, 1008, 1010, 1012]),
        "banner_pos": small([0, 1, 2, 3, 4, 5, 7]),
    }
    for name, vocab in [
        ("site_id", 4737),
        ("site_domain", 7745),
        ("site_category", 26),
        ("app_id", 8552),
        ("app_domain", 559),
        ("app_category", 36),
        ("device_id", 2686408),
        ("device_ip", 6729486),
        ("device_model", 8251),
    ]:
        cols[name] = hex_ids(vocab)
    cols["device_type"] = small([0, 1, 2, 4, 5])
    cols["device_conn_type"] = small([0, 2, 3, 5])
    for name, vocab in [
        ("C14", 2626),
        ("C15", 8),
        ("C16", 9),
        ("C17", 435),
        ("C18", 4),
        ("C19", 68),
        ("C20", 172),
        ("C21", 60),
    ]:
        cols[name] = pa.array((np.minimum(rng.zipf(1.5, rows), vocab) * 7 + 15).astype(str))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pacsv.write_csv(pa.table(cols), tmp, pacsv.WriteOptions(quoting_style="none"))
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/ctr_bench", help="where generated files are kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decimal-categories",
        action="store_true",
        help="write the categorical values as decimal numbers (1-7 characters) instead of 8 hex digits",
    )
    parser.add_argument("--avazu", action="store_true", help="a headered CSV of Avazu's shape, prepared by its preset")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "PATH", "CACHE", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(ROOT))
    from ctr.data.generate import generate_criteo

    results = []
    dataset = "avazu" if args.avazu else "criteo"
    for n in args.rows:
        if args.avazu:
            path = avazu_shaped(Path(args.dir) / f"avazu_{n}_seed{args.seed}.csv", n, args.seed)
        else:
            path = Path(args.dir) / f"criteo_{n}_seed{args.seed}.txt"
            if not path.exists():
                print(f"generating {path} ...", file=sys.stderr)
                generate_criteo(path, n, seed=args.seed)
        if args.decimal_categories:
            path = decimal_categories(path)
        read = measure("read", path, args.repeats, dataset)
        stream = measure("stream", path, args.repeats, dataset)
        prep = measure("prepare", path, args.repeats, dataset)
        results.append(
            {
                "rows": n,
                "bytes": path.stat().st_size,
                "read_s": round(read["seconds"], 3),
                "read_rows_per_s": round(n / read["seconds"]),
                "read_peak_rss_mib": round(read["peak_rss_mib"], 1),
                "stream_s": round(stream["seconds"], 3),
                "stream_peak_rss_mib": round(stream["peak_rss_mib"], 1),
                "prepare_s": round(prep["seconds"], 3),
                "prepare_rows_per_s": round(n / prep["seconds"]),
                "prepare_peak_rss_mib": round(prep["peak_rss_mib"], 1),
                "read_cpu_s": round(read["cpu_seconds"], 3),
                "stream_cpu_s": round(stream["cpu_seconds"], 3),
                "prepare_cpu_s": round(prep["cpu_seconds"], 3),
                "ratio": round(read["seconds"] / prep["seconds"], 3),
                "ratio_stream": round(stream["seconds"] / prep["seconds"], 3),
            }
        )
    print(
        f"{'rows':>10} {'read s':>7} {'stream s':>8} {'prep s':>7} {'prep rows/s':>12} {'ratio':>6} {'ratio_stream':>12} "
        f"{'RSS MiB: read':>13} {'stream':>7} {'prep':>7} {'CPU s: read':>11} {'stream':>7} {'prep':>7}"
    )
    for r in results:
        print(
            f"{r['rows']:>10,} {r['read_s']:>7.3f} {r['stream_s']:>8.3f} {r['prepare_s']:>7.3f} {r['prepare_rows_per_s']:>12,} "
            f"{r['ratio']:>6.2f} {r['ratio_stream']:>12.2f} {r['read_peak_rss_mib']:>13.1f} {r['stream_peak_rss_mib']:>7.1f} "
            f"{r['prepare_peak_rss_mib']:>7.1f} {r['read_cpu_s']:>11.3f} {r['stream_cpu_s']:>7.3f} {r['prepare_cpu_s']:>7.3f}"
        )
    summary = {"results": results}
    if len(results) > 1:
        summary["rss_growth"] = round(results[-1]["prepare_peak_rss_mib"] / results[0]["prepare_peak_rss_mib"], 3)
        print(
            f"prepare peak RSS at {results[-1]['rows']:,} rows / at {results[0]['rows']:,} rows: {summary['rss_growth']:.2f}"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
