"""The SDE coefficients agree with their marginals: by calculus, and by simulating the forward SDE."""

import math

import pytest
import torch
import torchsde

from score_sde.sde_lib import VESDE, VPSDE, SubVPSDE, beta_table

SDES = {
    "vp": lambda: VPSDE(),
    "vp-cosine": lambda: VPSDE(schedule="cosine"),
    "subvp": lambda: SubVPSDE(),
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=5.0),
    # a DDPM table (diffusers' "linear" betas): exact between the knots, where beta jumps
    "vp-discrete": lambda: VPSDE.from_betas(beta_table("linear")),
    "subvp-discrete": lambda: SubVPSDE.from_betas(beta_table("scaled_linear")),
}


@pytest.mark.parametrize("name", SDES)
def test_drift_and_diffusion_are_the_derivatives_of_the_marginal(name):
    """d log alpha/dt = f and d sigma^2/dt = 2 f sigma^2 + g^2 (the variance ODE of a linear SDE)."""
    sde = SDES[name]()
    t = torch.linspace(0.02, sde.T - 0.01, 37, dtype=torch.float64, requires_grad=True)
    log_alpha = torch.log(sde.alpha(t))
    var = sde.sigma(t) ** 2
    dlog_alpha, = torch.autograd.grad(log_alpha.sum(), t)
    dvar, = torch.autograd.grad(var.sum(), t)
    t = t.detach()
    f, g = sde.drift_coef(t), sde.diffusion(t)
    torch.testing.assert_close(dlog_alpha, f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dvar, 2 * f * sde.sigma(t) ** 2 + g**2, rtol=1e-10, atol=1e-12)


def test_vp_closed_forms():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    big_b = 0.1 * t + 0.5 * t**2 * 19.9
    torch.testing.assert_close(sde.alpha(t), torch.exp(-big_b / 2))
    torch.testing.assert_close(sde.sigma(t) ** 2, 1 - torch.exp(-big_b))
    torch.testing.assert_close(sde.diffusion(t) ** 2, sde.beta(t))
    torch.testing.assert_close(sde.drift_coef(t), -sde.beta(t) / 2)
    sub = SubVPSDE()
    torch.testing.assert_close(sub.sigma(t), 1 - torch.exp(-big_b))
    torch.testing.assert_close(sub.diffusion(t) ** 2, sde.beta(t) * (1 - torch.exp(-2 * big_b)))
    assert bool((sub.sigma(t[1:]) < sde.sigma(t[1:])).all())


def test_ve_closed_forms():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(sde.sigma(t), 0.01 * 5000.0**t)
    torch.testing.assert_close(sde.alpha(t), torch.ones_like(t))
    torch.testing.assert_close(sde.t_from_sigma(sde.sigma(t)), t)
    assert sde.prior_std == 50.0


def test_cosine_schedule_is_nichol_dhariwal():
    sde = VPSDE(schedule="cosine", cosine_s=0.008)
    t = torch.linspace(0, sde.T, 9, dtype=torch.float64)
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(sde.alpha(t) ** 2, f / f[0])
    assert sde.T == 0.9946 and float(sde.beta(sde.T)) < 400


@pytest.mark.parametrize("name", SDES)
def test_log_snr_is_decreasing_and_inverted_exactly(name):
    sde = SDES[name]()
    t = torch.linspace(1e-5, sde.T, 201, dtype=torch.float64)
    lam = sde.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(sde.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "vp-discrete"])
def test_forward_sde_simulated_by_torchsde_matches_the_marginal(name):
    """torchsde.sdeint on the SDE object itself: sample mean and variance of 4000 paths x 2 dims
    match alpha(t) x0 and sigma(t)^2 (VE: sigma(t)^2 - sigma_min^2, the variance the SDE adds from
    t = 0) within 5 standard errors of the sample size, plus the O(dt) bias of the scheme."""
    sde = SDES[name]()
    torch.manual_seed(0)
    n, x0 = 4000, torch.tensor([1.5, -0.5], dtype=torch.float64)
    ts = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    ys = torchsde.sdeint(sde, x0.expand(n, 2).clone(), ts, method="srk", dt=2e-3)  # (len(ts), n, 2)
    for y, t in zip(ys[1:], ts[1:]):
        mean_true = sde.alpha(t) * x0
        var_true = sde.sigma(t) ** 2 - (sde.sigma_min**2 if name == "ve" else 0.0)
        se_mean = torch.sqrt(var_true / n)
        se_var = var_true * math.sqrt(2 / (n - 1))
        assert torch.all((y.mean(0) - mean_true).abs() < 5 * se_mean + 1e-3), (t, y.mean(0))
        assert torch.all((y.var(0) - var_true).abs() < 5 * se_var + 1e-3 * var_true), (t, y.var(0))


def test_torchsde_contract_shapes():
    sde = VPSDE()
    y = torch.randn(7, 3)
    t = torch.tensor(0.4)
    assert sde.f(t, y).shape == (7, 3) and sde.g(t, y).shape == (7, 3)
    torch.testing.assert_close(sde.g(t, y), sde.diffusion(0.4).expand(7, 3))
