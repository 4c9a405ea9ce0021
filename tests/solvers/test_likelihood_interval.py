"""Confidence intervals of Hutchinson likelihoods: the critical values against the law of the pivot
they are built on (simulated), and the intervals' coverage of the Gaussian-mixture oracle's exact
-log p_{t_eps}(x), per point and for the data set's mean, at 2, 4 and 16 probes."""

import pytest
import torch

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers.confidence import critical_value
from score_sde.solvers.likelihood import LikelihoodResult, log_likelihood

D64 = torch.float64
T_EPS = 1e-5


@pytest.mark.parametrize("m", [2, 4, 16])
def test_critical_value_covers_the_rank_one_pivot(m):
    """y = chi2_m / m drawn 200k times: Z = sqrt(m / 2) (y - 1) / sqrt(y) lies within
    +-critical_value(m) 95% of the time (binomial SE 0.05%), and c falls towards 1.96 with m."""
    g = torch.Generator().manual_seed(m)
    y = torch.randn(200_000, m, generator=g, dtype=D64).pow(2).mean(1)
    z = (m / 2) ** 0.5 * (y - 1) / y.sqrt()
    c = critical_value(m).item()
    assert abs((z.abs() <= c).double().mean().item() - 0.95) < 0.002
    assert critical_value(2 * m).item() < c and critical_value(1e6).item() == pytest.approx(1.96, abs=2e-3)
    both = critical_value(torch.tensor([m, 2 * m]))  # elementwise
    assert both.shape == (2,) and both[0].item() == c


@pytest.mark.parametrize("probes", [2, 4, 16])
def test_intervals_cover_the_exact_nll_at_their_level(probes):
    """1000 points of a 16-D mixture under VP, float64, with the exact p_T as prior: nominal 95%
    intervals hold -log p_{t_eps}(x) for 93-97% of the points (binomial SE 0.7%), and the mean
    intervals of 200 data sets of 5 points hold their exact mean for 92-98% (SE 1.5%). A normal
    interval on the same standard errors under-covers at 2 probes (below 90%)."""
    g = torch.Generator().manual_seed(16)
    gm = GaussianMixture(1.5 * torch.randn(3, 16, generator=g, dtype=D64),
                         0.3 + 0.5 * torch.rand(3, 16, generator=g, dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    sde = VPSDE()
    x = gm.sample(1000, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, lambda y, t: gm.score(y, t, sde), x, divergence="hutchinson",
                         probes=probes, rtol=1e-4, atol=1e-4,
                         prior_logp=lambda z: gm.log_prob(z, sde.T, sde),
                         generator=torch.Generator().manual_seed(probes))
    exact = -gm.log_prob(x, T_EPS, sde)
    lo, hi = res.interval(0.95)
    assert lo.shape == hi.shape == (1000,) and (lo < res.nll).all() and (res.nll < hi).all()
    assert 0.93 <= ((lo <= exact) & (exact <= hi)).double().mean().item() <= 0.97
    if probes == 2:
        normal = ((res.nll - exact).abs() <= 1.96 * res.stderr).double().mean().item()
        assert normal < 0.9
    hits = 0
    for k in range(0, 1000, 5):
        part = slice(k, k + 5)
        sub = LikelihoodResult(nll=res.nll[part], z=res.z[part], nfe=res.nfe,
                               stderr=res.stderr[part], probes=probes)
        mean_lo, mean_hi = sub.mean_interval(0.95)
        hits += mean_lo <= exact[part].mean().item() <= mean_hi
    assert 0.92 <= hits / 200 <= 0.98


def test_interval_needs_two_probes_with_error_bars_and_is_a_point_when_exact():
    """error_bars=False drops the per-coordinate terms: same NLL and steps, no interval."""
    gm = GaussianMixture(torch.zeros(1, 2, dtype=D64), torch.ones(1, 2, dtype=D64))
    sde, x = VPSDE(), torch.zeros(3, 2, dtype=D64)
    score_fn = lambda y, t: gm.score(y, t, sde)  # noqa: E731
    exact = log_likelihood(sde, score_fn, x)
    lo, hi = exact.interval()
    assert torch.equal(lo, exact.nll) and torch.equal(hi, exact.nll)
    one = log_likelihood(sde, score_fn, x, divergence="hutchinson")
    with pytest.raises(ValueError, match="probes >= 2"):
        one.interval()
    bare = log_likelihood(sde, score_fn, x, divergence="hutchinson", probes=3, error_bars=False,
                          generator=torch.Generator().manual_seed(0))
    full = log_likelihood(sde, score_fn, x, divergence="hutchinson", probes=3,
                          generator=torch.Generator().manual_seed(0))
    assert bare.stderr is None and full.stderr is not None and bare.nfe == full.nfe
    torch.testing.assert_close(bare.nll, full.nll, rtol=0, atol=1e-12)  # same steps, same sum
    with pytest.raises(ValueError, match="error_bars=True"):
        bare.mean_interval()
    with pytest.raises(ValueError, match="level"):
        exact.interval(level=1.5)
