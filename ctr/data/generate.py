"""Synthetic data in the raw Criteo format, with a planted click model.

The columns imitate Criteo Kaggle: heavy-tailed integer counts with Criteo's per-column missing rates (``I2``
has negative values such as -1), and 26 categorical fields of 8-hex-character hashes whose values follow Zipf
laws over vocabularies from 3 to 2,000,000 values. Clicks come from a planted logistic model with per-value
main effects, factorised pairwise field interactions (which a linear model cannot represent), non-monotone
effects of the numeric values and numeric x categorical interactions; the intercept is calibrated to a 25%
click rate.

Rows are generated in fixed blocks of ``GEN_BLOCK`` rows, each from its own seeded stream, so the output for a
seed is identical whatever ``chunk_rows`` is used to write it.

The planted model is known, so the best ranking any model can learn is known too: each row's true click
probability goes to a sidecar file (:func:`oracle_path`, hidden, next to the data) and :func:`oracle_auc` gives
the AUC of those probabilities on the rows of a split, the oracle a trained model's AUC is measured against.

CLI::

    python -m ctr.data.generate OUT --rows N --seed S
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ctr.data.criteo import CAT_COLUMNS, INT_COLUMNS, LABEL, NUM_CAT, NUM_INT
from ctr.data.split import assign_splits, splitmix64

GEN_BLOCK = 1 << 14  # rows per independently seeded block
TABLE_SLOTS = 1 << 15  # distinct planted effects per categorical field (ranks beyond share slots)
FACTOR_DIM = 4
BASE_CTR = 0.25
MAIN_SCALE = (0.1, 0.4)  # per-field std of the main effects is drawn from this range
FACTOR_SCALE = 0.5  # std of each latent factor entry
NUM_PAIRS = 12  # interacting categorical field pairs ...
INTERACTION_VOCAB = 6_000  # ... drawn among fields with at most this many values (learnable from ~1e5 rows)
NUMERIC_AMP = 0.5
CROSS_SCALE = 0.3
DEFAULT_ROWS = 300_000
DEFAULT_SEED = 2024
ORACLE_SUFFIX = ".oracle.npz"  # sidecar of a generated file: its rows' labels and planted click probabilities

# (missing rate, mu, sigma) of log-normal counts floor(exp(mu + sigma * z)); rates as in Criteo Kaggle.
INT_SPECS: list[tuple[float, float, float]] = [
    (0.45, 0.3, 1.2),  # I1
    (0.0, 1.0, 2.0),  # I2 (also -1/-2/-3, see NEGATIVE_I2)
    (0.21, 1.8, 1.5),  # I3
    (0.22, 1.4, 1.0),  # I4
    (0.03, 7.9, 1.8),  # I5
    (0.22, 3.5, 1.6),  # I6
    (0.04, 1.1, 1.5),  # I7
    (0.0005, 2.0, 1.0),  # I8
    (0.04, 3.6, 1.3),  # I9
    (0.45, -0.2, 0.8),  # I10
    (0.04, 0.4, 1.1),  # I11
    (0.77, -0.6, 1.2),  # I12
    (0.22, 1.4, 1.2),  # I13
]
NEGATIVE_I2 = {-1: 0.04, -2: 0.01, -3: 0.002}  # value: probability, for column I2

# (missing rate, vocabulary size, Zipf exponent)
CAT_SPECS: list[tuple[float, int, float]] = [
    (0.0, 1460, 1.2),  # C1
    (0.0, 583, 1.1),  # C2
    (0.034, 2_000_000, 1.05),  # C3
    (0.034, 600_000, 1.05),  # C4
    (0.0, 305, 1.3),  # C5
    (0.12, 24, 1.2),  # C6
    (0.0, 12_517, 1.1),  # C7
    (0.0, 633, 1.2),  # C8
    (0.0, 3, 1.5),  # C9
    (0.0, 93_145, 1.1),  # C10
    (0.0, 5683, 1.1),  # C11
    (0.034, 1_500_000, 1.05),  # C12
    (0.0, 3194, 1.1),  # C13
    (0.0, 27, 1.2),  # C14
    (0.0, 14_992, 1.1),  # C15
    (0.034, 1_000_000, 1.05),  # C16
    (0.0, 10, 1.2),  # C17
    (0.0, 5652, 1.1),  # C18
    (0.44, 2173, 1.1),  # C19
    (0.44, 4, 1.2),  # C20
    (0.034, 1_200_000, 1.05),  # C21
    (0.76, 18, 1.2),  # C22
    (0.0, 15, 1.2),  # C23
    (0.034, 286_181, 1.05),  # C24
    (0.44, 105, 1.2),  # C25
    (0.44, 142_572, 1.1),  # C26
]

HASH_SALT = np.uint64(0x5EED0000)  # value rank r of field f is written as hex(hash(r, f)) for every seed
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass
class ClickModel:
    """The planted logistic click model (all arrays float64 unless noted).

    Attributes:
        bias: intercept, calibrated so that the mean click probability is ``BASE_CTR``.
        main: (NUM_CAT, TABLE_SLOTS) main effect of each categorical value slot.
        missing: (NUM_CAT,) main effect of a missing categorical value.
        factors: (NUM_CAT, TABLE_SLOTS, FACTOR_DIM) latent vectors; pair (f, g) adds <factors_f, factors_g>.
        pairs: (P, 2) int64 interacting categorical field indices.
        num_amp, num_center, num_width: (NUM_INT,) bump effect amp * exp(-((log1p(x) - center) / width)^2 / 2).
        num_missing: (NUM_INT,) effect of a missing count.
        num_cat: (Q, 2) int64 (numeric column, categorical field) pairs; adds log1p(x) * cross[q, slot] / 4.
        cross: (Q, TABLE_SLOTS) numeric x categorical slopes.
    """

    bias: float
    main: np.ndarray
    missing: np.ndarray
    factors: np.ndarray
    pairs: np.ndarray
    num_amp: np.ndarray
    num_center: np.ndarray
    num_width: np.ndarray
    num_missing: np.ndarray
    num_cat: np.ndarray
    cross: np.ndarray


@dataclass
class Block:
    """Generated rows before formatting.

    Attributes:
        label: (N,) int8 clicks.
        ints: (N, NUM_INT) int64 counts; ``int_missing`` marks missing cells.
        int_missing: (N, NUM_INT) bool.
        hashes: (N, NUM_CAT) uint32 categorical values (their hex text is the raw value).
        cat_missing: (N, NUM_CAT) bool.
        logit: (N,) float64 planted logit (for diagnostics; not written).
    """

    label: np.ndarray
    ints: np.ndarray
    int_missing: np.ndarray
    hashes: np.ndarray
    cat_missing: np.ndarray
    logit: np.ndarray


def build_click_model(seed: int) -> ClickModel:
    """Draw the planted model for ``seed`` and calibrate its intercept to ``BASE_CTR``."""
    rng = np.random.default_rng([seed, 0])
    field_scale = rng.uniform(*MAIN_SCALE, NUM_CAT)
    main = rng.standard_normal((NUM_CAT, TABLE_SLOTS)) * field_scale[:, None]
    missing = rng.standard_normal(NUM_CAT) * 0.3
    factors = rng.standard_normal((NUM_CAT, TABLE_SLOTS, FACTOR_DIM)).astype(np.float32) * FACTOR_SCALE
    small = np.array([f for f, spec in enumerate(CAT_SPECS) if spec[1] <= INTERACTION_VOCAB])
    pairs = np.array([rng.choice(small, 2, replace=False) for _ in range(NUM_PAIRS)], dtype=np.int64)
    num_amp = rng.uniform(-NUMERIC_AMP, NUMERIC_AMP, NUM_INT)
    num_center = np.array([np.log1p(np.exp(mu)) for _, mu, _ in INT_SPECS]) + rng.uniform(-0.5, 0.5, NUM_INT)
    num_width = rng.uniform(0.5, 1.2, NUM_INT)
    num_missing = rng.standard_normal(NUM_INT) * 0.2
    num_cat = np.stack([rng.choice(NUM_INT, 4), rng.choice(NUM_CAT, 4)], axis=1).astype(np.int64)
    cross = rng.standard_normal((len(num_cat), TABLE_SLOTS)) * CROSS_SCALE
    model = ClickModel(0.0, main, missing, factors, pairs, num_amp, num_center, num_width, num_missing, num_cat, cross)
    model.bias = calibrated_bias(_draw_features(model, np.random.default_rng([seed, 1]), 1 << 15).logit, BASE_CTR)
    return model


def calibrated_bias(logit: np.ndarray, ctr: float) -> float:
    """The intercept that makes the mean click probability of rows with these (N,) logits ``ctr`` (bisection)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(click_probability(logit + mid)) < ctr:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _draw_features(model: ClickModel, rng: np.random.Generator, n: int) -> Block:
    """Draw ``n`` rows of features from ``rng`` and their planted logit (label left as zeros)."""
    int_rate = np.array([s[0] for s in INT_SPECS])
    mu = np.array([s[1] for s in INT_SPECS])
    sigma = np.array([s[2] for s in INT_SPECS])
    int_missing = rng.random((n, NUM_INT)) < int_rate
    counts = np.exp(np.minimum(mu + sigma * rng.standard_normal((n, NUM_INT)), 25.0))  # (N, NUM_INT)
    ints = np.floor(counts).astype(np.int64)
    u = rng.random(n)
    edge = 0.0
    for value, p in NEGATIVE_I2.items():
        ints[(u >= edge) & (u < edge + p), 1] = value
        edge += p

    cat_rate = np.array([s[0] for s in CAT_SPECS])
    vocab = np.array([s[1] for s in CAT_SPECS], dtype=np.float64)
    expo = 1.0 - np.array([s[2] for s in CAT_SPECS])
    cat_missing = rng.random((n, NUM_CAT)) < cat_rate
    span = (vocab + 1) ** expo - 1  # inverse CDF of a power law on [1, V + 1)
    ranks = np.floor((1 + rng.random((n, NUM_CAT)) * span) ** (1 / expo)).astype(np.int64) - 1
    ranks = np.clip(ranks, 0, vocab.astype(np.int64) - 1)  # (N, NUM_CAT)
    slots = ranks % TABLE_SLOTS

    fields = np.arange(NUM_CAT)
    main = np.where(cat_missing, model.missing, model.main[fields, slots])  # (N, NUM_CAT)
    logit = main.sum(axis=1)
    vec = model.factors[fields, slots] * ~cat_missing[:, :, None]  # (N, NUM_CAT, FACTOR_DIM)
    for f, g in model.pairs:
        logit += (vec[:, f] * vec[:, g]).sum(axis=1)
    x = np.log1p(np.maximum(ints, 0))  # (N, NUM_INT)
    bump = model.num_amp * np.exp(-0.5 * ((x - model.num_center) / model.num_width) ** 2)
    logit += np.where(int_missing, model.num_missing, bump).sum(axis=1)
    for q, (j, f) in enumerate(model.num_cat):
        present = ~int_missing[:, j] & ~cat_missing[:, f]
        logit += present * x[:, j] * model.cross[q, slots[:, f]] / 4

    salt = splitmix64(HASH_SALT + fields.astype(np.uint64))  # (NUM_CAT,)
    hashes = (splitmix64(ranks.astype(np.uint64) ^ salt) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return Block(np.zeros(n, np.int8), ints, int_missing, hashes, cat_missing, model.bias + logit)


def generate_block(model: ClickModel, seed: int, index: int) -> Block:
    """Rows ``[index * GEN_BLOCK, (index + 1) * GEN_BLOCK)`` for ``seed``, labels drawn from the planted model."""
    rng = np.random.default_rng([seed, 2, index])
    block = _draw_features(model, rng, GEN_BLOCK)
    block.label = (rng.random(GEN_BLOCK) < click_probability(block.logit)).astype(np.int8)
    return block


def iterate_rows(rows: int, seed: int = 0, chunk_rows: int = 1 << 17) -> Iterator[Block]:
    """Yield the first ``rows`` generated rows for ``seed`` in chunks of ``chunk_rows`` (last one shorter)."""
    model = build_click_model(seed)
    pending: list[Block] = []
    have = 0
    done = 0
    index = 0
    while done < rows:
        want = min(chunk_rows, rows - done)
        while have < want:
            pending.append(generate_block(model, seed, index))
            index += 1
            have += GEN_BLOCK
        merged = _concat_blocks(pending)
        yield _slice_block(merged, 0, want)
        rest = _slice_block(merged, want, have)
        pending = [rest] if have > want else []
        have -= want
        done += want


def _concat_blocks(blocks: list[Block]) -> Block:
    if len(blocks) == 1:
        return blocks[0]
    return Block(*(np.concatenate([getattr(b, k) for b in blocks]) for k in Block.__dataclass_fields__))


def _slice_block(block: Block, start: int, stop: int) -> Block:
    return Block(*(getattr(block, k)[start:stop] for k in Block.__dataclass_fields__))


def format_block(block: Block) -> pa.Table:
    """The rows as a table of raw Criteo columns (ints with nulls for missing, categoricals as hex text)."""
    columns = {LABEL: pa.array(block.label)}
    for j, name in enumerate(INT_COLUMNS):
        columns[name] = pa.array(block.ints[:, j], mask=block.int_missing[:, j])
    shifts = np.arange(28, -4, -4, dtype=np.uint32)
    for f, name in enumerate(CAT_COLUMNS):
        keep = ~block.cat_missing[:, f]
        nibbles = (block.hashes[keep, f][:, None] >> shifts) & np.uint32(0xF)  # (N', 8)
        data = _HEX[nibbles].tobytes()
        offsets = np.zeros(len(keep) + 1, dtype=np.int32)
        np.cumsum(keep * 8, out=offsets[1:])
        columns[name] = pa.StringArray.from_buffers(len(keep), pa.py_buffer(offsets), pa.py_buffer(data))
    return pa.table(columns)


def generate_criteo(
    path: str | Path,
    rows: int,
    seed: int = 0,
    chunk_rows: int = 1 << 17,
    progress: bool = False,
    oracle: bool = True,
) -> Path:
    """Write ``rows`` synthetic rows in raw Criteo format to ``path`` (gzip if it ends in ``.gz``).

    Memory is bounded by ``chunk_rows`` (plus 9 bytes per row for the oracle sidecar); the file is written to a
    temporary name and renamed at the end.

    Args:
        path: output file.
        rows: number of rows.
        seed: the planted model and all draws depend only on it.
        chunk_rows: rows formatted and written at once; does not change the output.
        progress: show a tqdm bar on stderr.
        oracle: also write each row's label and planted click probability to :func:`oracle_path` ``(path)``
            (an old sidecar is removed first, so none outlives the data it describes).

    Returns:
        ``path`` as a Path.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    from tqdm import tqdm

    bar = tqdm(total=rows, unit="rows", desc=f"generate {path.name}", disable=not progress, file=sys.stderr)
    oracle_path(path).unlink(missing_ok=True)
    labels, probs = [], []
    try:
        sink = pa.CompressedOutputStream(str(tmp), "gzip") if path.suffix == ".gz" else pa.OSFile(str(tmp), "wb")
        with sink:
            for block in iterate_rows(rows, seed, chunk_rows):
                pacsv.write_csv(format_block(block), sink, options)
                if oracle:
                    labels.append(block.label)
                    probs.append(click_probability(block.logit))
                bar.update(len(block.label))
        os.replace(tmp, path)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    if oracle:
        write_oracle(path, np.concatenate(labels or [np.zeros(0, np.int8)]), np.concatenate(probs or [np.zeros(0)]))
    return path


# ------------------------------------------------------------------------------------------------------ the oracle


def click_probability(logit: np.ndarray) -> np.ndarray:
    """The planted click probability of a row, ``sigmoid(logit)``: the one its label was drawn with."""
    return 1 / (1 + np.exp(-logit))


def planted_clicks(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Recompute the first ``rows`` rows for ``seed``: (N,) int8 labels and (N,) float64 click probabilities."""
    blocks = list(iterate_rows(rows, seed))
    if not blocks:
        return np.zeros(0, np.int8), np.zeros(0)
    return np.concatenate([b.label for b in blocks]), np.concatenate([click_probability(b.logit) for b in blocks])


def oracle_path(path: str | Path) -> Path:
    """The oracle sidecar of generated file ``path``: ``.<name>.oracle.npz`` beside it (hidden, so that a data
    directory's ``train.txt`` does not gain a second file named ``train.*``)."""
    path = Path(path)
    return path.with_name(f".{path.name}{ORACLE_SUFFIX}")


def write_oracle(
    path: str | Path, labels: np.ndarray, probs: np.ndarray, first_line: int = 1, layout: dict | None = None
) -> Path:
    """Write the sidecar of ``path`` (atomically): ``label`` (int8) and ``prob`` (float64), one per row, file order.

    A declared table's sidecar also holds ``first_line``, the line (or row) number the reader gives the first row
    (2 after a CSV header), and ``layout``, how to read its labels back (JSON of ``format``, ``delimiter``,
    ``header``, ``column_names``, ``label``, ``positive``, ``negative``); a raw Criteo file's has neither.
    """
    out = oracle_path(path)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}.npz")
    arrays = {"label": np.asarray(labels, np.int8), "prob": np.asarray(probs, np.float64)}
    if first_line != 1:
        arrays["first_line"] = np.int64(first_line)
    if layout is not None:
        arrays["layout"] = np.array(json.dumps(layout, sort_keys=True))
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def file_labels(path: str | Path) -> np.ndarray:
    """(N,) int8 labels (first column) of a raw Criteo-format file, in file order."""
    read = pacsv.ReadOptions(column_names=[LABEL, *INT_COLUMNS, *CAT_COLUMNS])
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False)
    convert = pacsv.ConvertOptions(include_columns=[LABEL], column_types={LABEL: pa.int8()})
    table = pacsv.read_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
    return table.column(LABEL).to_numpy().astype(np.int8)


