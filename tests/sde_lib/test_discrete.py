"""DDPM's discrete betas and the continuous VP SDE."""

import torch

from score_sde.sde_lib import VPSDE

D64 = torch.float64


def test_linear_discrete_betas_are_ddpm_and_back():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    betas = sde.discrete_betas(1000)
    torch.testing.assert_close(betas, torch.linspace(1e-4, 0.02, 1000, dtype=D64))
    back = VPSDE.from_discrete_betas(betas)
    assert abs(back.schedule.beta_min - 0.1) < 1e-12 and abs(back.schedule.beta_max - 20) < 1e-12


def test_discrete_alphas_bar_match_the_sde_to_first_order():
    """abar_i = prod_{j<=i} (1 - b_j) against alpha(i T / n)^2: the error is O(1/n), so it halves
    when n doubles."""
    sde = VPSDE()
    errors = []
    for n in (250, 500, 1000, 2000):
        abar = torch.cumprod(1 - sde.discrete_betas(n), 0)
        t = torch.arange(1, n + 1, dtype=D64) / n
        errors.append((abar - sde.alpha(t) ** 2).abs().max().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(1.8 < r < 2.2 for r in ratios), (errors, ratios)
    assert errors[-1] < 2e-3


def test_cosine_discrete_betas_reproduce_alpha_bar_exactly():
    sde = VPSDE(schedule="cosine")
    n = 1000
    betas = sde.discrete_betas(n)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, n + 1, dtype=D64) * sde.T / n
    assert betas.max() <= 0.999
    torch.testing.assert_close(abar, sde.alpha(t) ** 2, rtol=1e-10, atol=1e-12)
