"""Shared settings of the app tests: tiny runs, wandb off, one thread."""

from __future__ import annotations

import pytest
import torch

# a run of a few steps on 256 ring points with a 1-block MLP: seconds, not minutes
TINY = [
    "logger=none", "threads=1", "train.steps=6", "train.batch_size=32", "train.warmup=2",
    "train.progress=false", "train.log_every=1", "checkpoint.every=2", "checkpoint.keep=2",
    "data.n_train=256", "data.n_test=32", "model.net.hidden=16", "model.net.depth=1",
    "model.net.embed_dim=8", "eval.n_samples=16", "eval.nll_points=8", "eval.rtol=1e-3",
    "eval.atol=1e-3", "solver.steps=5",
]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
