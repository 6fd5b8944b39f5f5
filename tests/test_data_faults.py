"""Faults around preparation: a truncated or changing input, a full disk, two preparations at once, a preparation
killed outright, and an untrusted schema. Each gives a one-line error naming the path, or is survived, and never
leaves a cache that a later preparation would wrongly reuse."""

from __future__ import annotations

import errno
import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _tiny import config_section
from conftest import write_rows

import ctr.data.prepare as prepare
from ctr.data.cache_claim import OWNER_FILE, remove_stale_temp_dirs
from ctr.data.prepare import PreparedData, encode_source_split, prepare_data
from ctr.data.split import SPLITS
from ctr.errors import CTRError, DataError
from ctr.types import Schema

HERE = Path(__file__).resolve().parent


@pytest.fixture
def raw(tmp_path: Path, criteo_lines: list[str]) -> Path:
    return write_rows(tmp_path / "clicks.txt", criteo_lines[:400])


def config(path: Path, cache: Path, **changes):
    return config_section("data", path=str(path), cache_dir=str(cache), min_count=1, **changes)


def same_splits(a: PreparedData, b: PreparedData) -> bool:
    return all(pq.read_table(a.path(s)).equals(pq.read_table(b.path(s))) for s in SPLITS)


# ------------------------------------------------------------------------------------------------------ messages


def test_a_truncated_gz_names_the_file(tmp_path: Path, criteo_lines: list[str]) -> None:
    data = gzip.compress("".join(line + "\n" for line in criteo_lines[:400]).encode())
    path = tmp_path / "clicks.txt.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        prepare_data(config(path, tmp_path / "cache"), progress=False)
    assert str(e.value) == f"{path}: the file is truncated (its compressed data ends early)"


def test_quoted_values_are_escaped_and_cut(tmp_path: Path, criteo_lines: list[str]) -> None:
    """A cell with a terminal escape sequence prints escaped; a 5000-character cell prints its first 60."""
    lines = list(criteo_lines[:3])
    lines[1] = "\x1b[2J\x1b]0;pwned\x07" + lines[1][1:]
    path = write_rows(tmp_path / "t.txt", lines)
    with pytest.raises(DataError, match=r"t\.txt line 2, column label: label '\\x1b\[2J\\x1b\]0;pwned\\x07'") as e:
        prepare_data(config(path, tmp_path / "cache"), progress=False)
    assert str(e.value).isprintable()
    cells = criteo_lines[0].split("\t")
    path = write_rows(tmp_path / "t.txt", ["\t".join([cells[0], "7" * 5000, *cells[2:]])])
    with pytest.raises(DataError) as e:
        prepare_data(config(path, tmp_path / "cache"), progress=False)
    assert str(e.value).startswith(f"{path} line 1, column I1: '{'7' * 60}'... is outside the int64 range")


def grow(path: Path) -> None:
    with open(path, "a") as f:
        f.write(path.read_text().splitlines()[0] + "\n")


def shrink(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def rewrite(path: Path) -> None:
    """Same size and modification time, other contents: only the recorded hash can tell."""
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"\t", b" ", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    "change, detail",
    [(grow, r"size [\d,]+ -> [\d,]+ bytes"), (shrink, r"size [\d,]+ -> [\d,]+ bytes"), (rewrite, r"contents\)")],
)
def test_a_file_that_changes_while_prepared_is_refused(raw: Path, tmp_path: Path, monkeypatch, change, detail) -> None:
    read_rows_of = prepare.read_rows_of

    def changing(path, table, **read):  # the file changes once pass 1 has read it
        yield from read_rows_of(path, table, **read)
        change(path)

    monkeypatch.setattr(prepare, "read_rows_of", changing)
    pattern = rf"{raw}: the file changed while it was being prepared \({detail}"
    with pytest.raises(DataError, match=pattern):
        prepare_data(config(raw, tmp_path / "cache"), progress=False)
    assert not list((tmp_path / "cache").iterdir())


def test_a_read_error_caused_by_a_change_is_reported_as_the_change(raw: Path, tmp_path: Path, monkeypatch) -> None:
    def cut_while_read(path, table, **read):
        shrink(path)
        raise DataError(f"{path} line 201: expected 40 tab-separated columns, got 7")
        yield

    monkeypatch.setattr(prepare, "read_rows_of", cut_while_read)
    with pytest.raises(DataError, match="the file changed while it was being prepared"):
        prepare_data(config(raw, tmp_path / "cache"), progress=False)


