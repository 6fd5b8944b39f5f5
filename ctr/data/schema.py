"""The schema of prepared data (no torch: data-only commands stay light; tensors live in :mod:`ctr.data.batch`).

Letters used in shape docs throughout the package:
    B batch size, Fn numeric fields fed as dense values, Fc fields fed as ids (categorical fields and bucketised
    numeric fields), F = Fn + Fc, D embedding dim, H hidden width.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctr.errors import DataError

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
    def id_rows(self) -> int:
        """Rows of all id fields' embedding tables together (sum of vocab sizes)."""
        return sum(f.vocab_size for f in self.id_fields)

    def to_json(self, path: str | Path) -> None:
        """Write ``schema.json``: one line per field and per other key (json's fast encoder, no deep copy)."""
        fields = [json.dumps({k: getattr(f, k) for k in Field.__dataclass_fields__}) for f in self.fields]
        items = [' "fields": [\n  ' + ",\n  ".join(fields) + "\n ]"]
        items += [f" {json.dumps(k)}: {json.dumps(getattr(self, k))}" for k in self.__dataclass_fields__ if k != "fields"]
        Path(path).write_text("{\n" + ",\n".join(items) + "\n}\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "Schema":
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: schema file not found") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if raw.get("version") != SCHEMA_VERSION:
            raise DataError(f"{path}: schema version {raw.get('version')} is not supported (want {SCHEMA_VERSION})")
        raw["fields"] = [Field(**f) for f in raw["fields"]]
        return cls(**raw)
