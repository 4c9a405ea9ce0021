"""The discrete-schedule VP SDE: a DDPM table of cumulative alphas, exactly, in DPM-Solver's time
convention (t_k = (k + 1) / N, log alpha piecewise linear in t), against diffusers' own schedulers."""

import math

import pytest
import torch

from score_sde.sde_lib import BETA_SCHEDULES, VPSDE, DiscreteSchedule, SubVPSDE, beta_table

D64 = torch.float64
N = 1000
T_K = torch.arange(1, N + 1, dtype=D64) / N


@pytest.mark.parametrize("name", BETA_SCHEDULES)
def test_alpha_at_the_knots_is_the_schedulers_alphas_cumprod(name):
    """alpha(t_k)^2 = alphas_cumprod[k] of diffusers' scheduler (1e-12), and beta_table builds its
    betas bit for bit."""
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule=name)
    abar = sched.alphas_cumprod.to(D64)
    sde = VPSDE.from_alphas_cumprod(sched.alphas_cumprod)
    torch.testing.assert_close(sde.alpha(T_K) ** 2, abar, rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.sigma(T_K) ** 2, 1 - abar, rtol=1e-12, atol=0)
    betas = beta_table(name, N)
    assert torch.equal(betas, sched.betas.to(D64))
    # from_betas: the same table, cumulated in float64 (diffusers cumulates in float32)
    from_betas = VPSDE.from_betas(betas)
    torch.testing.assert_close(from_betas.alpha(T_K) ** 2, torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)
    torch.testing.assert_close(from_betas.alpha(T_K) ** 2, abar, rtol=2e-6, atol=0)


def test_log_alpha_is_piecewise_linear_from_alpha_one_at_zero():
    """B = -log alpha^2 interpolates linearly between the knots, B(0) = 0, and beta = B' is the
    slope of the segment that ends at t (left-continuous): at t_k, DDPM's -N log(1 - betas[k])."""
    betas = beta_table("linear", N)
    sde = VPSDE.from_betas(betas)
    knots_b = torch.cat([torch.zeros(1, dtype=D64), -torch.log(torch.cumprod(1 - betas, 0))])
    assert sde.alpha(0.0).item() == 1.0 and sde.T == 1.0
    u = torch.rand(N, generator=torch.Generator().manual_seed(0), dtype=D64)
    t = (torch.arange(N, dtype=D64) + u) / N  # a random point in every segment
    torch.testing.assert_close(-2 * torch.log(sde.alpha(t)), (1 - u) * knots_b[:-1] + u * knots_b[1:],
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(sde.beta(t), N * (knots_b[1:] - knots_b[:-1]), rtol=1e-12, atol=0)
    torch.testing.assert_close(sde.beta(T_K[1:-1]), -N * torch.log1p(-betas[1:-1]), rtol=1e-9, atol=0)
    beta_0 = sde.beta(torch.tensor(0.0, dtype=D64)).item()
    assert beta_0 == pytest.approx(-N * math.log1p(-betas[0].item()), rel=1e-12)
    # DDPM's discrete betas come back from the table
    torch.testing.assert_close(sde.discrete_betas(N), betas, rtol=1e-9, atol=0)


@pytest.mark.parametrize("cls", [VPSDE, SubVPSDE])
def test_log_snr_inverse_is_exact_at_and_between_the_knots(cls):
    sde = cls.from_betas(beta_table("squaredcos_cap_v2", N))
    t = torch.cat([T_K, torch.rand(500, generator=torch.Generator().manual_seed(1), dtype=D64)])
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(t)), t, rtol=1e-10, atol=1e-13)


def test_float32_times_and_sub_vp():
    """float32 times give float32 coefficients that agree with float64 ones (mid-segment: at a knot
    float32 rounding may pick the neighbouring segment's beta); sub-VP takes the same table
    (sigma = 1 - alpha^2)."""
    sde = VPSDE.from_betas(beta_table("scaled_linear", N))
    t = (torch.arange(0, N, 7, dtype=D64) + 0.5) / N
    for method in ("alpha", "sigma", "diffusion", "drift_coef"):
        v32, v64 = getattr(sde, method)(t.float()), getattr(sde, method)(t)
        assert v32.dtype == torch.float32
        torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-6)
    sub = SubVPSDE.from_betas(beta_table("scaled_linear", N))
    torch.testing.assert_close(sub.sigma(t), 1 - sde.alpha(t) ** 2)
    assert not sde.smooth_coefficients and VPSDE().smooth_coefficients


@pytest.mark.parametrize("table, match", [
    (torch.tensor([0.9, 0.5, 0.5]), "strictly decreasing"),
    (torch.tensor([1.0, 0.5, 0.2]), r"\(0, 1\)"),
    (torch.tensor([0.9, 0.5, 0.0]), "zero-terminal-SNR"),
    (torch.tensor([0.9]), "at least 2"),
    (torch.ones(2, 3) * 0.5, "1-D"),
])
def test_bad_tables_are_rejected(table, match):
    with pytest.raises(ValueError, match=match):
        DiscreteSchedule(table)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="beta_schedule"):
        beta_table("cosine")
    with pytest.raises(ValueError, match="num_steps"):
        beta_table("linear", 1)
    with pytest.raises(ValueError, match="T must lie in"):
        VPSDE.from_betas(beta_table("linear"), T=1.5)
