"""A tiny schema and batch for fast model tests (no data files needed).

Fields: 2 dense numeric (``I1``, ``I2``), 2 bucketised numeric ids (``I3``, ``I4``) and 4 categorical ids
(``C1`` .. ``C4``); F = 8.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

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
    multi = None
    if schema.multi_fields:  # (B, Fm, L): 1..max_len values per row, -1 after them
        length = max(int(f.stats["max_len"]) for f in schema.multi_fields)
        multi = torch.full((batch_size, len(schema.multi_fields), length), -1, dtype=torch.long)
        for j, f in enumerate(schema.multi_fields):
            n = torch.randint(1, int(f.stats["max_len"]) + 1, (batch_size,), generator=g)
            values = torch.randint(0, f.vocab_size, (batch_size, length), generator=g)
            multi[:, j] = torch.where(torch.arange(length) < n[:, None], values, -1)
    return Batch(ids, dense, missing, label, multi=multi)


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


# tiny values for whichever of these options a model has; widths even so that gn (2 groups) divides them
TINY = {
    "hidden": [8],
    "hidden2": [8],
    "gate_hidden": [8],
    "cin_layers": [4, 4],
    "cross_layers": 2,
    "attention_layers": 2,
    "attention_dim": 8,
    "heads": 2,
    "num_blocks": 2,
    "block_dim": 8,
    "ffn_dim": 8,
}


def tiny_options(name: str, **extra) -> dict:
    """The :data:`TINY` values of the options model ``name`` has, plus ``extra``."""
    from ctr.models import get_model

    fields = {f.name for f in dataclasses.fields(get_model(name).Options)}
    return {**{k: v for k, v in TINY.items() if k in fields}, **extra}


def check_trains(model: torch.nn.Module, steps: int = 20, lr: float = 1e-2, batch: Batch | None = None) -> None:
    """Finite (B,) logits, a finite gradient on every parameter, and a mean BCE that falls over ``steps`` Adam
    steps on one fixed batch (default :func:`tiny_batch`)."""
    batch = batch if batch is not None else tiny_batch()
    model.train()
    logits = model(batch)
    assert logits.shape == (len(batch),)
    assert torch.isfinite(logits).all()
    loss = F.binary_cross_entropy_with_logits(logits, batch.label)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
    first = loss.item()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
        loss.backward()
        opt.step()
    last = F.binary_cross_entropy_with_logits(model(batch), batch.label).item()
    assert last < first, f"loss did not fall: {first:.4f} -> {last:.4f}"
