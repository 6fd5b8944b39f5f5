"""The parts of the training loop, each alone: one epoch of steps, evaluation, early stopping, the run directory,
the data sources; and ``fit`` over them."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from _tiny import tiny_batch, tiny_schema
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from ctr.config import load_config
from ctr.data.prepare import prepare_data
from ctr.errors import CTRError
from ctr.train.data_source import InMemorySource, StreamingSource, open_data_source
from ctr.train.distributed import DistContext
from ctr.train.early_stopping import EarlyStopping
from ctr.train.epoch import EpochTrainer
from ctr.train.evaluation import evaluate
from ctr.train.loop import fit
from ctr.train.run_dir import NoRunDir, RunDir
from ctr.types import Batch

CPU = torch.device("cpu")
NO_DECAY = ["train.weight_decay=0.0", "train.norm_weight_decay=0.0", "train.embedding_weight_decay=0.0"]


def run_config(*overrides: str):
    return load_config(
        [],
        [
            "train.progress=false",
            "train.device=cpu",
            "train.precision=fp32",
            "train.compile=false",
            "train.max_steps=0",
            "train.sparse_embeddings=false",
            *NO_DECAY,
            *overrides,
        ],
    )


class TinyCTR(nn.Module):
    """Logit from a sum of id embeddings and a linear map of the dense values; no randomness in forward."""

    def __init__(self) -> None:
        super().__init__()
        schema = tiny_schema()
        vocab = [f.vocab_size for f in schema.id_fields]
        self.register_buffer("offsets", torch.tensor([0] + vocab[:-1]).cumsum(0))
        self.emb = nn.Embedding(sum(vocab), 4)
        self.dense = nn.Linear(len(schema.dense_fields), 4)
        self.out = nn.Linear(4, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        h = self.emb(batch.ids + self.offsets).sum(1) + self.dense(batch.dense)  # (B, 4)
        return self.out(torch.relu(h)).squeeze(-1)  # (B,)


def tiny_model(seed: int = 0) -> TinyCTR:
    torch.manual_seed(seed)
    return TinyCTR()


BATCHES = [tiny_batch(batch_size=16, seed=i) for i in range(6)]


# one epoch of steps


def hand_written(model: nn.Module, epochs: int, lr: float, warmup: int) -> list[torch.Tensor]:
    """Adam with linear warm-up over ``warmup`` steps then linear decay to 0; returns every step's loss."""
    total = len(BATCHES) * epochs
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)

    def factor(s: int) -> float:
        return (s + 1) / warmup if s < warmup else 1.0 - min((s - warmup) / (total - warmup), 1.0)

    losses, step = [], 0
    for _ in range(epochs):
        for batch in BATCHES:
            for g in opt.param_groups:
                g["lr"] = lr * factor(step)
            loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch.label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            step += 1
    return losses


def test_epochs_equal_a_hand_written_adam_loop_with_its_schedule_and_loss_log():
    cfg = run_config(
        "train.lr=0.01", "train.warmup_steps=2", "train.decay=linear", "train.epochs=2", "train.log_every=4"
    ).train
    model, reference = tiny_model(), tiny_model()
    trainer = EpochTrainer(model, cfg, CPU, steps_per_epoch=len(BATCHES))
    records: list[dict] = []
    stats = [trainer.train_epoch(epoch, BATCHES, records.append) for epoch in (1, 2)]
    losses = hand_written(reference, epochs=2, lr=0.01, warmup=2)

    for name, p in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], p), name
    for s, epoch_losses in zip(stats, (losses[:6], losses[6:])):
        acc = torch.zeros(())
        for loss in epoch_losses:
            acc += loss
        assert s.train_loss == float(acc) / 6 and s.samples == 6 * 16
    assert [s.step for s in stats] == [6, 12]
    # every log_every steps, and at each epoch's last step
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 4), (1, 6), (2, 8), (2, 12)]
    assert records[0]["lr"] == pytest.approx(0.01 * (1 - 2 / 10)) and records[-1]["lr"] == 0.0
    assert records[1]["train_loss"] == stats[0].train_loss


