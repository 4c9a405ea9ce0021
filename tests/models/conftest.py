"""Shared helpers for the models tests."""

import pytest
import torch
from torch import nn


def _randomize(model: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Overwrite every parameter with N(0, scale^2) draws, so that zero-initialised output layers
    do not hide what the rest of the network computes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: on a shared machine, intra-op threads cost far more than they
    save (each op waits for a descheduled thread), so run single-threaded and restore after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def randomize():
    return _randomize
