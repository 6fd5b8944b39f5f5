"""The raw Criteo reader: parsing, exact line numbers, bad rows (error and skip), gzip."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import CRITEO_ROWS, write_rows

from ctr.data.criteo import (
    CAT_COLUMNS,
    COLUMNS,
    INT_COLUMNS,
    NUM_COLUMNS,
    BadRowReport,
    KeyCodec,
    read_criteo,
)
from ctr.errors import DataError

SMALL = dict(block_size=4096, min_rows=100)  # many pyarrow blocks, several coalesced batches


def read_all(path: Path, **kw):
    batches = list(read_criteo(path, **kw))
    return batches, np.concatenate([b.lines for b in batches])


def with_line(lines: list[str], number: int, text: str) -> list[str]:
    """``lines`` with 1-based line ``number`` replaced."""
    out = list(lines)
    out[number - 1] = text
    return out


def with_cell(line: str, column: str, value: str) -> str:
    cells = line.split("\t")
    cells[COLUMNS.index(column)] = value
    return "\t".join(cells)


def test_format_constants(tmp_path: Path) -> None:
    """Hand-written rows come back column by column: label, I1..I13 (0 + missing flag where empty), C1..C26.

    Every cell of a row holds a value unique to its column, so a shifted, swapped or dropped column, a wrong
    column count or a wrong missing flag fails; the column-name constants are checked against the same cells.
    """
    ints = [
        [str(j) for j in range(1, 14)],  # I_j = j: a column shift changes the values
        ["", "0", "-7", "", "123456789012", "", "5", "", "", "42", "", "1", ""],  # missing, 0, negative, large
        [""] * 13,  # every integer missing
    ]
    cats = [
        [f"{j:02d}abcdef" for j in range(1, 27)],  # 8-byte hashes like Criteo's, one per column
        ["", "x", "", "abc", "", "68fd1e64", "", "", "z" * 20, ""] + [f"v{j}" for j in range(11, 27)],
        [""] * 26,  # every categorical missing
    ]
    labels = ["1", "0", "1"]
    lines = ["\t".join([lab, *i, *c]) for lab, i, c in zip(labels, ints, cats)]
    assert all(len(line.split("\t")) == 40 for line in lines)
    codec = KeyCodec()
    batches = list(read_criteo(write_rows(tmp_path / "hand.txt", lines), codec=codec))
    assert len(batches) == 1
    b = batches[0]
    assert b.lines.tolist() == [1, 2, 3] and len(b) == 3
    assert b.label.tolist() == [1, 0, 1]
    assert b.ints.shape == (13, 3) and b.int_missing.shape == (13, 3) and b.cats.shape == (26, 3)
    for i in range(3):
        for j in range(13):
            cell = ints[i][j]
            assert bool(b.int_missing[j, i]) == (cell == ""), (i, INT_COLUMNS[j])
            assert int(b.ints[j, i]) == (int(cell) if cell else 0), (i, INT_COLUMNS[j])
        for j in range(26):
            cell = cats[i][j]
            key = int(b.cats[j, i])
            assert codec.text_of(key) == cell, (i, CAT_COLUMNS[j])
            assert (key == 0) == (cell == ""), (i, CAT_COLUMNS[j])
            assert key == codec.key_of(cell), (i, CAT_COLUMNS[j])
    assert len({int(k) for k in b.cats[:, 0]}) == 26  # distinct values, distinct keys
    # the names: COLUMNS[k] is the k-th cell of a line, I<j> / C<j> its j-th integer / categorical column
    assert NUM_COLUMNS == len(COLUMNS) == len(lines[0].split("\t"))
    first = lines[0].split("\t")
    assert first[COLUMNS.index("label")] == "1"
    assert [int(first[COLUMNS.index(f"I{j}")]) for j in range(1, 14)] == b.ints[:, 0].tolist()
    assert [first[COLUMNS.index(f"C{j}")] for j in range(1, 27)] == [codec.text_of(k) for k in b.cats[:, 0]]
    assert INT_COLUMNS == [f"I{j}" for j in range(1, 14)] and CAT_COLUMNS == [f"C{j}" for j in range(1, 27)]


def test_reads_every_row_with_values(criteo_file: Path, criteo_lines: list[str]) -> None:
    batches, lines = read_all(criteo_file, **SMALL)
    assert lines.tolist() == list(range(1, CRITEO_ROWS + 1))
    codec = KeyCodec()
    b = next(iter(read_criteo(criteo_file, codec=codec, **SMALL)))
    for i in (0, 7, 50):
        cells = criteo_lines[i].split("\t")
        assert b.label[i] == int(cells[0])
        for j in range(13):
            assert b.int_missing[j, i] == (cells[1 + j] == "")
            if cells[1 + j]:
                assert b.ints[j, i] == int(cells[1 + j])
        for j in range(26):
            assert codec.text_of(b.cats[j, i]) == cells[14 + j]
            assert (b.cats[j, i] == 0) == (cells[14 + j] == "")


@pytest.mark.parametrize(
    "column, value, reason",
    [
        ("I3", "abc", "'abc' is not an integer"),
        ("I3", "1.5", "'1.5' is not an integer"),
        ("I1", "+1", "'+1' is not an integer"),
        ("I13", " 1", "' 1' is not an integer"),
        ("I2", "0x1f", "'0x1f' is not an integer"),
        ("I2", "--1", "'--1' is not an integer"),
        ("I4", "-", "'-' is not an integer"),
        ("I5", "NA", "'NA' is not an integer"),
        ("I6", "99999999999999999999", "outside the int64 range"),
        ("label", "2", "label '2' is not 0 or 1"),
        ("label", "", "label '' is not 0 or 1"),
    ],
)
def test_bad_value_names_file_line_and_column(
    tmp_path: Path, criteo_lines: list[str], column: str, value: str, reason: str
) -> None:
    line = 1717  # far past the first 4 KiB block
    path = write_rows(
        tmp_path / "train.txt", with_line(criteo_lines, line, with_cell(criteo_lines[line - 1], column, value))
    )
    with pytest.raises(DataError) as e:
        read_all(path, **SMALL)
    msg = str(e.value)
    assert f"train.txt line {line}, column {column}: " in msg and reason in msg


@pytest.mark.parametrize("text", ["0\t1\t2", "{full}\textra", ""])
def test_wrong_column_count_names_line(tmp_path: Path, criteo_lines: list[str], text: str) -> None:
    line = 2345
    bad = text.format(full=criteo_lines[line - 1])
    path = write_rows(tmp_path / "train.txt", with_line(criteo_lines, line, bad))
    with pytest.raises(DataError, match=f"train.txt line {line}: (expected 40 tab-separated columns|empty line)"):
        read_all(path, **SMALL)


def test_first_bad_row_wins(tmp_path: Path, criteo_lines: list[str]) -> None:
    lines = with_line(criteo_lines, 900, "0\t1")
    lines = with_line(lines, 600, with_cell(lines[599], "I7", "x"))
    with pytest.raises(DataError, match="line 600, column I7"):
        read_all(write_rows(tmp_path / "t.txt", lines), **SMALL)


def test_negative_and_missing_integers_are_valid(tmp_path: Path, criteo_lines: list[str]) -> None:
    lines = with_line(criteo_lines, 3, with_cell(criteo_lines[2], "I2", "-3"))
    lines = with_line(lines, 4, with_cell(lines[3], "I2", ""))
    (b,), _ = read_all(write_rows(tmp_path / "t.txt", lines[:10]))
    assert b.ints[1, 2] == -3 and not b.int_missing[1, 2]
    assert b.int_missing[1, 3] and b.ints[1, 3] == 0


def test_skip_mode_counts_and_keeps_exact_line_numbers(tmp_path: Path, criteo_lines: list[str]) -> None:
    bad = {
        5: "0\t1\t2",  # too few columns
        640: criteo_lines[639] + "\tx",  # too many
        641: "",  # empty line
        1200: with_cell(criteo_lines[1199], "I3", "abc"),
        2999: with_cell(criteo_lines[2998], "label", "7"),
    }
    lines = list(criteo_lines)
    for n, text in bad.items():
        lines = with_line(lines, n, text)
    report = BadRowReport()
    _, got = read_all(write_rows(tmp_path / "t.txt", lines), on_bad_rows="skip", report=report, **SMALL)
    assert got.tolist() == [n for n in range(1, CRITEO_ROWS + 1) if n not in bad]
    assert report.count == len(bad)
    assert [e["line"] for e in report.examples] == sorted(bad)
    assert report.examples[3]["column"] == "I3" and "not an integer" in report.examples[3]["reason"]
    assert "skipped 5 bad rows" in report.summary()


def test_skip_report_keeps_ten_examples(tmp_path: Path, criteo_lines: list[str]) -> None:
    lines = list(criteo_lines)
    for n in range(100, 400, 10):
        lines = with_line(lines, n, "junk")
    report = BadRowReport()
    read_all(write_rows(tmp_path / "t.txt", lines), on_bad_rows="skip", report=report, **SMALL)
    assert report.count == 30 and len(report.examples) == 10
    assert [e["line"] for e in report.examples] == list(range(100, 200, 10))


def test_gzip_reads_like_plain(tmp_path: Path, criteo_file: Path) -> None:
    gz = tmp_path / "train.txt.gz"
    gz.write_bytes(gzip.compress(criteo_file.read_bytes()))
    plain, lines = read_all(criteo_file)
    packed, gz_lines = read_all(gz)
    assert gz_lines.tolist() == lines.tolist()
    for a, b in zip(plain, packed):
        np.testing.assert_array_equal(a.ints, b.ints)
        np.testing.assert_array_equal(a.cats, b.cats)


def test_block_size_does_not_change_rows(criteo_file: Path) -> None:
    a, _ = read_all(criteo_file, block_size=1 << 20)
    b, _ = read_all(criteo_file, **SMALL)
    for name in ("lines", "label", "ints", "cats"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(x, name) for x in a], axis=-1),
            np.concatenate([getattr(x, name) for x in b], axis=-1),
        )


def test_odd_categorical_values_round_trip(tmp_path: Path, criteo_lines: list[str]) -> None:
    lines = with_line(criteo_lines[:5], 2, with_cell(criteo_lines[1], "C4", "short"))
    lines = with_line(lines, 3, with_cell(lines[2], "C4", "a-much-longer-value"))
    codec = KeyCodec()
    (b,), _ = read_all(write_rows(tmp_path / "t.txt", lines), codec=codec)
    assert [codec.text_of(k) for k in b.cats[3, :3]] == [
        criteo_lines[0].split("\t")[17],
        "short",
        "a-much-longer-value",
    ]
    assert codec.keys_of(["short", "a-much-longer-value"]).tolist() == b.cats[3, 1:3].tolist()


def test_key_codec_round_trips_values_of_every_length() -> None:
    """Keys are injective and decode back, whatever the length and bytes: empty, short (1-7 bytes, NULs and
    control bytes included), 8 bytes (also ending in a byte < 8, which takes a table key), longer, non-UTF-8."""
    rng = np.random.default_rng(0)
    pool = [
        b"",
        b"a",
        b"ab\x00",
        b"\x00",
        b"1234567",
        b"deadbeef",
        b"1234567\x07",
        b"1234567\x08",
        b"\xff\xfe",
        b"a-much-longer-value",
        b"12345678" * 3,
    ]
    pool += [bytes(rng.integers(0, 256, n).astype(np.uint8)) for n in rng.integers(1, 20, 200)]
    values = [pool[i] for i in rng.integers(0, len(pool), 3000)]
    codec = KeyCodec()
    arr = pa.array([b"zzzz"] * 7 + values, pa.binary()).slice(7)  # a non-zero array offset
    keys = codec.encode(arr)
    texts = [v.decode("utf-8", "surrogateescape") for v in values]
    assert [codec.text_of(k) for k in keys] == texts
    assert codec.texts_of(keys) == texts
    assert codec.keys_of(texts).tolist() == keys.tolist()
    by_value = dict(zip(values, keys.tolist()))
    assert len(set(by_value.values())) == len(by_value)  # distinct values, distinct keys
    assert by_value[b""] == 0 and all(k != 0 for v, k in by_value.items() if v)
    top = {v: (k & 0xFFFFFFFFFFFFFFFF) >> 56 for v, k in by_value.items()}
    assert top[b"ab\x00"] == 3 and top[b"1234567"] == 7  # short values: their length on top
    assert top[b"1234567\x07"] == 0 and top[b"a-much-longer-value"] == 0 and top[b"1234567\x08"] == 8


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_criteo(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert list(read_criteo(empty)) == []


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("block_size", [700, 4096, 1 << 20])
def test_chunking_keeps_line_numbers_and_bad_rows_exact(
    tmp_path: Path, criteo_lines: list[str], block_size: int, gz: bool
) -> None:
    """Blocks of any size (a few lines, many) give the same rows, line numbers and report; bad rows sit at block
    edges for some sizes; the last line has no newline."""
    lines = criteo_lines[:40]
    lines = with_line(lines, 3, "1\t2")  # too few columns
    lines = with_line(lines, 4, "")  # empty line
    lines = with_line(lines, 17, with_cell(lines[16], "I5", "x"))
    lines = with_line(lines, 18, lines[17] + "\textra")  # too many columns
    lines = with_line(lines, 40, with_cell(lines[39], "label", "2"))
    text = "\n".join(lines)  # no final newline
    path = tmp_path / ("t.txt.gz" if gz else "t.txt")
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    report = BadRowReport()
    _, got = read_all(path, block_size=block_size, min_rows=5, on_bad_rows="skip", report=report)
    assert got.tolist() == [n for n in range(1, 40) if n not in (3, 4, 17, 18)]
    assert [(e["line"], e["column"]) for e in report.examples] == [
        (3, None),
        (4, None),
        (17, "I5"),
        (18, None),
        (40, "label"),
    ]
    with pytest.raises(DataError, match=r"t\.txt(\.gz)? line 3: expected 40 tab-separated columns, got 2"):
        read_all(path, block_size=block_size, min_rows=5)


def test_a_line_longer_than_the_block_size_is_a_clear_error(tmp_path: Path, criteo_lines: list[str]) -> None:
    path = write_rows(tmp_path / "t.txt", criteo_lines[:20])
    with pytest.raises(DataError, match=r"t\.txt line 1: the line is longer than data\.block_size \(64 bytes\)"):
        read_all(path, block_size=64)