def test_hooks_run_each_step_after_backward_and_before_the_update():
    cfg = run_config("train.lr=0.01", "train.epochs=1").train
    model = tiny_model()
    initial = model.out.weight.detach().clone()
    seen = []

    def hook(step, core, batch, loss):
        seen.append((step, core.out.weight.detach().clone(), core.out.weight.grad is not None))

    EpochTrainer(model, cfg, CPU, len(BATCHES), hooks=(hook,)).train_epoch(1, BATCHES)
    assert [s for s, _, _ in seen] == list(range(len(BATCHES)))
    assert torch.equal(seen[0][1], initial) and not torch.equal(seen[1][1], initial)
    assert all(has_grad for _, _, has_grad in seen)


def test_max_steps_stops_inside_an_epoch():
    cfg = run_config("train.max_steps=4", "train.epochs=3").train
    trainer = EpochTrainer(tiny_model(), cfg, CPU, len(BATCHES))
    stats = trainer.train_epoch(1, BATCHES)
    assert trainer.done and stats.step == 4 and stats.samples == 4 * 16


def test_state_dict_continues_training_exactly():
    """Optimizer moments, the step that fixes the LR: a trainer loaded from another's state trains on identically."""
    cfg = run_config("train.lr=0.01", "train.warmup_steps=3", "train.decay=cosine", "train.epochs=2").train
    straight = tiny_model()
    t = EpochTrainer(straight, cfg, CPU, len(BATCHES))
    t.train_epoch(1, BATCHES)
    t.train_epoch(2, BATCHES)

    first = tiny_model()
    t1 = EpochTrainer(first, cfg, CPU, len(BATCHES))
    t1.train_epoch(1, BATCHES)
    saved = copy.deepcopy({"model": first.state_dict(), "trainer": t1.state_dict()})
    resumed = tiny_model(seed=1)  # other initial weights and fresh Adam moments, all replaced by the saved state
    resumed.load_state_dict(saved["model"])
    t2 = EpochTrainer(resumed, cfg, CPU, len(BATCHES))
    t2.load_state_dict(saved["trainer"])
    assert t2.step == 6 and t2.lr == t1.lr
    t2.train_epoch(2, BATCHES)
    for name, p in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], p), name


# evaluation


