"""A minimal hand-written PyTorch DeepFM and training loop: the speed and AUC reference for ``benchmarks/train.py``.

Deliberately framework-free: tensors in memory, a per-epoch permutation, slicing, one embedding table with offsets,
linear + FM + MLP, Adam, mean BCE-with-logits. It only imports torch and numpy.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn


class HandDeepFM(nn.Module):
    def __init__(self, vocab_sizes: list[int], n_dense: int, dim: int = 16, hidden: tuple[int, ...] = (400, 400, 400)):
        super().__init__()
        sizes = torch.tensor(vocab_sizes)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes)
        self.emb = nn.Embedding(int(sizes.sum()), dim)
        self.lin = nn.Embedding(int(sizes.sum()), 1)
        nn.init.normal_(self.emb.weight, std=0.01)
        nn.init.zeros_(self.lin.weight)
        self.dense_v = nn.Parameter(torch.randn(n_dense, dim) * 0.01)
        self.dense_w = nn.Parameter(torch.zeros(n_dense))
        self.bias = nn.Parameter(torch.zeros(()))
        f = len(vocab_sizes) + n_dense
        layers, width = [], f * dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        idx = ids + self.offsets
        e = torch.cat([dense.unsqueeze(-1) * self.dense_v, self.emb(idx)], dim=1)  # (B, F, D)
        linear = self.lin(idx).squeeze(-1).sum(1) + dense @ self.dense_w + self.bias
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return linear + fm + self.mlp(e.flatten(1)).squeeze(-1)


def train_reference(ids, dense, label, vocab_sizes, batch_size=4096, lr=1e-3, epochs=1, seed=0, max_steps=None):
    """Train HandDeepFM; returns (model, samples_per_sec, seconds)."""
    torch.manual_seed(seed)
    model = HandDeepFM(vocab_sizes, dense.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    n, seen, t0, steps = len(label), 0, time.perf_counter(), 0
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            loss = loss_fn(model(ids[idx], dense[idx]), label[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += batch_size
            steps += 1
            if max_steps and steps >= max_steps:
                break
    seconds = time.perf_counter() - t0
    return model, seen / seconds, seconds


@torch.no_grad()
def predict_reference(model, ids, dense, batch_size=65536) -> np.ndarray:
    model.eval()
    return (
        torch.cat([model(ids[i : i + batch_size], dense[i : i + batch_size]) for i in range(0, len(ids), batch_size)])
        .double()
        .numpy()
    )
