"""bits_per_dim on data whose discrete distribution is known exactly: a Gaussian discretized on the
8-bit grid. Its dequantized bits/dim must match the closed-form expectation level by level and the
exact discrete entropy on average, within Monte-Carlo error; no offset is left to explain."""

import math

import pytest
import torch

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers.likelihood import bits_per_dim, dequantize

D64 = torch.float64
T_EPS = 1e-5
SDE_ = VPSDE()
LEVELS = torch.arange(256, dtype=D64)
CELL = 1 / 128  # the width of one level's cell in [-1, 1] coordinates


def gaussian_at_t_eps(mean: torch.Tensor, std: torch.Tensor):
    """A one-component mixture with the given per-dim mean and std (shapes D), with its exact
    time-t_eps marginal N(m, v) per dim: the density the model's ODE evaluates."""
    gm = GaussianMixture(mean[None], std[None])
    t = torch.tensor(T_EPS, dtype=D64)
    a, s = SDE_.alpha(t), SDE_.sigma(t)
    return gm, a * mean, a**2 * std**2 + s**2


def expected_bpd(x: torch.Tensor, m: torch.Tensor, v: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the variance over one draw u of (-log N(y; m, v) / N + log 128) / log 2, y
    uniform on the cells of the levels x. With d = c - m (c the cell centre) and e = y - c uniform
    on [-w/2, w/2]: E (y - m)^2 = d^2 + w^2/12 and Var (y - m)^2 = 4 d^2 w^2/12 + w^4/80 - w^4/144.
    Returns (mean (B,), variance (B,)) in bits."""
    c = torch.floor((x + 1) * 127.5 + 0.5) * CELL - 1 + CELL / 2
    d2, w2, n = (c - m) ** 2, CELL**2, x[0].numel()
    nll = 0.5 * torch.log(2 * math.pi * v) + (d2 + w2 / 12) / (2 * v)
    var = (4 * d2 * w2 / 12 + w2**2 / 80 - w2**2 / 144) / (2 * v) ** 2
    bits = math.log(2)
    return ((nll.flatten(1).mean(1) + math.log(128)) / bits,
            var.flatten(1).sum(1) / (n * bits) ** 2)


def test_bits_per_dim_of_a_discretized_gaussian_is_its_entropy():
    """1-D, all 256 levels at once, 8 draws each. P(k) is the mass of the model's N(m, v) in
    cell k (normalised over the 256 cells): the data law whose dequantization the model nearly
    is. Level by level the estimate matches the closed form within its exact Monte-Carlo error
    (and the reported standard errors match those), and sum_k P(k) bpd(k) is the discrete
    entropy H(P) in bits up to KL(dequantized P || model), below 5e-4 bits here (curvature across
    a cell, 4e-5 nats, and the 1.6e-4 of mass the Gaussian puts outside [-1, 1])."""
    gm, m, v = gaussian_at_t_eps(torch.tensor([0.1], dtype=D64), torch.tensor([0.25], dtype=D64))
    x = (LEVELS / 127.5 - 1)[:, None]
    draws = 8
    res = bits_per_dim(SDE_, lambda y, t: gm.score(y, t, SDE_), x, dequant_draws=draws,
                       generator=torch.Generator().manual_seed(0), rtol=1e-7, atol=1e-7,
                       prior_logp=lambda z: gm.log_prob(z, SDE_.T, SDE_))
    assert res.bpd.shape == (256,) and res.stderr.shape == (256,)
    closed, var = expected_bpd(x, m, v)
    se = (var / draws).sqrt()
    z = (res.bpd - closed) / se
    assert ((res.bpd - closed).abs() < 5 * se + 1e-6).all()
    assert 0.75 < z.pow(2).mean().item() < 1.3  # 256 standard normals: 1 +- 0.09
    assert 0.85 < (res.stderr.pow(2) / se.pow(2)).mean().item() < 1.15  # chi2_7/7 averaged

    edges = torch.cat([LEVELS, LEVELS[-1:] + 1]) * CELL - 1
    cdf = torch.special.ndtr((edges - m) / v.sqrt())
    p = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    entropy_bits = -(p * torch.log2(p)).sum().item()
    gap = (p * closed).sum().item() - entropy_bits  # KL(dequantized P || model) in bits, exact
    assert 0 <= gap < 5e-4
    estimate = (p * res.bpd).sum().item()
    se_total = (p.pow(2) * se.pow(2)).sum().sqrt().item()
    assert abs(estimate - entropy_bits) < 4 * se_total + gap
    assert 6.5 < entropy_bits < 7.5  # an offset of log 256 instead of log 128 would miss by 1


def test_bits_per_dim_of_images_matches_the_closed_form():
    """(B, 3, 2, 2) images of a product Gaussian, several dequantization draws averaged: within
    the exact Monte-Carlo error of the closed form, per image; nll and bpd are one formula."""
    g = torch.Generator().manual_seed(1)
    mean = 0.4 * torch.rand(3, 2, 2, generator=g, dtype=D64) - 0.2
    std = 0.2 + 0.2 * torch.rand(3, 2, 2, generator=g, dtype=D64)
    gm, m, v = gaussian_at_t_eps(mean, std)
    x = ((gm.sample(6, generator=g).clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    res = bits_per_dim(SDE_, lambda y, t: gm.score(y, t, SDE_), x, dequant_draws=6, generator=g,
                       prior_logp=lambda z: gm.log_prob(z, SDE_.T, SDE_))
    closed, var = expected_bpd(x, m, v)
    assert ((res.bpd - closed).abs() < 5 * (var / 6).sqrt() + 1e-5).all()
    torch.testing.assert_close(res.bpd, (res.nll / 12 + math.log(128)) / math.log(2))


def test_dequantize_fills_each_levels_cell():
    """Level k's draws fall in [k/128 - 1, (k+1)/128 - 1), and the cells tile [-1, 1)."""
    x = (LEVELS / 127.5 - 1)[:, None].float()
    y = dequantize(x, draws=200, generator=torch.Generator().manual_seed(2))
    assert y.shape == (200, 256, 1) and y.dtype == torch.float32
    cells = torch.floor((y.double() + 1) * 128)
    assert (cells == LEVELS[None, :, None]).all()
    frac = (y.double() + 1) * 128 - LEVELS[None, :, None]
    assert abs(frac.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / frac.numel())


@pytest.mark.parametrize("x, match", [
    (torch.tensor([[1.5, 0.0]]), r"scaled to \[-1, 1\]"),
    (torch.tensor([[-1.01, 0.0]]), r"scaled to \[-1, 1\]"),
    (torch.tensor([[0.1, 0.0]]), "8-bit grid"),
    (torch.tensor([[float("nan"), 0.0]]), "non-finite"),
])
def test_bits_per_dim_rejects_images_it_cannot_score(x, match):
    with pytest.raises(ValueError, match=match):
        bits_per_dim(SDE_, lambda y, t: -y, x)


def test_bits_per_dim_rejects_bad_draw_counts():
    with pytest.raises(ValueError, match="dequant_draws"):
        bits_per_dim(SDE_, lambda y, t: -y, torch.zeros(1, 2), dequant_draws=0)
