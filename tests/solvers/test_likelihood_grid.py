"""The likelihood on a fixed log-SNR grid (`log_likelihood(method="unipc")`): its quadrature and
Vandermonde weights, its convergence order against the Gaussian-mixture oracle under every SDE,
the redrawn probes' unbiasedness and interval coverage on the grid's own path, and its settings."""

import math

import pytest
import torch

from score_sde.sde_lib import GaussianMixture
from score_sde.solvers.exponential import moment_weights
from score_sde.solvers.likelihood import log_likelihood
from score_sde.solvers.likelihood_grid import interpolatory_weights
from tests.solvers.solver_oracles import D64, discrete_vp, exact_score, make_sdes, mixture_nd

T_EPS = 1e-5


def test_moment_weights_solve_the_transposed_vandermonde_system():
    nodes, moments = [-2.0, -1.0, 0.5, 1.0], [0.3, -1.2, 2.5, 0.7]
    w = moment_weights(nodes, moments)
    vander = torch.tensor([[r ** j for r in nodes] for j in range(4)], dtype=D64)
    assert torch.allclose(vander @ torch.tensor(w, dtype=D64), torch.tensor(moments, dtype=D64),
                          atol=1e-13)


@pytest.mark.parametrize("points", [2, 3, 4])
def test_interpolatory_weights_integrate_polynomials_of_their_degree_exactly(points):
    """On uneven nodes, the rule with `points` nodes per interval integrates x^j exactly for
    j < points, and x^points only approximately (so the degree is not higher than claimed)."""
    nodes = [-1.0, -0.7, -0.1, 0.2, 0.9, 1.3, 2.0]
    w = torch.tensor(interpolatory_weights(nodes, points), dtype=D64)
    x = torch.tensor(nodes, dtype=D64)
    for j in range(points + 1):
        exact = (nodes[-1] ** (j + 1) - nodes[0] ** (j + 1)) / (j + 1)
        err = abs((w * x ** j).sum().item() - exact)
        assert err < 1e-12 if j < points else err > 1e-3
    assert interpolatory_weights([0.0, 1.0], 4) == [0.5, 0.5]  # one interval: trapezoid


def _mixture_case(sde_name: str):
    sde = discrete_vp() if sde_name == "discrete_vp" else make_sdes()[sde_name]
    gm = mixture_nd(8)
    x = gm.sample(64, generator=torch.Generator().manual_seed(0))
    return sde, gm, x, -gm.log_prob(x, T_EPS, sde)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve", "discrete_vp"])
@pytest.mark.parametrize(("order", "slope"), [(1, 1.8), (2, 2.7), (4, 3.6)])
def test_nll_converges_to_the_exact_density_at_its_order(sde_name, order, slope):
    """64 points of an 8-D mixture in float64, exact divergence and exact p_T: the mean error
    against -log p_{t_eps}(x) falls from 32 to 256 steps at the empirical order (UniC lifts
    orders 1 and 2 by one; order 4 is the quadrature's; measured 2.0, 3.0, 3.9-4.1), and order 4
    reaches 1e-4 nats. nfe = steps + 1 (the node at T serves the quadrature)."""
    sde, gm, x, exact = _mixture_case(sde_name)
    errors = []
    for steps in (32, 256):
        res = log_likelihood(sde, exact_score(gm, sde), x, method="unipc", steps=steps,
                             order=order, t_eps=T_EPS,
                             prior_logp=lambda z: gm.log_prob(z, sde.T, sde))
        assert res.nfe == steps + 1 and res.z.shape == x.shape and res.probes == 0
        errors.append((res.nll - exact).abs().mean().item())
    assert math.log2(errors[0] / errors[1]) / 3 >= slope
    if order == 4:
        assert errors[1] < 1e-4


