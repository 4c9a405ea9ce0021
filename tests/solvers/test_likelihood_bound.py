"""nll_bound, the likelihood-weighted bound of Song, Durkan, Murray, Ermon (2021), against exact
answers: with the exact score and the exact p_T as prior it equals -log p_{t_eps}(x) sample by
sample; with a score off by a constant delta, it exceeds the true NLL on average by exactly
1/2 |delta|^2 int_{t_eps}^T g(t)^2 dt; and its standard errors are honest."""

import math

import pytest
import torch
from scipy.integrate import quad

from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture, SubVPSDE
from score_sde.solvers.likelihood_bound import nll_bound

D64 = torch.float64
T_EPS = 1e-5
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=50.0)}
GM = GaussianMixture(torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.5]], dtype=D64),
                     torch.tensor([[0.3, 0.5], [0.6, 0.4], [0.4, 0.4]], dtype=D64),
                     torch.tensor([0.5, 0.3, 0.2], dtype=D64))


def data_at_t_eps(sde: SDE, n: int, g: torch.Generator) -> torch.Tensor:
    """n draws of p_{t_eps}: mixture samples pushed through the marginal at t_eps."""
    x0 = GM.sample(n, generator=g)
    mean, std = sde.marginal(x0, T_EPS)
    return mean + std[:, None] * torch.randn(x0.shape, generator=g, dtype=D64)


def score(sde: SDE, shift: torch.Tensor | None = None):
    if shift is None:
        return lambda x, t: GM.score(x, t, sde)
    return lambda x, t: GM.score(x, t, sde) + shift


@pytest.mark.parametrize("name", SDES)
def test_bound_is_tight_for_the_exact_score_and_prior(name):
    """Per sample, within 5 reported standard errors of -log p_{t_eps}(x); the z-scores of 48
    samples have mean square 1 (+-0.2 at 48 samples, +-0.6 allowed for the heavier tails of the
    integrand); and the batch mean is within 4 standard errors."""
    sde = SDES[name]
    g = torch.Generator().manual_seed(0)
    x = data_at_t_eps(sde, 48, g)
    res = nll_bound(sde, score(sde), x, time_samples=2048, generator=g,
                    prior_logp=lambda z: GM.log_prob(z, sde.T, sde))
    exact = -GM.log_prob(x, T_EPS, sde)
    z = (res.bound - exact) / res.stderr
    assert res.bound.shape == res.stderr.shape == (48,) and res.nfe == 4096
    assert z.abs().max().item() < 5
    assert 0.4 < z.pow(2).mean().item() < 1.6
    assert abs((res.bound - exact).mean().item()) < 4 * res.stderr.pow(2).mean().sqrt() / math.sqrt(48)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_bound_exceeds_the_nll_by_the_score_error_on_average(name):
    """For s = grad log p_t + delta, E_x[bound(x)] + E_x[log p_{t_eps}(x)] over x ~ p_{t_eps} is
    1/2 |delta|^2 int g^2 dt exactly (the Fisher-divergence term of the bound; the cross term
    averages out since E grad log p_t = 0); 1-D quadrature of g^2 gives the integral."""
    sde = SDES[name]
    delta = torch.tensor([0.3, -0.2], dtype=D64)
    g = torch.Generator().manual_seed(1)
    x = data_at_t_eps(sde, 256, g)
    res = nll_bound(sde, score(sde, delta), x, time_samples=256, generator=g,
                    prior_logp=lambda z: GM.log_prob(z, sde.T, sde))
    gap = res.bound + GM.log_prob(x, T_EPS, sde)
    g2_integral = quad(lambda t: sde.diffusion(t).item() ** 2, T_EPS, sde.T, limit=200)[0]
    expected = 0.5 * delta.pow(2).sum().item() * g2_integral
    se = gap.std().item() / math.sqrt(256)
    assert abs(gap.mean().item() - expected) < 4 * se
    assert gap.mean().item() > 4 * se  # the bound is above the NLL on average, significantly


def test_closed_form_prior_term_matches_its_monte_carlo_estimate():
    """The default prior's E[-log pi(x_T)] is computed in closed form; passing the same prior as a
    function takes the Monte-Carlo path. Same draws of t and z: the two differ by MC error only."""
    sde = SDES["ve"]
    x = data_at_t_eps(sde, 16, torch.Generator().manual_seed(2))
    closed = nll_bound(sde, score(sde), x, time_samples=512,
                       generator=torch.Generator().manual_seed(3))
    mc = nll_bound(sde, score(sde), x, time_samples=512, prior_logp=sde.prior_logp,
                   generator=torch.Generator().manual_seed(3))
    assert ((closed.bound - mc.bound).abs() < 5 * mc.stderr).all()


def test_uniform_time_sampling_is_unbiased_too():
    sde = SDES["vp"]
    g = torch.Generator().manual_seed(4)
    x = data_at_t_eps(sde, 16, g)
    res = nll_bound(sde, score(sde), x, time_samples=2048, importance=False, generator=g,
                    prior_logp=lambda z: GM.log_prob(z, sde.T, sde))
    exact = -GM.log_prob(x, T_EPS, sde)
    assert abs((res.bound - exact).mean().item()) < 4 * res.stderr.pow(2).mean().sqrt() / math.sqrt(16)


def test_bound_works_in_float32_and_chunks():
    """float32 in, float32 out; chunked time draws give an estimate consistent with one call."""
    sde = SDES["vp"]
    x = data_at_t_eps(sde, 8, torch.Generator().manual_seed(5)).float()
    gm32 = GaussianMixture(GM.means.float(), GM.stds.float(), GM.weights.float())
    kwargs = {"time_samples": 64, "prior_logp": lambda z: gm32.log_prob(z, sde.T, sde)}
    one = nll_bound(sde, lambda y, t: gm32.score(y, t, sde), x,
                    generator=torch.Generator().manual_seed(6), **kwargs)
    assert one.bound.dtype == torch.float32 and torch.isfinite(one.bound).all()
    chunked = nll_bound(sde, lambda y, t: gm32.score(y, t, sde), x, chunk_size=16,
                        generator=torch.Generator().manual_seed(7), **kwargs)
    assert ((one.bound - chunked.bound).abs()
            < 5 * (one.stderr.pow(2) + chunked.stderr.pow(2)).sqrt()).all()
    with pytest.raises(ValueError, match="time_samples"):
        nll_bound(sde, score(sde), x.double(), time_samples=1)
    with pytest.raises(ValueError, match="chunk_size"):
        nll_bound(sde, score(sde), x.double(), chunk_size=0)
