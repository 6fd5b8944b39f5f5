import copy

import pytest
import torch
import torch.nn.functional as F
from _tiny import config_section, model_config

from ctr.models import build_model
from ctr.train.optim import build_optimizer, lr_factor, param_roles
from ctr.types import Batch, Field, Schema


def schema():
    return Schema(
        [
            Field("I1", "numeric", "dense", "log_standard"),
            Field("I2", "numeric", "id", "log2_bucket", 5),
            Field("C1", "categorical", "id", "vocab", 9),
            Field("C2", "categorical", "id", "vocab", 4),
        ]
    )


def roles_of(norm):
    m = build_model(schema(), *model_config("deepfm", 4, {"hidden": [8, 8]}, numeric=norm, categorical=norm, mlp=norm))
    return {role: {name for name, _ in ps} for role, ps in param_roles(m).items()}, m


AFFINE_VO_LN = {"name": "vo_ln", "affine": True}  # vo_ln has no parameters by default


@pytest.mark.parametrize("norm", ["bn", "ln", AFFINE_VO_LN, "rms", "gn", "noisy_bn", "lp_bn", "mean_only"])
def test_norm_parameters_get_their_own_group(norm):
    roles, model = roles_of(norm)
    assert roles["norm"], "norm gains/biases must be found"
    assert all("norm" in n or ".bn." in n or "net.1." in n or "net.4." in n for n in roles["norm"])
    assert {"embed.table.weight", "embed.dense_weight", "linear.table.weight"} <= roles["embedding"]
    assert all(n.endswith("weight") for n in roles["weight"])
    every = set().union(*roles.values())
    assert every == {n for n, _ in model.named_parameters()}, "each parameter has exactly one role"
    assert sum(map(len, roles.values())) == len(every)


@pytest.mark.parametrize("norm", ["bn", "ln", AFFINE_VO_LN, "rms", "gn", "wn", "noisy_bn", "lp_bn", "mean_only"])
def test_embedding_stage_norm_parameters_are_norm_not_embedding(norm):
    """Gains and biases of the numeric/categorical stage norms are decayed by norm_weight_decay, never by
    embedding_weight_decay: the embedding group holds exactly the tables and per-field embedding vectors."""
    roles, model = roles_of(norm)
    stage_norm_params = {
        n for n, _ in model.named_parameters() if n.startswith(("embed.numeric_norm.", "embed.categorical_norm."))
    }
    assert stage_norm_params and stage_norm_params <= roles["norm"]
    assert roles["embedding"] == {
        "embed.table.weight",
        "embed.dense_weight",
        "embed.dense_bias",
        "embed.dense_missing",
        "linear.table.weight",
        "linear.dense_weight",
        "linear.missing_weight",
    }


def test_weight_norm_gain_is_a_norm_parameter_and_direction_a_weight():
    roles, _ = roles_of("wn")
    assert any(n.endswith("parametrizations.weight.original0") for n in roles["norm"])
    assert any(n.endswith("parametrizations.weight.original1") for n in roles["weight"])


def test_no_norm_means_no_norm_group_and_decay_per_role():
    roles, model = roles_of("none")
    assert not roles["norm"]
    opt = build_optimizer(
        model, config_section("train", weight_decay=0.1, norm_weight_decay=0.0, embedding_weight_decay=0.01)
    )
    decay = {g["role"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"embedding": 0.01, "weight": 0.1, "bias": 0.0}


def test_lr_schedule_warmup_then_decay():
    tc = config_section("train", warmup_steps=4, decay="linear")
    f = [lr_factor(s, 14, tc) for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and f[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(f[4:], f[5:]))
    cos = config_section("train", decay="cosine")
    assert lr_factor(0, 10, cos) == 1.0 and lr_factor(5, 10, cos) == pytest.approx(0.5)
    assert lr_factor(3, 10, config_section("train")) == 1.0


def _step(model, opt, batch):
    import torch.nn.functional as F

    opt.zero_grad()
    F.binary_cross_entropy_with_logits(model(batch), batch.label).backward()
    opt.step()


def _one_id_batch(c1_id: int):
    ids = torch.tensor([[1, c1_id, 2], [3, c1_id, 1]])  # I2, C1, C2
    return Batch(ids, torch.tensor([[0.5], [1.5]]), torch.zeros(2, 1, dtype=torch.bool), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("sparse", [False, True])
def test_sparse_embeddings_update_only_the_rows_in_the_batch(sparse):
    """SparseAdam is lazy: a row absent from the batch keeps its value; dense Adam moves it by its momentum."""
    from ctr.train.optim import use_sparse_embeddings

    torch.manual_seed(0)
    model = build_model(schema(), *model_config("deepfm", 4, {"hidden": [8]}))
    if sparse:
        use_sparse_embeddings(model)
    opt = build_optimizer(model, config_section("train", lr=0.1))
    assert [type(o).__name__ for o in opt.optimizers] == (["Adam", "SparseAdam"] if sparse else ["Adam"])
    row = int(model.embed.offsets[1]) + 7  # C1 = 7
    _step(model, opt, _one_id_batch(7))
    after_first = model.embed.table.weight[row].clone()
    _step(model, opt, _one_id_batch(3))  # C1 = 7 absent
    moved = not torch.equal(model.embed.table.weight[row], after_first)
    assert moved != sparse
    assert model.embed.dense_weight.grad.layout == torch.strided  # dense-value vectors stay in Adam


def test_sparse_embeddings_follow_the_schedule_and_reject_weight_decay():
    from ctr.errors import ConfigError
    from ctr.train.optim import use_sparse_embeddings

    model = build_model(schema(), *model_config("deepfm", 4, {"hidden": [8]}))
    use_sparse_embeddings(model)
    opt = build_optimizer(model, config_section("train", lr=0.1))
    opt.set_lr_factor(0.25)
    assert {g["lr"] for g in opt.param_groups} == {0.025}
    assert "sparse_embedding" in {g["role"] for g in opt.param_groups}
    with pytest.raises(ConfigError, match="SparseAdam"):
        build_optimizer(model, config_section("train", embedding_weight_decay=1e-5))


def test_fused_adam_with_role_groups_matches_plain_adam():
    """The optimizer is torch's fused Adam on CPU; with per-role weight decay it takes the plain Adam steps."""
    _, model = roles_of("ln")
    ref = copy.deepcopy(model)
    ours = build_optimizer(model, config_section("train", lr=1e-2, weight_decay=0.1, embedding_weight_decay=0.01))
    assert ours.optimizers[0].defaults["fused"]
    decay = {"embedding": 0.01, "norm": 0.0, "weight": 0.1, "bias": 0.0}
    ref_params = dict(ref.named_parameters())
    plain = torch.optim.Adam(
        [
            {"params": [ref_params[n] for n, _ in ps], "weight_decay": decay[role]}
            for role, ps in param_roles(model).items()
            if ps
        ],
        lr=1e-2,
        foreach=False,
    )
    torch.manual_seed(1)
    for _ in range(5):
        ids = torch.stack([torch.randint(0, v, (32,)) for v in (5, 9, 4)], 1)
        batch = Batch(ids, torch.randn(32, 1), torch.zeros(32, 1, dtype=torch.bool), torch.randint(0, 2, (32,)).float())
        for m, opt in ((model, ours), (ref, plain)):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(m(batch), batch.label).backward()
            opt.step()
    for name, a in model.named_parameters():
        torch.testing.assert_close(a, ref_params[name], atol=1e-6, rtol=1e-5, msg=name)