# ---------------------------------------------------------------------------------------------------- full disk


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def dev_full(monkeypatch) -> None:
    """Parquet files opened on /dev/full, where every write fails with ENOSPC (a real full disk for pyarrow)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    os_file = prepare.pa.OSFile
    monkeypatch.setattr(prepare.pa, "OSFile", lambda path, mode: os_file("/dev/full", mode))


@pytest.mark.parametrize(
    "fill",
    [
        lambda mp: mp.setattr(prepare, "write_rows", no_space),  # pass 1's temporary file
        lambda mp: mp.setattr(prepare.pq.ParquetWriter, "write_table", no_space),  # pass 2, on the writer thread
        lambda mp: mp.setattr(Schema, "to_json", no_space),  # the schema, last
        dev_full,
    ],
    ids=["rows", "parquet", "schema", "dev-full"],
)
def test_a_full_disk_is_one_line_and_leaves_no_cache(raw: Path, tmp_path: Path, monkeypatch, fill) -> None:
    reference = prepare_data(config(raw, tmp_path / "reference"), progress=False)
    cache = tmp_path / "cache"
    with monkeypatch.context() as mp:
        fill(mp)
        with pytest.raises(CTRError) as e:
            prepare_data(config(raw, cache), progress=False)
    message = str(e.value)
    assert message.startswith(f"{cache / reference.dir.name}: cannot write the prepared data (No space left on device)")
    assert "\n" not in message
    assert not list(cache.iterdir())  # no temporary directory, no lock, no half-written cache
    again = prepare_data(config(raw, cache), progress=False)
    assert again.dir == cache / reference.dir.name and same_splits(again, reference)


# ----------------------------------------------------------------------------------- concurrent and killed runs


def worker(mode: str, raw: Path, cache: Path, signal: Path) -> subprocess.Popen:
    args = [sys.executable, str(HERE / "_prepare_worker.py"), mode, str(raw), str(cache), str(signal)]
    return subprocess.Popen(args, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow
def test_two_processes_preparing_one_cache_make_one_and_share_it(raw: Path, tmp_path: Path) -> None:
    cache, go = tmp_path / "cache", tmp_path / "go"
    workers = [worker("together", raw, cache, go) for _ in range(2)]
    wait_for(lambda: len(list(tmp_path.glob("go.*"))) == 2, "both workers to start")
    go.touch()
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err for _, err in outputs]
    dirs = {out.strip() for out, _ in outputs}
    assert len(dirs) == 1
    logs = [err for _, err in outputs]
    assert sum("prepared" in log and "rows into" in log for log in logs) == 1  # one did the work
    assert sum("using prepared data" in log for log in logs) == 1  # the other reused it
    assert [p.name for p in cache.iterdir()] == [Path(dirs.pop()).name]
    alone = prepare_data(config_section("data", path=str(raw), cache_dir=str(tmp_path / "alone"), min_count=1))
    assert same_splits(PreparedData.open(next(cache.iterdir())), alone)


@pytest.mark.slow
def test_the_temporary_directory_of_a_killed_preparation_is_removed_next_time(raw: Path, tmp_path: Path) -> None:
    cache, hung = tmp_path / "cache", tmp_path / "hung"
    w = worker("hang", raw, cache, hung)
    wait_for(hung.exists, "the worker to reach pass 1")
    w.kill()  # SIGKILL: no handler runs
    w.wait()
    (left,) = cache.glob(".tmp-*")
    assert json.loads((left / OWNER_FILE).read_text()) == {"pid": w.pid, "host": socket.gethostname()}
    prepared = prepare_data(config_section("data", path=str(raw), cache_dir=str(cache), min_count=1), progress=False)
    assert [p.name for p in cache.iterdir()] == [prepared.dir.name]


def temp_dir(root: Path, name: str, owner: object) -> Path:
    d = root / f".tmp-{name}"
    d.mkdir(parents=True)
    (d / OWNER_FILE).write_text(json.dumps(owner) if owner is not None else "{not json")
    return d


def test_only_temporary_directories_of_dead_owners_on_this_host_are_removed(raw: Path, tmp_path: Path) -> None:
    done = subprocess.run(["true"], check=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # exited and reaped: its pid names no process
    host = socket.gethostname()
    cache = tmp_path / "cache"
    dead = temp_dir(cache, "dead", {"pid": gone.pid, "host": host})
    kept = [
        temp_dir(cache, "alive", {"pid": os.getpid(), "host": host}),
        temp_dir(cache, "elsewhere", {"pid": gone.pid, "host": f"not-{host}"}),
        temp_dir(cache, "unreadable", None),
        temp_dir(cache, "group", {"pid": 0, "host": host}),  # pid 0 would signal a whole process group
    ]
    assert done.returncode == 0
    assert remove_stale_temp_dirs(cache) == [dead]
    prepare_data(config(raw, cache), progress=False)  # a preparation removes them too, and spares the rest
    assert all(d.is_dir() for d in kept) and not dead.exists()


# ---------------------------------------------------------------------------------------------- untrusted schema


@pytest.fixture
def prepared(raw: Path, tmp_path: Path) -> PreparedData:
    return prepare_data(config(raw, tmp_path / "cache"), progress=False)


def edit_schema(prepared: PreparedData, edit) -> Path:
    path = prepared.dir / "schema.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../../outside", "a name cannot hold a path separator"),
        ("/etc/passwd", "a name cannot hold a path separator"),
        ("C:\\\\x", "a name cannot hold a path separator"),
        ("..", "a name cannot be . or .."),
        ("", "a name must be a non-empty string"),
        ("I1\x00", "a name cannot hold control characters"),
        (7, "a name must be a non-empty string"),
    ],
)
def test_a_schema_with_a_field_name_that_could_be_a_path_is_refused(prepared: PreparedData, name, problem) -> None:
    path = edit_schema(prepared, lambda s: s["fields"][0].update(name=name))
    with pytest.raises(DataError) as e:
        PreparedData.open(prepared.dir)
    assert str(e.value).startswith(f"{path}: field ") and str(e.value).endswith(problem)
    assert str(e.value).isprintable()


def test_a_schema_whose_source_file_is_a_path_is_refused(prepared: PreparedData, tmp_path: Path) -> None:
    def to_directory(s: dict) -> None:
        s["source"].update(kind="directory", files={"test": {"name": "../../etc/passwd"}})

    path = edit_schema(prepared, to_directory)
    with pytest.raises(DataError, match=rf"{path}: source file '../../etc/passwd' of 'test': a name cannot hold"):
        Schema.from_json(path)
    schema = prepared.schema  # built in memory, not read back: the path is refused where it would be joined
    schema.source = {"kind": "directory", "path": str(tmp_path), "files": {"test": {"name": "../outside.txt"}}}
    with pytest.raises(DataError, match="source file '../outside.txt' of test: a name cannot hold a path separator"):
        encode_source_split(schema, "test")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(extra=1), "the schema has an unknown key 'extra'"),
        (lambda s: s.update(fields={"I1": {}}), "'fields' must be a list of objects"),
        (lambda s: s["fields"][0].update(path="/tmp/x"), "field 'I1' has an unknown key 'path'"),
        (lambda s: s["fields"][0].pop("encoding"), "field 'I1' has no 'encoding'"),
        (lambda s: s["fields"][0].update(vocab_size="9"), "field 'I1': 'vocab_size' must be an integer"),
        (lambda s: s.update(source=[]), "'source' must be an object"),
    ],
)
def test_a_malformed_schema_is_a_data_error_not_a_crash(prepared: PreparedData, edit, message) -> None:
    path = edit_schema(prepared, edit)
    with pytest.raises(DataError, match=f"{path}: {message}"):
        PreparedData.open(prepared.dir)


def test_a_declared_column_whose_name_could_be_a_path_is_refused_unless_ignored() -> None:
    from ctr.data.table import parse_table_spec

    def declare(columns: dict):
        data = {"format": "csv", "label": "y", "columns": columns}
        return parse_table_spec(data, min_count=1, numeric_transform="none", quantile_buckets=2)

    with pytest.raises(DataError, match="data.columns: column '../x': a name cannot hold a path separator"):
        declare({"../x": "numeric", "c": "categorical"})
    assert declare({"../x": "ignore", "c": "categorical"}).categorical_names == ["c"]
