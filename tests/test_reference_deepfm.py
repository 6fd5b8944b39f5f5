"""ctr's DeepFM and training step are the hand-written reference (benchmarks/reference_deepfm.py), exactly."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _tiny import config_section, model_config

from ctr.models import build_model
from ctr.train.optim import build_optimizer
from ctr.types import Batch, Field, Schema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from reference_deepfm import HandDeepFM  # noqa: E402


def test_deepfm_matches_hand_written_forward_and_adam_steps():
    torch.manual_seed(0)
    vocab = [5, 7, 11, 3, 9]
    schema = Schema(
        [Field(f"I{i}", "numeric", "id", "log2_bucket", v) for i, v in enumerate(vocab[:2])]
        + [Field(f"C{i}", "categorical", "id", "vocab", v) for i, v in enumerate(vocab[2:])]
    )
    ours = build_model(schema, *model_config("deepfm", 4, {"hidden": [16, 8]}))
    ref = HandDeepFM(vocab, 0, dim=4, hidden=(16, 8))
    with torch.no_grad():
        ours.embed.table.weight.copy_(ref.emb.weight)
        ours.linear.table.weight.copy_(torch.randn_like(ref.lin.weight))
        ref.lin.weight.copy_(ours.linear.table.weight)
        for a, b in zip(
            [m for m in ours.mlp.net if hasattr(m, "weight")], [m for m in ref.mlp if hasattr(m, "weight")]
        ):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
    o1 = build_optimizer(ours, config_section("train", lr=1e-2))
    o2 = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(5):
        ids = torch.stack([torch.randint(0, v, (64,)) for v in vocab], 1)
        batch = Batch(ids, torch.zeros(64, 0), torch.zeros(64, 0, dtype=torch.bool), torch.randint(0, 2, (64,)).float())
        assert torch.allclose(ours(batch), ref(batch.ids, batch.dense), atol=1e-6)
        for opt, out in ((o1, ours(batch)), (o2, ref(batch.ids, batch.dense))):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(out, batch.label).backward()
            opt.step()
    assert torch.allclose(ours(batch), ref(batch.ids, batch.dense), atol=1e-5)
