"""Every model trains on any schema: categorical fields only (Frappe-like), and a single numeric field."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _tiny import model_config, tiny_batch

from ctr.models import build_model, list_models
from ctr.types import Field, Schema

TINY = {
    "hidden": [8],
    "hidden2": [8],
    "gate_hidden": [8],
    "cin_layers": [4, 4],
    "cross_layers": 2,
    "attention_layers": 1,
    "attention_dim": 8,
    "heads": 2,
    "num_blocks": 2,
    "block_dim": 8,
}
SCHEMAS = {
    "categorical_only": Schema([Field(f"c{i}", "categorical", "id", "vocab", 5 + i) for i in range(3)]),
    "one_numeric": Schema([Field("x", "numeric", "dense", "log_standard")]),
}


def options(name: str) -> dict:
    from dataclasses import fields

    from ctr.models import get_model

    have = {f.name for f in fields(get_model(name).Options)}
    return {k: v for k, v in TINY.items() if k in have}


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_on_the_schema(name: str, schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    torch.manual_seed(0)
    model = build_model(schema, *model_config(name, 4, options(name)))
    batch = tiny_batch(schema, batch_size=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = F.binary_cross_entropy_with_logits(model(batch), batch.label).item()
    for _ in range(30):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
        opt.step()
    last = F.binary_cross_entropy_with_logits(model(batch), batch.label).item()
    assert torch.isfinite(model(batch)).all() and last < first
