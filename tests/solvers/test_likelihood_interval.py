"""Confidence intervals of Hutchinson likelihoods: the critical values against the law of the pivot
they are built on (simulated), and the intervals' coverage of the Gaussian-mixture oracle's exact
-log p_{t_eps}(x), per point and for the data set's mean, at 2, 4 and 16 probes."""

import dataclasses

import pytest
import torch

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers.confidence import critical_value, student_t_critical
from score_sde.solvers.likelihood import log_likelihood

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


@pytest.mark.parametrize(("dof", "c"), [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764),
                                       (15, 2.1314), (63, 1.9983), (1e6, 1.9602)])
def test_student_t_critical_values_match_the_tables(dof, c):
    """Two-sided 95% critical values of Student's t (standard tables; 1e4 degrees of freedom
    stand in for more), and 90% ones below them."""
    assert student_t_critical(dof, 0.95) == pytest.approx(c, abs=1e-4)
    assert student_t_critical(dof, 0.9) < c
    with pytest.raises(ValueError, match="dof"):
        student_t_critical(0.5)


@pytest.mark.parametrize(("probes", "redraw"), [(2, False), (4, False), (16, False), (2, True),
                                               (16, True)])
def test_intervals_cover_the_exact_nll_at_their_level(probes, redraw):
    """1000 points of a 16-D mixture under VP, float64, with the exact p_T as prior: nominal 95%
    intervals hold -log p_{t_eps}(x) for 93-97% of the points (binomial SE 0.7%), and the mean
    intervals of 200 data sets of 5 points hold their exact mean for 92-99% (SE 1.5%; conservative
    at 2 redrawn probes), with probes held fixed (per-coordinate terms, rtol 1e-4) or redrawn at
    every evaluation (Student-t on their spread; batch control at rtol 1e-3). A normal interval on
    the fixed probes' standard errors under-covers at 2 probes (below 90%)."""
    g = torch.Generator().manual_seed(16)
    gm = GaussianMixture(1.5 * torch.randn(3, 16, generator=g, dtype=D64),
                         0.3 + 0.5 * torch.rand(3, 16, generator=g, dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    sde = VPSDE()
    x = gm.sample(1000, generator=torch.Generator().manual_seed(0))
    tol = 1e-3 if redraw else 1e-4
    res = log_likelihood(sde, lambda y, t: gm.score(y, t, sde), x, divergence="hutchinson",
                         probes=probes, redraw_probes=redraw, rtol=tol, atol=tol,
                         error_control="batch" if redraw else "per_sample",
                         prior_logp=lambda z: gm.log_prob(z, sde.T, sde),
                         generator=torch.Generator().manual_seed(probes))
    exact = -gm.log_prob(x, T_EPS, sde)
    lo, hi = res.interval(0.95)
    assert lo.shape == hi.shape == (1000,) and (lo < res.nll).all() and (res.nll < hi).all()
    assert res.redrawn == redraw
    assert 0.93 <= ((lo <= exact) & (exact <= hi)).double().mean().item() <= 0.97
    if probes == 2 and not redraw:
        normal = ((res.nll - exact).abs() <= 1.96 * res.stderr).double().mean().item()
        assert normal < 0.9
    hits = 0
    for k in range(0, 1000, 5):
        part = slice(k, k + 5)
        sub = dataclasses.replace(res, nll=res.nll[part], z=res.z[part], stderr=res.stderr[part])
        mean_lo, mean_hi = sub.mean_interval(0.95)
        hits += mean_lo <= exact[part].mean().item() <= mean_hi
    assert 0.92 <= hits / 200 <= 0.99


def test_redrawn_probes_put_the_estimator_noise_under_the_tolerance():
    """With probes redrawn at every evaluation the step control sees the nodes' noise, so the
    tolerance bounds the estimator's error: on a 4-D mixture the error falls with rtol (fixed
    probes stay at their noise), stays unbiased (mean within 4 standard errors of the exact NLL)
    and is under half the fixed probes' at rtol 1e-3."""
    g = torch.Generator().manual_seed(3)
    gm = GaussianMixture(1.5 * torch.randn(2, 4, generator=g, dtype=D64),
                         0.3 + 0.5 * torch.rand(2, 4, generator=g, dtype=D64))
    sde = VPSDE()
    x = gm.sample(200, generator=torch.Generator().manual_seed(1))
    exact = -gm.log_prob(x, T_EPS, sde)
    err = {}
    for redraw, tol in ((True, 1e-2), (True, 1e-3), (False, 1e-3)):
        res = log_likelihood(sde, lambda y, t: gm.score(y, t, sde), x, divergence="hutchinson",
                             redraw_probes=redraw, error_control="batch", rtol=tol, atol=tol,
                             prior_logp=lambda z: gm.log_prob(z, sde.T, sde),
                             generator=torch.Generator().manual_seed(0))
        e = res.nll - exact
        assert e.mean().abs() < 4 * e.std() / 200**0.5
        err[redraw, tol] = e.abs().mean().item()
    assert err[True, 1e-3] < 0.5 * err[True, 1e-2]
    assert err[True, 1e-3] < 0.5 * err[False, 1e-3]


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
