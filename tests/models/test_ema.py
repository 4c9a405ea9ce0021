"""EMA of the weights: closed forms with and without warmup, buffers, state_dict round trip."""

import io

import pytest
import torch
from torch import nn

from score_sde.models import EMA, MLP

D64 = torch.float64


class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.bn(self.lin(x))


def set_params(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_constant_decay_closed_form():
    """From shadow_0 = w0, n updates towards constant w give d^n w0 + (1 - d^n) w."""
    model = nn.Linear(4, 3).double()
    w0 = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.9)
    set_params(model, 2.5)
    for _ in range(7):
        ema.update(model)
    assert ema.num_updates == 7
    for avg, start in zip(ema.module.parameters(), w0, strict=True):
        torch.testing.assert_close(avg, 0.9**7 * start + (1 - 0.9**7) * 2.5, rtol=1e-14, atol=1e-14)


def test_warmup_closed_form():
    """d_k = min(decay, (1 + k) / (10 + k)): the shadow is w + prod_k d_k (w0 - w)."""
    model = nn.Linear(2, 2).double()
    w0 = [p.detach().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.5, warmup=True)
    set_params(model, -1.0)
    decays = []
    for _ in range(12):
        decays.append(ema.current_decay())
        ema.update(model)
    assert decays[:3] == [1 / 10, 2 / 11, 3 / 12] and decays[-1] == 0.5
    prod = torch.tensor(decays, dtype=D64).prod()
    for avg, start in zip(ema.module.parameters(), w0, strict=True):
        torch.testing.assert_close(avg, -1.0 + prod * (start + 1.0), rtol=1e-14, atol=1e-14)


def test_buffers_are_copied_not_averaged():
    model = WithBuffers()
    ema = EMA(model, decay=0.99)
    model.train()(torch.randn(16, 3) + 5.0)  # moves the BatchNorm running statistics
    model.count += 3
    ema.update(model)
    for (name, avg), (_, new) in zip(ema.module.named_buffers(), model.named_buffers(),
                                     strict=True):
        assert torch.equal(avg, new), name


def test_shadow_is_independent_and_frozen():
    model = MLP(2, hidden=8, depth=1, embed_dim=8)
    ema = EMA(model)
    set_params(model, 7.0)
    assert not any(bool((p == 7.0).any()) for p in ema.module.parameters())
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_state_dict_round_trip_through_weights_only_load():
    torch.manual_seed(0)
    model = MLP(2, hidden=8, depth=1, embed_dim=8)
    ema = EMA(model, decay=0.9, warmup=True)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    other = EMA(MLP(2, hidden=8, depth=1, embed_dim=8), decay=0.5)
    other.load_state_dict(state)
    assert (other.decay, other.warmup, other.num_updates) == (0.9, True, 3)
    for (name, a), (_, b) in zip(ema.module.state_dict().items(),
                                 other.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # includes the Fourier frequencies buffer
    # and the restored EMA continues exactly like the original
    ema.update(model)
    other.update(model)
    for a, b in zip(ema.module.parameters(), other.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_validation():
    with pytest.raises(ValueError, match="decay must lie in \\[0, 1\\), got 1.0"):
        EMA(nn.Linear(2, 2), decay=1.0)
    ema = EMA(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="differ from the EMA copy's"):
        ema.update(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="EMA state must hold"):
        ema.load_state_dict({"module": {}})