def _grid_pair(probes: int, redraw: bool, n: int = 1000, steps: int = 32):
    """The grid's NLL with Hutchinson probes and with the exact divergence on the same path (the
    path never depends on the probes), 16-D mixture, VP, float64."""
    g = torch.Generator().manual_seed(16)
    gm = GaussianMixture(1.5 * torch.randn(3, 16, generator=g, dtype=D64),
                         0.3 + 0.5 * torch.rand(3, 16, generator=g, dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    sde = make_sdes()["vp"]
    x = gm.sample(n, generator=torch.Generator().manual_seed(0))
    kwargs = {"method": "unipc", "steps": steps, "t_eps": T_EPS,
              "prior_logp": lambda z: gm.log_prob(z, sde.T, sde)}
    exact = log_likelihood(sde, exact_score(gm, sde), x, **kwargs)
    hutch = log_likelihood(sde, exact_score(gm, sde), x, divergence="hutchinson", probes=probes,
                           redraw_probes=redraw, generator=torch.Generator().manual_seed(probes),
                           **kwargs)
    return exact, hutch


@pytest.mark.parametrize(("probes", "redraw"), [(2, True), (4, True), (16, True), (4, False)])
def test_hutchinson_on_the_grid_is_unbiased_and_its_intervals_cover(probes, redraw):
    """1000 points, 32 steps: the probes' estimate differs from the exact divergence's on the same
    path by noise alone: the same z, a mean difference within 4 standard errors of zero, and
    nominal 95% intervals that hold the exact-divergence NLL for 92.5-97% of the points (binomial
    SE 0.7%; Student-t on redrawn probes' spread, the per-coordinate terms for fixed ones).
    Measured at 16-64 steps: 93-95% redrawn (a few nodes carry most of the variance, so a
    column's error has heavier tails than the normal law the t interval assumes; 92.5% at 2
    probes and 16 steps), 94.7-94.8% fixed."""
    exact, hutch = _grid_pair(probes, redraw)
    assert torch.allclose(hutch.z, exact.z, rtol=0, atol=1e-12) and hutch.redrawn == redraw
    diff = hutch.nll - exact.nll
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff))
    lo, hi = hutch.interval(0.95)
    assert 0.925 <= ((lo <= exact.nll) & (exact.nll <= hi)).double().mean().item() <= 0.97


def test_redrawn_probes_average_their_noise_over_the_nodes():
    """One probe redrawn at every node has a smaller error than one probe held through the path
    (each node's error is weighted by w_j, and they add in quadrature)."""
    exact, fixed = _grid_pair(1, False, n=400)
    _, redrawn = _grid_pair(1, True, n=400)
    assert (redrawn.nll - exact.nll).pow(2).mean() < 0.5 * (fixed.nll - exact.nll).pow(2).mean()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": 0}, "steps"), ({"order": 5}, "order"), ({"order": True}, "order"),
    ({"method": "unipc2"}, "unipc"),
])
def test_bad_grid_settings_name_the_setting(kwargs, match):
    sde, gm, x, _ = _mixture_case("vp")
    settings = {"method": "unipc", **kwargs}
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, exact_score(gm, sde), x[:2], **settings)


def test_grid_state_in_float64_with_a_float32_score():
    """state_dtype=float64 keeps the path and the integral in float64 while the score sees float32:
    the NLL is within float32 rounding of the all-float64 solve."""
    sde, gm, x, _ = _mixture_case("ve")
    gm32 = GaussianMixture(gm.means.float(), gm.stds.float(), gm.weights.float())
    prior = lambda z: gm.log_prob(z.double(), sde.T, sde)  # noqa: E731
    ref = log_likelihood(sde, exact_score(gm, sde), x, method="unipc", steps=24, prior_logp=prior)
    mixed = log_likelihood(sde, exact_score(gm32, sde), x.float(), method="unipc", steps=24,
                           state_dtype="float64", prior_logp=prior)
    assert mixed.z.dtype == torch.float64
    assert (mixed.nll - ref.nll).abs().max() < 1e-3


def test_bits_per_dim_on_the_grid():
    """bits_per_dim passes the grid's settings through: one solve of steps + 1 evaluations over
    every dequantization draw, and probes redrawn by default (their spread gives stderr)."""
    from score_sde.solvers.likelihood import bits_per_dim

    sde = make_sdes()["vp"]
    x = (torch.randint(0, 256, (3, 1, 2, 2), generator=torch.Generator().manual_seed(0)).double()
         / 127.5 - 1)
    gm = GaussianMixture(torch.zeros(1, 1, 2, 2, dtype=D64), 0.5 * torch.ones(1, 1, 2, 2,
                                                                                 dtype=D64))
    res = bits_per_dim(sde, exact_score(gm, sde), x, method="unipc", steps=8,
                       divergence="hutchinson", probes=2, generator=torch.Generator().manual_seed(1))
    assert res.nfe == 9 and res.bpd.shape == (3,) and res.stderr is not None
    assert bool(torch.isfinite(res.bpd).all())


def test_redraw_default_is_fixed_for_torchdiffeq_and_redrawn_on_the_grid():
    """redraw_probes=None gives score_sde's fixed probes in a dopri5 solve and redrawn probes on
    the grid: the same numbers as the explicit settings, bit for bit."""
    sde, gm, x, _ = _mixture_case("vp")
    for method, explicit in (("dopri5", False), ("unipc", True)):
        runs = [log_likelihood(sde, exact_score(gm, sde), x[:8], divergence="hutchinson",
                               probes=2, method=method, rtol=1e-3, atol=1e-3, steps=8,
                               redraw_probes=redraw, generator=torch.Generator().manual_seed(3))
                for redraw in (None, explicit)]
        assert torch.equal(runs[0].nll, runs[1].nll) and runs[0].redrawn == explicit