def table_labels(path: str | Path, layout: dict) -> np.ndarray | None:
    """(N,) int8 labels of a declared table's file, in file order (``layout`` as :func:`write_oracle` saves it);
    None when the file cannot be read so or holds a label value the layout does not declare."""
    name = layout["label"]
    try:
        if layout["format"] == "parquet":
            column = pq.read_table(path, columns=[name]).column(name)
        else:
            read = pacsv.ReadOptions(column_names=layout["column_names"] or None)
            parse = pacsv.ParseOptions(delimiter=layout["delimiter"])
            convert = pacsv.ConvertOptions(include_columns=[name], column_types={name: pa.string()})
            column = pacsv.read_csv(str(path), read, parse, convert).column(name)
    except (pa.ArrowInvalid, KeyError, OSError):
        return None
    text = pc.fill_null(pc.cast(column, pa.string()), "")
    positive = pc.is_in(text, value_set=pa.array(layout["positive"], pa.string())).to_numpy(zero_copy_only=False)
    negative = pc.is_in(text, value_set=pa.array(layout["negative"], pa.string())).to_numpy(zero_copy_only=False)
    return positive.astype(np.int8) if np.all(positive | negative) else None


def read_oracle(path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The (labels, click probabilities) of the rows of generated file ``path``, or None when not known.

    From the sidecar (:func:`oracle_path`); for the bundled sample without one, recomputed from its seed and
    cached in a sidecar. Either way the labels must equal the file's, row for row: a file regenerated by other
    code, or not generated at all, has no oracle.
    """
    known = _known_oracle(path)
    return None if known is None else known[:2]


def _known_oracle(path: str | Path) -> tuple[np.ndarray, np.ndarray, int] | None:
    """:func:`read_oracle` plus the line number the reader gives the first row."""
    path = Path(path)
    if not path.is_file():
        return None
    sidecar = oracle_path(path)
    first_line, layout = 1, None
    if sidecar.is_file():
        with np.load(sidecar) as z:
            labels, probs = z["label"], z["prob"]
            if "first_line" in z.files:
                first_line = int(z["first_line"])
            if "layout" in z.files:
                layout = json.loads(str(z["layout"]))
    elif path.resolve() == _bundled_path():
        labels, probs = planted_clicks(DEFAULT_ROWS, DEFAULT_SEED)
    else:
        return None
    in_file = file_labels(path) if layout is None else table_labels(path, layout)
    if in_file is None or not np.array_equal(labels, in_file):
        return None
    if not sidecar.is_file():
        write_oracle(path, labels, probs)
    return labels, probs, first_line


def oracle_auc(path: str | Path, split_seed: int, split: list[float]) -> float | None:
    """AUC of the planted click probabilities on the test rows of generated file ``path`` (None when unknown).

    The test rows are those the data preparation assigns to the test split of a single raw file
    (:func:`ctr.data.split.assign_splits` of the line numbers the reader gives the rows, 1-based and after a CSV
    header, with ``data.split_seed``, ``data.split``).
    No model scores better in expectation: the probabilities are the ones the labels were drawn with.
    """
    from ctr.metrics import auc

    known = _known_oracle(path)
    if known is None:
        return None
    labels, probs, first_line = known
    test = assign_splits(np.arange(first_line, first_line + len(labels), dtype=np.int64), split_seed, split) == 2
    if not 0 < int(labels[test].sum()) < int(test.sum()):
        return None
    return auc(labels[test], probs[test])


def _bundled_path() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "generated" / "criteo_sample.txt"


def default_data_path() -> Path:
    """The bundled sample ``data/generated/criteo_sample.txt`` (``DEFAULT_ROWS`` rows), generated on first use."""
    path = _bundled_path()
    if not path.exists():
        print(f"generating the bundled sample {path} ({DEFAULT_ROWS:,} rows, seed {DEFAULT_SEED})", file=sys.stderr)
        generate_criteo(path, DEFAULT_ROWS, seed=DEFAULT_SEED)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic rows in raw Criteo format.")
    parser.add_argument("out", help="output file (.gz for gzip)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--chunk-rows", type=int, default=1 << 17)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-oracle", action="store_true", help="no sidecar with the planted click probabilities")
    args = parser.parse_args(argv)
    generate_criteo(args.out, args.rows, args.seed, args.chunk_rows, progress=not args.quiet, oracle=not args.no_oracle)


if __name__ == "__main__":
    main()
