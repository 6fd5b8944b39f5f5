"""The types shared by the data layer, the blocks and the models: :class:`Field`, :class:`Schema`, :class:`Batch`.

Importing this module does not import torch (data-only commands stay light); :class:`Batch` holds tensors and
imports torch when its methods run.

Letters used in shape docs throughout the package:
    B batch size, Fn numeric fields fed as dense values, Fc fields fed as ids (categorical fields and bucketised
    numeric fields), F = Fn + Fc, D embedding dim, H hidden width.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctr.errors import DataError, quoted

if TYPE_CHECKING:
    import torch

SCHEMA_VERSION = 1


@dataclass
class Field:
    """One input field after preparation.

    Attributes:
        name: column name in the raw data (``I1`` .. ``I13``, ``C1`` .. ``C26`` for Criteo).
        source: ``"numeric"`` or ``"categorical"``: what the raw column holds. Decides the norm stage.
        encoding: ``"id"`` (an int64 id < ``vocab_size``) or ``"dense"`` (a float32 value plus a missing flag).
        transform: how the raw value became the encoded one (``vocab``, ``log2_bucket``, ``log_standard``,
            ``quantile_bucket``).
        vocab_size: number of ids for ``encoding == "id"``; 0 for dense fields.
        stats: everything fitted on train that ``transform`` needs (vocabulary, mean/std, bucket edges).
    """

    name: str
    source: str
    encoding: str
    transform: str
    vocab_size: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Schema:
    """Fields in model order plus provenance of the prepared data. Saved as ``schema.json``, never pickled."""

    fields: list[Field]
    label: str = "label"
    config: dict[str, Any] = field(default_factory=dict)  # the preparation options that produced this schema
    source: dict[str, Any] = field(default_factory=dict)  # fingerprint of the raw file(s)
    rows: dict[str, int] = field(default_factory=dict)  # rows per split
    bad_rows: dict[str, Any] = field(default_factory=dict)  # skipped-row report
    version: int = SCHEMA_VERSION

    @property
    def dense_fields(self) -> list[Field]:
        """Fields fed as float values, in model order (Fn of them)."""
        return [f for f in self.fields if f.encoding == "dense"]

    @property
    def id_fields(self) -> list[Field]:
        """Fields fed as ids, in model order (Fc of them)."""
        return [f for f in self.fields if f.encoding == "id"]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def multi_fields(self) -> list[Field]:
        """Multi-valued fields (ids of several values per row, pooled into one embedding), in model order (Fm)."""
        return [f for f in self.fields if f.encoding == "multi"]

    @property
    def id_rows(self) -> int:
        """Rows of all embedding tables together (sum of the vocab sizes of id and multi-valued fields)."""
        return sum(f.vocab_size for f in self.id_fields + self.multi_fields)

    def to_json(self, path: str | Path) -> None:
        """Write ``schema.json``: one line per field and per other key (json's fast encoder, no deep copy)."""
        fields = [json.dumps({k: getattr(f, k) for k in Field.__dataclass_fields__}) for f in self.fields]
        items = [' "fields": [\n  ' + ",\n  ".join(fields) + "\n ]"]
        items += [
            f" {json.dumps(k)}: {json.dumps(getattr(self, k))}" for k in self.__dataclass_fields__ if k != "fields"
        ]
        Path(path).write_text("{\n" + ",\n".join(items) + "\n}\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Schema:
        """Read and check a ``schema.json``, which may come from elsewhere (a copied run directory): its keys and
        types, and every name that could reach a path (field names, the source's file names; see
        :func:`name_problem`).

        Raises:
            DataError: naming the file, and the field or key that is wrong.
        """
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: schema file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: not a schema (a JSON object with fields, config, source ... expected)")
        if raw.get("version") != SCHEMA_VERSION:
            version = quoted(str(raw.get("version")))
            raise DataError(f"{path}: schema version {version} is not supported (want {SCHEMA_VERSION})")
        _check_keys(path, "the schema", raw, cls.__dataclass_fields__, required=("fields",))
        if not isinstance(raw["fields"], list) or not all(isinstance(f, dict) for f in raw["fields"]):
            raise DataError(f"{path}: 'fields' must be a list of objects")
        for f in raw["fields"]:
            _check_field(path, f)
        for key in ("config", "source", "rows", "bad_rows"):
            if not isinstance(raw.get(key, {}), dict):
                raise DataError(f"{path}: {key!r} must be an object")
        _check_source(path, raw.get("source", {}))
        raw["fields"] = [Field(**f) for f in raw["fields"]]
        return cls(**raw)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a field or a source file, or None when it can. Such names are column or file names,
    never paths: a name must be a non-empty string without ``/``, ``\\``, NUL or other control characters, and be
    neither ``.`` nor ``..``, so that no use of it can leave a directory (or rewrite a terminal line)."""
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if "/" in name or "\\" in name:
        return "a name cannot hold a path separator"
    if name in (".", ".."):
        return "a name cannot be . or .."
    if not name.isprintable():
        return "a name cannot hold control characters"
    return None


def _check_keys(path: str | Path, what: str, raw: dict, known: Any, required: tuple[str, ...]) -> None:
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise DataError(f"{path}: {what} has an unknown key {quoted(unknown[0])}; valid: {', '.join(known)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise DataError(f"{path}: {what} has no {missing[0]!r}")


def _check_field(path: str | Path, f: dict[str, Any]) -> None:
    """One entry of a schema's ``fields``: known keys of the right types, and a name that cannot act as a path."""
    problem = name_problem(f.get("name"))
    if problem is not None:
        raise DataError(f"{path}: field {quoted(str(f.get('name')))}: {problem}")
    where = f"field {quoted(f['name'])}"
    _check_keys(path, where, f, Field.__dataclass_fields__, required=("name", "source", "encoding", "transform"))
    kinds = {str: "a string", int: "an integer", dict: "an object"}
    types = {"source": str, "encoding": str, "transform": str, "vocab_size": int, "stats": dict}
    for key, kind in types.items():
        if key in f and (not isinstance(f[key], kind) or isinstance(f[key], bool)):
            raise DataError(f"{path}: {where}: {key!r} must be {kinds[kind]}, got {quoted(str(f[key]))}")


def _check_source(path: str | Path, source: dict[str, Any]) -> None:
    """A schema's ``source``: its files are named by bare file names (joined to ``source.path`` when a directory's
    split is re-encoded), so none can point elsewhere."""
    if source.get("kind", "file") not in ("file", "directory"):
        raise DataError(f"{path}: source kind {quoted(str(source.get('kind')))} is not file or directory")
    files = source.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise DataError(f"{path}: source 'files' must map splits to objects")
    for split, info in files.items():
        problem = name_problem(info.get("name"))
        if problem is not None:
            raise DataError(f"{path}: source file {quoted(str(info.get('name')))} of {quoted(split)}: {problem}")


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]`` along dim 0. On CPU through numpy's single-threaded gather: torch's intra-op threads can stall
    when another process holds the other cores, and a gather of a few MB gains nothing from threads."""
    import numpy as np
    import torch

    if t.device.type == "cpu" and index.device.type == "cpu":
        return torch.from_numpy(np.take(t.numpy(), index.numpy(), axis=0))
    return t.index_select(0, index)


@dataclass
class Batch:
    """Prepared rows as tensors: a training batch, or a whole split held in memory (N rows).

    Attributes:
        ids: (B, Fc) int64, per-field ids in ``[0, vocab_size)``, columns in ``Schema.id_fields`` order.
        dense: (B, Fn) float32 values, columns in ``Schema.dense_fields`` order (0 where missing).
        dense_missing: (B, Fn) bool, True where the raw value was missing.
        label: (B,) float32 in {0, 1}.
        group: (B,) int64 key of each row's group (``data.group``, e.g. a user id) for group AUC, or None.
            Models never read it.
        multi: (B, Fm, L) int64 ids of the multi-valued fields (``Schema.multi_fields`` order), -1 after a row's
            last value (L = the longest ``max_len``), or None when the schema has none.
        weight: (B,) float32 example weights of the training loss (``data.weight``), or None. Models never read it.
    """

    ids: torch.Tensor
    dense: torch.Tensor
    dense_missing: torch.Tensor
    label: torch.Tensor
    group: torch.Tensor | None = None
    multi: torch.Tensor | None = None
    weight: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.label.shape[0]

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return (self.ids, self.dense, self.dense_missing, self.label, self.group, self.multi, self.weight)

    def rows(self, index: torch.Tensor | slice) -> Batch:
        """Rows ``index`` (an int64 index tensor, or a slice for a zero-copy view)."""
        if isinstance(index, slice):
            return Batch(*(None if t is None else t[index] for t in self._tensors()))
        return Batch(*(None if t is None else take_rows(t, index) for t in self._tensors()))

    @staticmethod
    def concat(parts: list[Batch]) -> Batch:
        """The rows of ``parts`` one after another (``parts[0]`` itself when there is one part)."""
        import torch

        if len(parts) == 1:
            return parts[0]
        cols = zip(*(p._tensors() for p in parts))
        return Batch(*(None if col[0] is None else torch.cat(col) for col in cols))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in self._tensors()))
