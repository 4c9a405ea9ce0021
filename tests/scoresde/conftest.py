"""Fixtures of the app tests: wandb off, the thread setting restored (tiny runs: tiny_runs.TINY)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
