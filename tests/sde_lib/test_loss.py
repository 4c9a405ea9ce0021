"""The weighted DSM loss: minimised by the exact score, and importance sampling of t keeps its
expectation while cutting its variance."""

import math

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE, dsm_loss, sample_time, time_density

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


def mixture():
    return GaussianMixture(torch.tensor([[-1.5, 0.0], [1.5, 0.5]], dtype=D64),
                           torch.tensor([0.4, 0.6], dtype=D64))


def per_sample(sde, score_fn, x0, weighting, t, z):
    return dsm_loss(sde, score_fn, x0, weighting=weighting, t=t, noise=z, reduction="none")


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood", "none"])
def test_exact_score_minimises_the_loss(name, weighting):
    """Along a direction h, dL/d delta at the exact score is 2 E[lambda h . (s + z/sigma)] = 0: its
    estimate is within 4 standard errors of 0, while perturbed scores (scaled, shifted) have a
    significantly higher loss under the same t and noise (common random numbers)."""
    sde, gm = SDES[name], mixture()
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = gm.sample(n, generator=g)
    # away from t = 0, where the z / sigma term makes the SE large: sigma(t_lo) >= 0.3
    t_lo = 0.5 if name == "ve" else 0.2
    t = sample_time(sde, n, t_eps=t_lo, generator=g, dtype=D64)
    z = torch.randn(n, 2, generator=g, dtype=D64)
    exact = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    base = per_sample(sde, exact, x0, weighting, t, z)

    h = torch.tensor([0.7, -0.3], dtype=D64)
    x_t = sde.marginal(x0, t)[0] + sde.sigma(t)[:, None] * z
    lam = {"sigma2": sde.sigma(t) ** 2, "likelihood": sde.diffusion(t) ** 2,
           "none": torch.ones_like(t)}[weighting]
    slope = 2 * lam * ((exact(x_t, t) + z / sde.sigma(t)[:, None]) @ h)
    assert slope.mean().abs() < 4 * slope.std() / math.sqrt(n)

    for wrong in (lambda x, t: 0.8 * exact(x, t), lambda x, t: 1.2 * exact(x, t),
                  lambda x, t: exact(x, t) + 0.2 * h):
        diff = per_sample(sde, wrong, x0, weighting, t, z) - base
        assert diff.mean() > 4 * diff.std() / math.sqrt(n)


@pytest.mark.parametrize("name", SDES)
def test_importance_sampling_is_unbiased_and_lowers_the_variance(name):
    """For a Gaussian data distribution N(0, s0^2 I) the exact score gives
    E_{x0,z} ||sigma s + z||^2 = D alpha^2 s0^2 / (alpha^2 s0^2 + sigma^2), so the likelihood-weighted
    loss has the closed-form expectation int g^2/sigma^2 D alpha^2 s0^2/v dt / (T - t_eps), computed by
    quadrature. Both estimators hit it; importance sampling with a far smaller variance where
    g^2 / sigma^2 varies (VP, sub-VP); for VE it is constant in t and importance sampling is uniform."""
    sde, s0, d, t_eps = SDES[name], 0.7, 2, 1e-4
    gm = GaussianMixture(torch.zeros(1, d, dtype=D64), torch.tensor([s0], dtype=D64))
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731

    tq = torch.linspace(math.log(t_eps), math.log(sde.T), 200001, dtype=D64).exp()
    a2, s2, g2 = sde.alpha(tq) ** 2, sde.sigma(tq) ** 2, sde.diffusion(tq) ** 2
    exact = torch.trapezoid(g2 / s2 * d * a2 * s0**2 / (a2 * s0**2 + s2), tq).item() / (sde.T - t_eps)

    n, stats = 40000, {}
    for importance in (False, True):
        g = torch.Generator().manual_seed(1)
        x0 = gm.sample(n, generator=g)
        loss = dsm_loss(sde, score, x0, weighting="likelihood", t_eps=t_eps,
                        importance_sampling=importance, generator=g, reduction="none")
        mean, se = loss.mean().item(), loss.std().item() / math.sqrt(n)
        stats[importance] = loss.var().item()
        assert abs(mean - exact) < 5 * se + 1e-6 * exact, (importance, mean, exact, se)
    if name == "ve":
        tq = torch.linspace(t_eps, sde.T, 11, dtype=D64)
        torch.testing.assert_close(time_density(sde, tq, t_eps=t_eps, importance=True),
                                   time_density(sde, tq, t_eps=t_eps))
    else:
        assert stats[True] < stats[False] / 10


@pytest.mark.parametrize("name", SDES)
def test_importance_density_is_a_density_that_sampling_follows(name):
    sde, t_eps = SDES[name], 1e-3
    tq = torch.linspace(t_eps, sde.T, 400001, dtype=D64)
    q = time_density(sde, tq, t_eps=t_eps, importance=True)
    assert abs(torch.trapezoid(q, tq).item() - 1) < 1e-4
    t = sample_time(sde, 50000, t_eps=t_eps, importance=True,
                    generator=torch.Generator().manual_seed(2), dtype=D64)
    assert t.min() >= t_eps and t.max() <= sde.T
    # P(t < median of q) = 1/2 within binomial error
    cdf = torch.cumulative_trapezoid(q, tq)
    median = tq[1:][torch.searchsorted(cdf, torch.tensor(0.5, dtype=D64))]
    frac = (t < median).double().mean().item()
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / 50000) + 1e-4


def test_sigma2_weighting_is_the_ddpm_eps_loss():
    """With score = -eps_hat / sigma, sigma^2 ||s + z/sigma||^2 = ||eps_hat - z||^2."""
    sde = VPSDE()
    x0 = torch.randn(8, 3, 4, 4, dtype=D64)
    t = torch.rand(8, dtype=D64) * 0.9 + 0.05
    z = torch.randn_like(x0)
    eps_hat = torch.randn_like(x0)
    score_fn = lambda x, t: -eps_hat / sde.sigma(t)[:, None, None, None]  # noqa: E731
    loss = dsm_loss(sde, score_fn, x0, t=t, noise=z, reduction="none")
    torch.testing.assert_close(loss, (eps_hat - z).flatten(1).pow(2).sum(1))


def test_loss_is_reproducible_with_a_generator_and_differentiable():
    sde, x0 = VPSDE(), torch.randn(16, 2)
    w = torch.ones(2, requires_grad=True)
    score_fn = lambda x, t: -x * w  # noqa: E731
    a = dsm_loss(sde, score_fn, x0, generator=torch.Generator().manual_seed(5))
    b = dsm_loss(sde, score_fn, x0, generator=torch.Generator().manual_seed(5))
    assert a.item() == b.item()
    a.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
