"""Fixtures of the app tests: wandb off, the thread setting restored, and one tiny trained run
shared by the tests that only read it (tiny runs: tiny_runs.TINY)."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import QUICK


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A run of `score-sde train` (tiny_runs.QUICK) that tests read and never change (copy it
    to edit it)."""
    from score_sde.cli import main

    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", f"run={run}", *QUICK]) == 0
    return run
