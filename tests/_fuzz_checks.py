"""The checks of the fuzz tests: a read (or a preparation) either returns exactly the rows the independent parse
(``_raw_oracle``) finds, or fails with a DataError whose one printable line names the file, and the line and
column of a problem the parse allows."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _raw_oracle import Parsed
from hypothesis import event

from ctr.data.criteo import BadRowReport, KeyCodec
from ctr.data.encoders import FIRST_ID, MISSING_ID, OOV_ID
from ctr.data.prepare import PreparedData, prepare_data
from ctr.data.split import SPLITS, assign_splits
from ctr.errors import DataError


def write(directory: Path, name: str, content: bytes, gz: str) -> Path:
    """``content`` in ``directory/name`` (gzip-compressed for ``gz`` ``"gz"``, then cut short for ``"cut"``)."""
    path = directory / (name + (".gz" if gz else ""))
    data = gzip.compress(content) if gz else content
    path.write_bytes(data[: len(data) - 5] if gz == "cut" else data)
    return path


def check_error(error: DataError, path: Path, parsed: Parsed, on_bad_rows: str, gz: str) -> None:
    """One printable line naming ``path``, and the line and column of a problem the oracle allows."""
    message = str(error)
    assert message.isprintable() and len(message) < 600, message
    assert message.startswith(str(path)), message
    if gz == "cut" and ("truncated" in message or "decompress" in message):
        return  # or a problem of the lines before the cut, found first: the reader decompresses ahead
    if parsed.file_error:
        return
    where = re.match(rf"{re.escape(str(path))} (?:line|row) (\d+)(?:, column (.+?))?: ", message)
    assert where is not None, message
    got = (int(where[1]), where[2])
    allowed = parsed.allowed_errors(on_bad_rows)
    assert any(got[0] == p.line and got[1] in p.columns for p in allowed), (message, allowed)


def check_rows(batches: list, codec: KeyCodec, parsed: Parsed, on_bad_rows: str, report) -> None:
    """The batches hold exactly the oracle's good rows: lines, labels, numbers, missing flags, category texts."""
    assert not parsed.file_error
    want = parsed.good_rows(on_bad_rows)
    assert not [p for p in parsed.problems if on_bad_rows == "error" or p.fatal]
    lines = np.concatenate([b.lines for b in batches]) if batches else np.zeros(0, np.int64)
    assert lines.tolist() == [r.line for r in want]
    if not want:
        return
    label = np.concatenate([b.label for b in batches])
    ints = np.concatenate([b.ints for b in batches], axis=1)
    missing = np.concatenate([b.int_missing for b in batches], axis=1)
    cats = np.concatenate([b.cats for b in batches], axis=1)
    assert label.tolist() == [r.label for r in want]
    assert ints.T.tolist() == [[v for v, _ in r.numbers] for r in want]
    assert missing.T.tolist() == [[m for _, m in r.numbers] for r in want]
    texts = [[codec.text_of(k) for k in row] for row in cats.T]
    assert texts == [[c.decode("utf-8", "surrogateescape") for c in r.cats] for r in want]
    assert (cats.T == 0).tolist() == [[not c for c in r.cats] for r in want]
    if on_bad_rows == "skip":
        assert report.count == len(parsed.problems)


def read_and_check(read, path: Path, parsed: Parsed, on_bad_rows: str, gz: str = "") -> None:
    """``read(path, codec=, report=, on_bad_rows=)`` returns the parsed rows or fails as the parse allows."""
    codec, report = KeyCodec(), BadRowReport()
    try:
        batches = list(read(path, codec=codec, report=report, on_bad_rows=on_bad_rows))
    except DataError as e:
        event("DataError")
        check_error(e, path, parsed, on_bad_rows, gz)
        return
    event(f"read {'some' if parsed.good_rows(on_bad_rows) else 'no'} rows")
    assert gz != "cut", "a truncated .gz read without error"
    check_rows(batches, codec, parsed, on_bad_rows, report)


def prepare_and_check(cfg, path: Path, parsed: Parsed, numeric: list[str], categorical: list[str], gz: str) -> None:
    """:func:`prepare_data` of ``cfg`` (over ``path``) gives the parsed rows, encoded (transform ``none``, every train
    value in the vocabulary), in their splits; or fails as the parse allows (or for want of train rows)."""
    want = parsed.good_rows(cfg.on_bad_rows)
    split = assign_splits(np.array([r.line for r in want], dtype=np.int64), cfg.split_seed, cfg.split)
    try:
        prepared = PreparedData.open(prepare_data(cfg, progress=False).dir)  # the schema read back from its file
    except DataError as e:
        event("DataError")
        if "no train rows" in str(e) and not (split == 0).any():
            return
        check_error(e, path, parsed, cfg.on_bad_rows, gz)
        return
    event(f"prepared {'some' if want else 'no'} rows")
    assert gz != "cut" and not parsed.file_error
    assert not [p for p in parsed.problems if cfg.on_bad_rows == "error" or p.fatal]
    fields = {f.name: f for f in prepared.schema.fields}
    train = [r for r, s in zip(want, split) if s == 0]
    for j, name in enumerate(categorical):
        seen = {r.cats[j].decode("utf-8", "surrogateescape") for r in train} - {""}
        assert set(fields[name].stats["vocab"]) == seen
    for s, split_name in enumerate(SPLITS):
        rows = [r for r, k in zip(want, split) if k == s]
        got = pq.read_table(prepared.path(split_name)).to_pydict()
        assert got["label"] == [r.label for r in rows]
        for j, name in enumerate(numeric):
            values = np.array([0 if r.numbers[j][1] else r.numbers[j][0] for r in rows])
            top = float(np.finfo(np.float32).max)  # transform none saturates there
            want_values = np.clip(values, -top, top).astype(np.float32)
            np.testing.assert_array_equal(np.asarray(got[name], np.float32), want_values)
            assert got[f"{name}__missing"] == [r.numbers[j][1] for r in rows]
        for j, name in enumerate(categorical):
            ids = {t: FIRST_ID + i for i, t in enumerate(fields[name].stats["vocab"])}
            texts = [r.cats[j].decode("utf-8", "surrogateescape") for r in rows]
            assert got[name] == [ids.get(t, OOV_ID) if t else MISSING_ID for t in texts]