class DenseLogit(nn.Module):
    """The first dense value as the logit; ``dropout`` checks that evaluation runs in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.9)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.drop(batch.dense[:, 0])


def test_evaluate_scores_the_whole_split_in_eval_mode():
    batches = [tiny_batch(batch_size=50, seed=s) for s in range(3)]
    logits = torch.cat([b.dense[:, 0] for b in batches]).double().numpy()
    labels = torch.cat([b.label for b in batches]).double().numpy()
    model = DenseLogit().train()
    got = evaluate(model, batches, CPU)
    assert got["auc"] == pytest.approx(roc_auc_score(labels, logits), abs=1e-12)
    assert got["logloss"] == pytest.approx(log_loss(labels, 1 / (1 + np.exp(-logits))), abs=1e-9)
    assert model.training, "the model's mode is restored"
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], CPU)


# early stopping


def test_early_stopping_stops_after_patience_bad_epochs_and_keeps_the_best_weights():
    model = nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    decisions = []
    for epoch, auc in enumerate([0.6, 0.7, 0.65, 0.7], start=1):  # 0.7 again is no improvement
        nn.init.constant_(model.weight, float(epoch))
        improved = stopping.update(epoch, {"auc": auc, "logloss": 1.0 - auc}, model)
        decisions.append((improved, stopping.stop))
    assert decisions == [(True, False), (True, False), (False, False), (False, True)]
    assert stopping.best_epoch == 2 and stopping.best_valid == {"auc": 0.7, "logloss": pytest.approx(0.3)}
    assert stopping.best_state["weight"].item() == 2.0, "a copy, not a view of the weights trained on"
    stopping.restore_best(model)
    assert model.weight.item() == 2.0


def test_an_improvement_resets_the_count_and_state_dict_continues_it():
    model = nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    for epoch, auc in enumerate([0.6, 0.5, 0.7, 0.6], start=1):
        stopping.update(epoch, {"auc": auc, "logloss": 0.0}, model)
    assert not stopping.stop and stopping.bad_epochs == 1
    again = EarlyStopping(patience=2)
    again.load_state_dict(copy.deepcopy(stopping.state_dict()))
    assert not again.update(5, {"auc": 0.69, "logloss": 0.0}, model) and again.stop and again.best_epoch == 3


def test_restore_best_before_any_epoch_leaves_the_model_alone():
    model = nn.Linear(1, 1)
    before = copy.deepcopy(model.state_dict())
    EarlyStopping(patience=1).restore_best(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# the run directory


def test_run_dir_writes_every_file_and_reads_them_back(tmp_path):
    cfg, schema, state = run_config(), tiny_schema(), tiny_model().state_dict()
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config(cfg)
    run.write_schema(schema)
    run.log_metrics({"step": 1})
    run.log_metrics({"step": 2})
    run.save_model(state)
    run.write_results({"test": {"auc": 0.75}})
    run.check_complete()
    assert run.read_config() == cfg
    assert [f.__dict__ for f in run.read_schema().fields] == [f.__dict__ for f in schema.fields]
    assert all(torch.equal(run.read_model_state()[k], v) for k, v in state.items())
    assert json.loads(run.results.read_text()) == {"test": {"auc": 0.75}}
    assert [json.loads(line)["step"] for line in run.metrics.read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in run.path.iterdir()) == sorted(
        ["config.yaml", "schema.json", "model.pt", "metrics.jsonl", "results.json"]
    )
    run.create()  # a new run in the same directory starts a new metrics log
    assert not run.metrics.exists() and run.model.exists()


class Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot be pickled")


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path):
    run = RunDir(tmp_path)
    run.save_model({"w": torch.ones(3)})
    run.write_results({"auc": 0.7})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CTRError, match=r"model.pt: could not be written \(cannot be pickled\)"):
        run.save_model({"w": torch.zeros(3), "other": Unsaveable()})
    with pytest.raises(TypeError):
        run.write_results({"auc": object()})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_no_run_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = NoRunDir()
    run.create()
    run.write_config(run_config())
    run.write_schema(tiny_schema())
    run.log_metrics({"step": 1})
    run.save_model(tiny_model().state_dict())
    run.write_results({"auc": 0.5})
    assert run.path is None and list(tmp_path.iterdir()) == []


def test_check_complete_names_the_missing_file(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(run_config())
    run.write_schema(tiny_schema())
    with pytest.raises(CTRError, match="missing model.pt"):
        run.check_complete()


# data sources


@pytest.fixture(scope="module")
def prepared(criteo_file, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    cfg = run_config(f"data.path={criteo_file}", f"data.cache_dir={cache}", "data.min_count=2")
    return prepare_data(cfg.data, progress=False)


def source_config(prepared, streaming: bool, batch_size: int = 256):
    return run_config(
        f"data.streaming={str(streaming).lower()}",
        "data.shuffle_buffer=500",
        f"train.batch_size={batch_size}",
        "train.eval_batch_size=100",
        "train.seed=3",
    )


def rows(batches) -> list[tuple]:
    """Each row as a hashable tuple of its ids, dense values and label."""
    return [
        tuple(b.ids[i].tolist() + b.dense[i].tolist() + [b.label[i].item()]) for b in batches for i in range(len(b))
    ]


@pytest.mark.parametrize("streaming", [False, True])
def test_sources_yield_steps_per_epoch_full_batches_of_distinct_training_rows(prepared, streaming):
    source = open_data_source(prepared, source_config(prepared, streaming))
    assert isinstance(source, StreamingSource if streaming else InMemorySource)
    n = prepared.schema.rows["train"]
    assert source.n_train == n and source.steps_per_epoch == n // 256 > 1
    epoch1 = list(source.train_batches(1))
    assert len(epoch1) == source.steps_per_epoch and all(len(b) == 256 for b in epoch1)
    train_rows = set(rows(open_data_source(prepared, source_config(prepared, False, batch_size=n)).train_batches(1)))
    seen = rows(epoch1)
    assert len(set(seen)) == len(seen) == source.steps_per_epoch * 256 and set(seen) <= train_rows
    assert rows(source.train_batches(1)) == seen, "an epoch's order depends only on (seed, epoch)"
    assert rows(source.train_batches(2)) != seen


def test_sources_evaluate_every_row_in_file_order(prepared):
    memory = open_data_source(prepared, source_config(prepared, False))
    stream = open_data_source(prepared, source_config(prepared, True))
    for split in ("valid", "test"):
        batches = list(memory.eval_batches(split))
        assert sum(len(b) for b in batches) == prepared.schema.rows[split]
        assert all(len(b) == 100 for b in batches[:-1])
        assert rows(stream.eval_batches(split)) == rows(batches)


def test_in_memory_ranks_get_disjoint_shards_of_equal_steps(prepared):
    cfg = source_config(prepared, False, batch_size=128)
    shards = [open_data_source(prepared, cfg, DistContext(rank=r, world_size=2)) for r in (0, 1)]
    assert shards[0].steps_per_epoch == prepared.schema.rows["train"] // 2 // 128
    parts = [rows(s.train_batches(1)) for s in shards]
    assert [len(p) for p in parts] == [shards[0].steps_per_epoch * 128] * 2
    assert not set(parts[0]) & set(parts[1])


def test_a_train_split_smaller_than_a_batch_is_an_error(prepared):
    with pytest.raises(CTRError, match="fewer than train.batch_size"):
        open_data_source(prepared, source_config(prepared, False, batch_size=prepared.schema.rows["train"] + 1))


# fit over the parts


def tiny_source(batch_size: int = 32) -> InMemorySource:
    splits = {
        "train": tiny_batch(batch_size=192, seed=10),
        "valid": tiny_batch(batch_size=96, seed=11),
        "test": tiny_batch(batch_size=96, seed=12),
    }
    return InMemorySource(splits, batch_size, eval_batch_size=40, seed=0)


class MonotoneDense(nn.Module):
    """``exp(a) * x + b`` of the first dense value: training moves a and b, never the ranking (the AUC)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.a.exp() * batch.dense[:, 0] + self.b


