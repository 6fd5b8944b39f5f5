"""End to end through the command lines: train.py -> run directory -> evaluate.py, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ctr.data.generate import generate_criteo

ROOT = Path(__file__).resolve().parent.parent
FAST = [
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=512",
    "--set",
    "train.lr=0.005",
    "--set",
    "model.hidden=[32, 32]",
    "--set",
    "model.embed_dim=4",
    "--set",
    "train.progress=false",
    "--set",
    "data.min_count=2",
]


def run(script, *args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "clicks.txt"
    generate_criteo(path, rows=20000, seed=3)
    return path


@pytest.fixture(scope="module")
def trained(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "deepfm"
    r = run("train.py", "--data", raw, "--out", out, *FAST)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(trained):
    out, stdout = trained
    for name in ("config.yaml", "schema.json", "model.pt", "metrics.jsonl", "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"valid", "test", "train"}
    assert set(results["test"]) == set(results["valid"]) == {"auc", "logloss", "calibration"}  # no groups declared
    assert {"samples_per_sec", "seconds", "epochs"} <= set(results["train"])
    assert results["test"]["auc"] > 0.55, "the planted click model must be learnable"
    assert f"test: AUC {results['test']['auc']:.6f}" in stdout
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "valid_auc" in line]
    assert [e["epoch"] for e in epochs] == [1, 2]


@pytest.mark.slow
def test_evaluate_reproduces_test_metrics_and_writes_predictions(trained, tmp_path):
    out, _ = trained
    results = json.loads((out / "results.json").read_text())
    js, csv, pq = tmp_path / "m.json", tmp_path / "p.csv", tmp_path / "p.parquet"
    r = run("evaluate.py", "--run", out, "--json", js, "--predictions", csv)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(js.read_text())
    assert metrics["auc"] == pytest.approx(results["test"]["auc"], abs=1e-9)
    assert metrics["logloss"] == pytest.approx(results["test"]["logloss"], abs=1e-9)
    prob = pd.read_csv(csv)["probability"]
    assert len(prob) == metrics["rows"] and prob.between(0, 1).all()
    assert run("evaluate.py", "--run", out, "--predictions", pq).returncode == 0
    assert pd.read_parquet(pq)["probability"].tolist() == pytest.approx(prob.tolist(), abs=1e-12)


@pytest.mark.slow
def test_evaluate_on_another_raw_file_maps_unseen_values_to_oov(trained, tmp_path):
    out, _ = trained
    other = tmp_path / "other.txt"
    generate_criteo(other, rows=500, seed=99)
    r = run("evaluate.py", "--run", out, "--data", other, "--json", tmp_path / "m.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["rows"] == 500


@pytest.mark.slow
def test_same_seed_same_auc(raw, tmp_path, trained):
    out, _ = trained
    again = tmp_path / "again"
    assert run("train.py", "--data", raw, "--out", again, *FAST).returncode == 0
    a = json.loads((out / "results.json").read_text())["test"]["auc"]
    b = json.loads((again / "results.json").read_text())["test"]["auc"]
    assert abs(a - b) < 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["--set", "norm.mlp=nosuch"], "unknown norm 'nosuch'"),
        (["--set", "norm.cin=ln"], "has no 'cin' stage"),
        (["--data", "/nonexistent/file.txt"], "no such file"),
    ],
)
@pytest.mark.slow
def test_train_errors_are_one_line_without_traceback(args, message, tmp_path):
    r = run("train.py", "--out", tmp_path / "x", *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_bad_row_error_names_file_line_and_column(tmp_path, raw):
    bad = tmp_path / "bad.txt"
    lines = raw.read_text().splitlines()[:50]
    cols = lines[20].split("\t")
    cols[3] = "abc"  # I3
    lines[20] = "\t".join(cols)
    bad.write_text("\n".join(lines) + "\n")
    r = run("train.py", "--data", bad, "--out", tmp_path / "x", *FAST)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bad.txt" in r.stderr and "line 21" in r.stderr and "I3" in r.stderr


@pytest.mark.slow
def test_evaluate_rejects_an_incomplete_run_directory(tmp_path):
    r = run("evaluate.py", "--run", tmp_path)
    assert r.returncode == 2 and "not a complete run directory" in r.stderr


@pytest.mark.slow
def test_sparse_embeddings_train_end_to_end(raw, tmp_path, trained):
    out = tmp_path / "sparse"
    r = run("train.py", "--data", raw, "--out", out, *FAST, "--set", "train.sparse_embeddings=true")
    assert r.returncode == 0, r.stderr
    sparse = json.loads((out / "results.json").read_text())["test"]["auc"]
    dense = json.loads((trained[0] / "results.json").read_text())["test"]["auc"]
    assert sparse > 0.6 and abs(sparse - dense) < 0.05  # lazy Adam: close to dense Adam, not identical


@pytest.mark.slow
def test_unwritable_cache_or_run_directory_is_one_line(tmp_path, raw):
    """A path below a regular file cannot be created (even by root): the error names it, without a traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = run("train.py", "--data", raw, "--out", tmp_path / "x", *FAST, "--set", f"data.cache_dir={blocker / 'cache'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert f"cannot write prepared data under {blocker / 'cache'}" in r.stderr and "data.cache_dir" in r.stderr
    r = run("train.py", "--data", raw, "--out", blocker / "run", *FAST)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert str(blocker / "run") in r.stderr


@pytest.mark.slow
def test_prepare_command_prepares_once_for_train(tmp_path, raw):
    cache = tmp_path / "cache"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "prepare.py"),
            "--data",
            str(raw),
            "--set",
            "data.min_count=2",
            "--set",
            f"data.cache_dir={cache}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    prepared = r.stdout.splitlines()[0].removeprefix("prepared: ")
    assert Path(prepared).parent == cache and (Path(prepared) / "schema.json").is_file()
    assert "rows: train 1" in r.stdout and "bad rows skipped: 0" in r.stdout
    r = run("train.py", "--data", raw, "--out", tmp_path / "run", *FAST, "--set", f"data.cache_dir={cache}")
    assert r.returncode == 0, r.stderr
    assert f"data {prepared}" in r.stderr and [p.name for p in cache.iterdir()] == [Path(prepared).name]


@pytest.mark.parametrize("sparse", [False, True])
def test_dense_adam_over_a_big_table_prints_the_sparse_hint(raw, tmp_path, monkeypatch, capsys, sparse):
    from ctr.config import load_config
    from ctr.train import run as run_module

    monkeypatch.setattr(run_module, "SPARSE_HINT_ROWS", 10)  # the 20k-row file has a few thousand embedding rows
    overrides = [a for a in FAST if a != "--set"] + [
        f"data.path={raw}",
        "train.max_steps=1",
        f"train.sparse_embeddings={sparse}",
    ]
    run_module.train_run(load_config([], overrides), tmp_path / "run")
    err = capsys.readouterr().err
    assert ("hint: " in err and "embedding rows" in err and "train.sparse_embeddings=true" in err) == (not sparse)


@pytest.mark.slow
def test_data_commands_do_not_import_torch(tmp_path, raw):
    """Reading, generating and preparing data never import torch (1 s and ~290 MB): only tensors need it."""
    code = (
        "import sys, ctr.data.generate, ctr.data.criteo, ctr.data.prepare, ctr.cli; "
        f"sys.argv = ['prepare', '--data', {str(raw)!r}, '--set', 'data.cache_dir={tmp_path}', '--set', 'data.min_count=2']; "
        "ctr.cli.prepare_main(None); assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
