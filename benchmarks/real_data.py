"""Train LR and DeepFM with each dataset preset on small public samples of the real logs; print a table.

    python benchmarks/real_data.py --root DIR [--models lr,deepfm] [--epochs 10] [--datasets frappe,avazu,...]

``DIR`` holds the public samples in these sub-directories (absent ones are skipped):

    criteo_kaggle/train_head_10109.txt          Criteo Kaggle, first rows of train.txt (one file, split 8:1:1)
    avazu/avazu_train_head_9999.csv             Avazu, first rows of train (one file, split 8:1:1)
    frappe/frappe_validation.csv, frappe_test.csv    Frappe (NFM's validation file to train on, its test file to test)
    ipinyou_2997/ipinyou2997_train.csv, ipinyou2997_test.csv   iPinYou advertiser 2997 (FNN/PNN form)
    criteo_attribution_small/small_train.csv.gz, small_valid.csv.gz   Criteo attribution sample
    taobao_ad_tiny/train_sample.csv, test_sample.csv   Taobao ads joined as in BARS (a tiny sample)

Where a sample has a train and a test file, the train file's last 10% of rows (30% below 1,000 rows) is the validation split (early
stopping) and the test file is the test split. Each run uses the preset's protocol (``configs/datasets``) with
``train.epochs`` and early stopping on validation AUC; seconds are the whole run (preparation included).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctr.config import load_config  # noqa: E402
from ctr.train.run import train_run  # noqa: E402

# preset -> (train file or single file, test file or None)
SAMPLES = {
    "criteo": ("criteo_kaggle/train_head_10109.txt", None),
    "avazu": ("avazu/avazu_train_head_9999.csv", None),
    "frappe": ("frappe/frappe_validation.csv", "frappe/frappe_test.csv"),
    "ipinyou": ("ipinyou_2997/ipinyou2997_train.csv", "ipinyou_2997/ipinyou2997_test.csv"),
    "criteo_attribution": (
        "criteo_attribution_small/small_train.csv.gz",
        "criteo_attribution_small/small_valid.csv.gz",
    ),
    "taobao_ad": ("taobao_ad_tiny/train_sample.csv", "taobao_ad_tiny/test_sample.csv"),  # 100 + 100 rows
}


def split_directory(train: Path, test: Path, out: Path) -> Path:
    """``out`` with train.csv (the train file's first rows), valid.csv (the rest) and test.csv."""
    out.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(train, dtype=str, keep_default_na=False)
    cut = int(len(df) * (0.9 if len(df) >= 1000 else 0.7))  # a tiny sample needs both classes in validation
    df.iloc[:cut].to_csv(out / "train.csv", index=False)
    df.iloc[cut:].to_csv(out / "valid.csv", index=False)
    pd.read_csv(test, dtype=str, keep_default_na=False).to_csv(out / "test.csv", index=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="directory holding the samples (see above)")
    p.add_argument("--models", default="lr,deepfm")
    p.add_argument("--datasets", default=",".join(SAMPLES))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args()
    root = Path(args.root)
    work = Path(tempfile.mkdtemp(prefix="ctr-real-"))
    rows = []
    try:
        for name in args.datasets.split(","):
            train_rel, test_rel = SAMPLES[name]
            train = root / train_rel
            if not train.is_file() or (test_rel and not (root / test_rel).is_file()):
                print(f"{name}: sample not found under {root}, skipped", file=sys.stderr)
                continue
            path = split_directory(train, root / test_rel, work / name) if test_rel else train
            lines = len(pd.read_csv(train, dtype=str)) if test_rel else sum(1 for _ in open(train))
            batch_size = min(args.batch_size, max(16, lines // 8))  # the tiny samples still get several steps
            for model in args.models.split(","):
                cfg = load_config(
                    [],
                    [
                        f"data.dataset={name}",
                        f"data.path={path}",
                        f"data.cache_dir={work / 'cache'}",
                        f"model.name={model}",
                        f"train.epochs={args.epochs}",
                        f"train.batch_size={batch_size}",
                        f"train.seed={args.seed}",
                        "train.progress=false",
                    ],
                )
                t0 = time.perf_counter()
                r = train_run(cfg, work / "runs" / f"{name}-{model}")
                seconds = time.perf_counter() - t0
                schema = load_schema(work / "runs" / f"{name}-{model}")
                rows.append(
                    {
                        "dataset": name,
                        "model": model,
                        "train/valid/test rows": "/".join(f"{schema.rows[s]:,}" for s in ("train", "valid", "test")),
                        "fields": len(schema.fields),
                        "test AUC": f"{r['test']['auc']:.4f}",
                        "test logloss": f"{r['test']['logloss']:.4f}",
                        "gAUC": f"{r['test']['gauc']:.4f}" if "gauc" in r["test"] else "-",
                        "calibration": f"{r['test']['calibration']:.3f}",
                        "best epoch": r["train"]["best_epoch"],
                        "seconds": f"{seconds:.1f}",
                    }
                )
                print(rows[-1], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rows:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + "---|" * len(rows[0]))
        for r in rows:
            print("| " + " | ".join(str(v) for v in r.values()) + " |")


def load_schema(run: Path):
    from ctr.types import Schema

    return Schema.from_json(run / "schema.json")


if __name__ == "__main__":
    main()