def test_fit_without_improvement_stops_after_patience_epochs(tmp_path):
    cfg = run_config("train.lr=0.01", "train.epochs=10", "train.patience=2")
    model = MonotoneDense()
    result = fit(model, tiny_source(), cfg, RunDir(tmp_path), CPU)
    assert [h["epoch"] for h in result.history] == [1, 2, 3] and result.epochs == 3 and result.best_epoch == 1
    assert len({h["valid_auc"] for h in result.history}) == 1 and len({h["valid_logloss"] for h in result.history}) == 3
    assert model.b.item() == RunDir(tmp_path).read_model_state()["b"].item(), "back to epoch 1's weights"


def test_fit_leaves_the_model_and_model_pt_holding_the_best_epoch(tmp_path):
    cfg = run_config("train.lr=0.05", "train.epochs=4", "train.patience=4", "train.log_every=100")
    model = tiny_model()
    result = fit(model, tiny_source(), cfg, RunDir(tmp_path), CPU)
    aucs = [h["valid_auc"] for h in result.history]
    assert result.best_epoch == 1 + aucs.index(max(aucs)) and result.best_valid["auc"] == max(aucs)
    assert evaluate(model, tiny_source().eval_batches("valid"), CPU) == result.best_valid
    saved = RunDir(tmp_path).read_model_state()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], "valid_auc" in r) for r in log] == [(e, v) for e in (1, 2, 3, 4) for v in (False, True)]
    assert dataclasses.asdict(result)["history"] == [r for r in log if "valid_auc" in r]


def test_a_run_directory_from_before_a_key_existed_reads_back_with_its_default(tmp_path):
    import yaml

    run = RunDir(tmp_path)
    run.write_config(run_config("train.lr=0.01"))
    saved = yaml.safe_load(run.config.read_text())
    del saved["train"]["on_nonfinite"]
    run.config.write_text(yaml.safe_dump(saved))
    cfg = run.read_config()
    assert cfg.train.on_nonfinite == "stop" and cfg.train.lr == 0.01
    saved["train"]["no_such_key"] = 1
    run.config.write_text(yaml.safe_dump(saved))
    with pytest.raises(CTRError, match=f"{run.config}: .*no_such_key"):
        run.read_config()
