"""A tiny schema and batch for fast model tests (no data files needed).

Fields: 2 dense numeric (``I1``, ``I2``), 2 bucketised numeric ids (``I3``, ``I4``) and 4 categorical ids
(``C1`` .. ``C4``); F = 8.
"""

from __future__ import annotations

import dataclasses

import torch

from ctr.config import ModelConfig, NormConfig, load_config
from ctr.types import Batch, Field, Schema

VOCAB = {"I3": 5, "I4": 6, "C1": 7, "C2": 3, "C3": 11, "C4": 4}


def tiny_schema() -> Schema:
    """2 dense numeric fields, 2 bucketised numeric id fields, 4 categorical id fields."""
    fields = [Field("I1", "numeric", "dense", "log_standard"), Field("I2", "numeric", "dense", "log_standard")]
    fields += [Field(n, "numeric", "id", "log2_bucket", VOCAB[n]) for n in ("I3", "I4")]
    fields += [Field(n, "categorical", "id", "vocab", VOCAB[n]) for n in ("C1", "C2", "C3", "C4")]
    return Schema(fields)


def tiny_batch(schema: Schema | None = None, batch_size: int = 32, seed: int = 0) -> Batch:
    """A random batch for ``schema`` (default :func:`tiny_schema`); some dense values missing, both labels present."""
    schema = schema or tiny_schema()
    g = torch.Generator().manual_seed(seed)
    columns = [torch.randint(0, f.vocab_size, (batch_size,), generator=g) for f in schema.id_fields]
    ids = torch.stack(columns, dim=1) if columns else torch.zeros(batch_size, 0, dtype=torch.long)
    fn = len(schema.dense_fields)
    dense = torch.randn(batch_size, fn, generator=g)
    missing = torch.rand(batch_size, fn, generator=g) < 0.2
    missing[0] = True  # at least one missing value per field
    missing[1] = False
    dense = dense.masked_fill(missing, 0.0)
    label = (torch.rand(batch_size, generator=g) < 0.5).float()
    label[0], label[1] = 0.0, 1.0
    return Batch(ids, dense, missing, label)


def model_config(
    name: str, embed_dim: int, options: dict | None = None, **norms: object
) -> tuple[ModelConfig, NormConfig]:
    """The shipped defaults of model ``name`` with ``options`` and the stage ``norms`` changed:
    ``build_model(schema, *model_config("dnn", 4, {"hidden": [8]}, mlp="ln"))``."""
    cfg = load_config([], [f"model.name={name}"])
    return ModelConfig(name, embed_dim, {**cfg.model.options, **(options or {})}), dataclasses.replace(
        cfg.norm, **norms
    )


def config_section(section: str, **changes: object):
    """A section of the default run config (``data``, ``train``, ``diagnostics``) with some keys changed."""
    return dataclasses.replace(getattr(load_config(), section), **changes)
