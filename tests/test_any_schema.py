"""Every model trains on any schema: categorical fields only (Frappe-like), and a single numeric field."""

from __future__ import annotations

import pytest
import torch
from _tiny import check_trains, model_config, tiny_batch, tiny_options

from ctr.models import build_model, list_models
from ctr.types import Batch, Field, Schema

SCHEMAS = {
    "categorical_only": Schema([Field(f"c{i}", "categorical", "id", "vocab", 5 + i) for i in range(3)]),
    "one_numeric": Schema([Field("x", "numeric", "dense", "log_standard")]),
}


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_on_the_schema(name: str, schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    torch.manual_seed(0)
    model = build_model(schema, *model_config(name, 4, tiny_options(name)))
    check_trains(model, steps=30, batch=tiny_batch(schema, batch_size=64))


def test_a_norm_on_a_stage_without_fields_is_an_error_unless_it_is_every_embeddings_norm() -> None:
    from ctr.errors import ConfigError

    with pytest.raises(ConfigError, match="norm.numeric=ln: the data has no numeric fields; set it to none"):
        build_model(SCHEMAS["categorical_only"], *model_config("dnn", 4, {"hidden": [8]}, numeric="ln"))
    both = build_model(
        SCHEMAS["categorical_only"], *model_config("dnn", 4, {"hidden": [8]}, numeric="ln", categorical="ln")
    )
    assert both.embed.num_numeric == 0  # the same norm on both stages: one norm of every embedding, allowed


def test_multi_valued_fields_are_pooled_into_one_field_each() -> None:
    """Mean pooling over the values present (-1 = none), sum pooling, and every model trains with such a field."""
    from ctr.nn.embedding import FieldEmbedding

    hist = Field("hist", "categorical", "multi", "vocab", 6, {"max_len": 3, "pooling": "mean"})
    tags = Field("tags", "categorical", "multi", "vocab", 4, {"max_len": 2, "pooling": "sum"})
    schema = Schema([Field("c", "categorical", "id", "vocab", 5), hist, tags])
    embed = FieldEmbedding(schema, 4)
    ids = torch.tensor([[1]])
    multi = torch.tensor([[[2, 3, -1], [1, 3, -1]]])  # hist: values 2, 3; tags: values 1, 3 (padded to L=3)
    batch = Batch(ids, torch.zeros(1, 0), torch.zeros(1, 0, dtype=torch.bool), torch.zeros(1), multi=multi)
    out = embed(batch)  # (1, 3, 4)
    t = embed.multi.table.weight
    torch.testing.assert_close(out[0, 1], (t[2] + t[3]) / 2)
    torch.testing.assert_close(out[0, 2], t[6 + 1] + t[6 + 3])
    assert embed.num_fields == 3


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_with_a_multi_valued_field(name: str) -> None:
    hist = Field("hist", "categorical", "multi", "vocab", 7, {"max_len": 4, "pooling": "mean"})
    schema = Schema([Field("x", "numeric", "dense", "log_standard"), Field("c", "categorical", "id", "vocab", 5), hist])
    torch.manual_seed(0)
    model = build_model(schema, *model_config(name, 4, tiny_options(name)))
    check_trains(model, steps=30, batch=tiny_batch(schema, batch_size=64))
