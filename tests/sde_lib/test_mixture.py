"""The Gaussian-mixture oracle: its noised density normalises, has the right moments, and its score
is the gradient of its log-density, under every SDE."""

import math

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.05, sigma_max=5.0),
        "vp-cosine": VPSDE(schedule="cosine")}


def mixture_1d():
    return GaussianMixture(torch.tensor([[-2.0], [0.5], [3.0]], dtype=D64),
                           torch.tensor([0.3, 0.8, 0.5], dtype=D64),
                           torch.tensor([0.2, 0.5, 0.3], dtype=D64))


def mixture_2d():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=D64)
    stds = torch.tensor([[0.4, 0.2], [0.3, 0.6], [0.5, 0.5]], dtype=D64)  # diagonal
    return GaussianMixture(means, stds, torch.tensor([1.0, 2.0, 1.0], dtype=D64))


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t", [None, 0.05, 0.4, 0.9])
def test_noised_density_normalises_and_has_the_noised_moments_1d(name, t):
    """Quadrature of p_t on a fine grid: mass 1, mean alpha E[x0], second moment
    alpha^2 E[x0^2] + sigma^2 (x_t = alpha x0 + sigma z), computed from the formulas of the
    marginal, not from the mixture code."""
    sde, gm = SDES[name], mixture_1d()
    x = torch.linspace(-60, 60, 240001, dtype=D64)[:, None]
    p = torch.exp(gm.log_prob(x, t, None if t is None else sde))
    dx = 120 / 240000
    mass = torch.trapezoid(p, dx=dx)
    m1 = torch.trapezoid(p * x[:, 0], dx=dx)
    m2 = torch.trapezoid(p * x[:, 0] ** 2, dx=dx)
    w, mu, s = gm.weights, gm.means[:, 0], gm.stds[:, 0]
    tt = None if t is None else torch.tensor(t, dtype=D64)
    a, sig = (1.0, 0.0) if t is None else (sde.alpha(tt).item(), sde.sigma(tt).item())
    assert abs(mass.item() - 1) < 1e-9
    assert abs(m1.item() - a * (w * mu).sum().item()) < 1e-8
    assert abs(m2.item() - (a**2 * (w * (mu**2 + s**2)).sum() + sig**2).item()) < 1e-7


def test_noised_density_normalises_2d():
    sde, gm = SDES["vp"], mixture_2d()
    g = torch.linspace(-8, 8, 801, dtype=D64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    p = torch.exp(gm.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2), 0.2, sde)).reshape(801, 801)
    mass = torch.trapezoid(torch.trapezoid(p, g, dim=1), g)
    assert abs(mass.item() - 1) < 1e-8


@pytest.mark.parametrize("name", SDES)
def test_score_is_the_gradient_of_the_log_density(name):
    sde = SDES[name]
    for gm, shape in ((mixture_2d(), (2,)), (GaussianMixture(torch.randn(4, 1, 2, 3, dtype=D64),
                                                              torch.rand(4, 1, 2, 3, dtype=D64) + .2),
                                              (1, 2, 3))):
        x = (torch.randn(16, *shape, dtype=D64) * 2).requires_grad_(True)
        t = torch.linspace(0.01, 0.95 * sde.T, 16, dtype=D64)
        grad, = torch.autograd.grad(gm.log_prob(x, t, sde).sum(), x)
        torch.testing.assert_close(gm.score(x.detach(), t, sde), grad, rtol=1e-10, atol=1e-10)


def test_clean_density_is_the_vp_density_at_time_zero():
    gm, sde = mixture_2d(), VPSDE()
    x = torch.randn(10, 2, dtype=D64)
    torch.testing.assert_close(gm.log_prob(x, 0.0, sde), gm.log_prob(x))
    expected = torch.logsumexp(torch.stack([
        torch.log(w) + torch.distributions.Normal(m, s).log_prob(x).sum(1)
        for w, m, s in zip(gm.weights, gm.means, gm.stds)]), 0)
    torch.testing.assert_close(gm.log_prob(x), expected)


def test_samples_have_the_mixture_masses_and_moments():
    gm = mixture_2d()
    n = 40000
    x, k = gm.sample(n, generator=torch.Generator().manual_seed(0), return_components=True)
    freq = torch.bincount(k, minlength=3).to(D64) / n
    assert torch.all((freq - gm.weights).abs() < 5 * torch.sqrt(gm.weights * (1 - gm.weights) / n))
    cov = gm.covariance()
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert torch.all((x.mean(0) - gm.mean()).abs() < 5 * se_mean)
    # the SE of a covariance entry is at most sqrt(E[x_i^2 x_j^2] / n); 5 of them with a 4th-moment bound
    assert torch.all((torch.cov(x.T) - cov).abs() < 5 * torch.sqrt(
        (x.pow(2).T @ x.pow(2)) / n / n))


def test_posterior_and_far_away_points_are_finite_in_float32():
    gm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([0.05, 0.05]))
    x = torch.tensor([[1e3, -1e3], [0.0, 0.0], [-40.0, 3.0]])
    sde = VPSDE()
    for t in (None, 0.001):
        kw = {} if t is None else {"t": t, "sde": sde}
        assert torch.isfinite(gm.log_prob(x, **kw)).all()
        assert torch.isfinite(gm.score(x, **kw)).all()
        torch.testing.assert_close(gm.posterior(x, **kw).sum(1), torch.ones(3))
    # far from both, the nearer component takes all the responsibility
    assert gm.posterior(x[2:])[0, 0] > 0.999


def test_float64_in_float64_out():
    gm = GaussianMixture(torch.zeros(2, 3), torch.ones(2))
    x = torch.randn(4, 3, dtype=D64)
    assert gm.log_prob(x).dtype == D64 and gm.score(x, 0.5, VPSDE()).dtype == D64


def test_entropy_of_a_gaussian_by_monte_carlo():
    """A K=1 mixture is a Gaussian: -E log p equals the closed-form entropy within MC error."""
    s = torch.tensor([[0.5, 2.0]], dtype=D64)
    gm = GaussianMixture(torch.zeros(1, 2, dtype=D64), s)
    x = gm.sample(50000, generator=torch.Generator().manual_seed(3))
    nll = -gm.log_prob(x)
    exact = 0.5 * 2 * math.log(2 * math.pi * math.e) + torch.log(s).sum().item()
    assert abs(nll.mean().item() - exact) < 5 * nll.std().item() / math.sqrt(50000)
