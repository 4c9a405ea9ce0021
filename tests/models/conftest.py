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


@pytest.fixture
def randomize():
    return _randomize
