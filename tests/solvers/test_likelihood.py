"""log_likelihood through the probability-flow ODE against the Gaussian-mixture oracle, whose noised
density log p_t is exact: the solve must reproduce -log p_{t_eps}(x) to the solver tolerance, the
Hutchinson estimate must be unbiased with an honest standard error, and bad input must fail clearly."""

import math

import pytest
import torch
from solver_oracles import discrete_vp

from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture, SubVPSDE
from score_sde.solvers import SolverError
from score_sde.solvers.divergence import draw_probes, exact_divergence, hutchinson_divergence
from score_sde.solvers.likelihood import log_likelihood

D64 = torch.float64
T_EPS = 1e-5
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=50.0),
        "vp-discrete": discrete_vp()}  # beta jumps at 1000 knots: solved in log-SNR time


def mixture(dim: int, dtype: torch.dtype = D64) -> GaussianMixture:
    g = torch.Generator().manual_seed(dim)
    means = 1.5 * torch.randn(3, dim, generator=g, dtype=dtype)
    stds = 0.3 + 0.5 * torch.rand(3, dim, generator=g, dtype=dtype)
    return GaussianMixture(means, stds, torch.tensor([0.5, 0.3, 0.2], dtype=dtype))


def oracle(gm: GaussianMixture, sde: SDE):
    """(exact score_fn, exact log p_T) of the mixture under the SDE."""
    return (lambda x, t: gm.score(x, t, sde)), (lambda z: gm.log_prob(z, sde.T, sde))


@pytest.mark.parametrize("dim", [2, 16])
@pytest.mark.parametrize("name", SDES)
def test_exact_nll_equals_minus_log_p_t_eps_for_every_sample(name, dim):
    """float64, rtol = atol = 1e-7, the analytic log p_T as prior: only the solver error remains,
    and every one of 256 samples is within 1e-3 nats of -log p_{t_eps}(x)."""
    sde, gm = SDES[name], mixture(dim)
    score_fn, log_p_T = oracle(gm, sde)
    x = gm.sample(256, generator=torch.Generator().manual_seed(0))
    res = log_likelihood(sde, score_fn, x, rtol=1e-7, atol=1e-7, prior_logp=log_p_T)
    exact = -gm.log_prob(x, T_EPS, sde)
    assert res.nll.shape == (256,) and res.z.shape == x.shape and res.stderr is None
    assert res.nll.dtype == D64 and res.nfe > 0
    assert (res.nll - exact).abs().max().item() <= 1e-3
    # the flow maps the data to p_T: z is distributed like the prior, checked by its mean norm
    assert abs(res.z.pow(2).sum(1).mean().item() / (dim * sde.prior_std**2) - 1) < 0.5


@pytest.mark.parametrize("name", SDES)
def test_default_prior_differs_by_log_p_T_minus_log_prior_at_z(name):
    """The solve does not depend on the prior; the NLL under the SDE's own N(0, prior_std^2 I)
    differs from the one under the exact p_T by log p_T(z) - log prior(z), sample by sample."""
    sde, gm = SDES[name], mixture(2)
    score_fn, log_p_T = oracle(gm, sde)
    x = gm.sample(64, generator=torch.Generator().manual_seed(1))
    exact = log_likelihood(sde, score_fn, x, rtol=1e-6, atol=1e-6, prior_logp=log_p_T)
    default = log_likelihood(sde, score_fn, x, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(default.z, exact.z, rtol=0, atol=1e-12)
    expected = exact.nll + log_p_T(exact.z) - sde.prior_logp(exact.z)
    torch.testing.assert_close(default.nll, expected, rtol=0, atol=1e-10)


def test_float32_runs_in_float32_and_meets_the_default_tolerance():
    sde, gm = SDES["vp"], mixture(2, torch.float32)
    score_fn, log_p_T = oracle(gm, sde)
    x = gm.sample(128, generator=torch.Generator().manual_seed(2))
    res = log_likelihood(sde, score_fn, x, prior_logp=log_p_T)
    assert res.nll.dtype == torch.float32 and res.z.dtype == torch.float32
    gm64 = GaussianMixture(gm.means.double(), gm.stds.double(), gm.weights.double())
    exact = -gm64.log_prob(x.double(), T_EPS, sde)
    assert (res.nll.double() - exact).abs().max().item() < 1e-3


def test_image_shaped_batch_and_no_grad_outside():
    """(B, C, H, W) data goes through the same code; x requiring grad and an outer no_grad change
    nothing, and nothing returned carries a graph."""
    sde = SDES["ve"]
    g = torch.Generator().manual_seed(3)
    gm = GaussianMixture(torch.randn(2, 1, 2, 2, generator=g, dtype=D64),
                         0.2 + torch.rand(2, 1, 2, 2, generator=g, dtype=D64))
    score_fn, log_p_T = oracle(gm, sde)
    x = gm.sample(32, generator=g).requires_grad_()
    res = log_likelihood(sde, score_fn, x, rtol=1e-7, atol=1e-7, prior_logp=log_p_T)
    assert not res.nll.requires_grad and not res.z.requires_grad
    with torch.no_grad():
        again = log_likelihood(sde, score_fn, x, rtol=1e-7, atol=1e-7, prior_logp=log_p_T)
    torch.testing.assert_close(again.nll, res.nll, rtol=0, atol=0)
    assert (res.nll - -gm.log_prob(x.detach(), T_EPS, sde)).abs().max().item() < 1e-3


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_and_its_standard_error_is_honest(noise):
    """400 copies of one point in 16-D, each with its own 4 probes, in one solve: the mean of the
    400 estimates is within 4 standard errors of the exact value (from the oracle), and the spread
    of the estimates matches the standard error each one reports: var(nll) / mean(stderr^2) is 1
    up to its sampling error (about 0.1 for 400 copies)."""
    sde, gm = SDES["vp"], mixture(16)
    score_fn, log_p_T = oracle(gm, sde)
    x0 = 0.5 * (gm.means[0] + gm.means[1])  # between two components: a curved log-density
    x = x0.expand(400, -1).clone()
    res = log_likelihood(sde, score_fn, x, divergence="hutchinson", probes=4, noise=noise,
                         rtol=1e-6, atol=1e-6, prior_logp=log_p_T,
                         generator=torch.Generator().manual_seed(4))
    exact = -gm.log_prob(x0[None], T_EPS, sde).item()
    spread = res.nll.std().item()
    assert spread > 1e-3  # the estimator really is random here
    assert abs(res.nll.mean().item() - exact) < 4 * spread / math.sqrt(400)
    ratio = res.nll.var().item() / res.stderr.pow(2).mean().item()
    assert 0.7 < ratio < 1.4


def test_hutchinson_probe_is_fixed_through_the_solve():
    """A probe redrawn at every evaluation makes the field random and the adaptive solver thrash;
    held fixed, the solve costs about what the exact one does."""
    sde, gm = SDES["vp"], mixture(16)
    score_fn, _ = oracle(gm, sde)
    x = gm.sample(32, generator=torch.Generator().manual_seed(5))
    exact = log_likelihood(sde, score_fn, x)
    hutch = log_likelihood(sde, score_fn, x, divergence="hutchinson",
                           generator=torch.Generator().manual_seed(6))
    assert hutch.nfe <= 1.5 * exact.nfe


def test_exact_divergence_is_the_jacobian_trace_in_any_chunking():
    """On (B, C, H, W) input, against the trace of autograd's full Jacobian, per sample."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 2, 3, 3, generator=g, dtype=D64)
    a = torch.randn(18, 18, generator=g, dtype=D64)

    def field(y):
        return torch.tanh(y.flatten(1) @ a).reshape(y.shape) * y

    trace = torch.stack([torch.autograd.functional.jacobian(
        lambda v: field(v[None])[0], x[i]).reshape(18, 18).trace() for i in range(3)])
    for chunk in (None, 1, 5, 18):
        value, div = exact_divergence(field, x, chunk_size=chunk)
        torch.testing.assert_close(value, field(x), rtol=0, atol=0)
        torch.testing.assert_close(div, trace, rtol=1e-12, atol=1e-12)
    # a network (Linear, SiLU) goes through torch.func the same way
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 32), torch.nn.SiLU(),
                              torch.nn.Linear(32, 18), torch.nn.Unflatten(1, (2, 3, 3))).double()
    net_trace = torch.stack([torch.autograd.functional.jacobian(
        lambda v: net(v[None])[0], x[i]).reshape(18, 18).trace() for i in range(3)])
    torch.testing.assert_close(exact_divergence(net, x, chunk_size=4)[1], net_trace,
                               rtol=1e-12, atol=1e-12)
    # with many random probes the Hutchinson mean approaches the trace
    probes = draw_probes(x, 4000, generator=g)
    _, est = hutchinson_divergence(field, x, probes)
    se = est.std(0) / math.sqrt(4000)
    assert ((est.mean(0) - trace).abs() < 4 * se).all()


def test_fixed_step_method_converges_to_the_exact_nll():
    """rk4 on a fixed grid (VE: a smooth field) is within 1e-3 nats of the closed form."""
    sde, gm = SDES["ve"], mixture(2)
    score_fn, log_p_T = oracle(gm, sde)
    x = gm.sample(16, generator=torch.Generator().manual_seed(9))
    res = log_likelihood(sde, score_fn, x, method="rk4", step_size=0.01, prior_logp=log_p_T)
    assert res.nfe == 4 * 100
    assert (res.nll - -gm.log_prob(x, T_EPS, sde)).abs().max().item() < 1e-3


# -- bad input ----------------------------------------------------------------------------------
def _setup():
    sde, gm = SDES["vp"], mixture(2)
    return sde, oracle(gm, sde)[0], gm.sample(8, generator=torch.Generator().manual_seed(8))


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4), "shape"),
    (torch.zeros(4, 2, dtype=torch.int64), "float32 or float64"),
    (torch.zeros(4, 2, dtype=torch.float16), "float32 or float64"),
    ([[0.0, 1.0]], "torch.Tensor"),
])
def test_bad_x_is_rejected(bad, match):
    sde, score_fn, _ = _setup()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, score_fn, bad)


def test_non_finite_x_names_the_sample():
    sde, score_fn, x = _setup()
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match=r"samples \[5\]"):
        log_likelihood(sde, score_fn, x)


@pytest.mark.parametrize("kwargs, match", [
    ({"divergence": "trace"}, "divergence must be one of"),
    ({"probes": 3}, "probes only applies"),
    ({"divergence": "hutchinson", "probes": 0}, "probes must be an int >= 1"),
    ({"divergence": "hutchinson", "noise": "uniform"}, "noise must be one of"),
    ({"method": "leapfrog"}, "method must be one of"),
    ({"method": "rk4"}, "step_size"),
    ({"rtol": 0.0}, "rtol"),
    ({"t_eps": 1.5}, "t_eps"),
    ({"prior_logp": lambda z: z}, "prior_logp must map"),
])
def test_bad_settings_are_rejected(kwargs, match):
    sde, score_fn, x = _setup()
    with pytest.raises(ValueError, match=match):
        log_likelihood(sde, score_fn, x, **kwargs)


def test_step_limit_names_the_sample_that_needs_small_steps():
    """Sample 3's field oscillates fast in t: the error names it and suggests looser tolerances."""
    sde, score_fn, x = _setup()

    def stiff(y, t):
        wobble = torch.zeros_like(y)
        wobble[3] = 50 * torch.sin(2000 * t[3])
        return score_fn(y, t) + wobble

    with pytest.raises(SolverError, match=r"max_steps = 20.*samples \[3\] \(of 8\).*Loosen") as err:
        log_likelihood(sde, stiff, x, max_steps=20)
    assert err.value.samples == [3] and err.value.setting == "max_steps" and 0 < err.value.t < 1


def test_non_finite_score_names_the_samples():
    sde, score_fn, x = _setup()

    def broken(y, t):
        s = score_fn(y, t)
        return torch.where(torch.arange(len(y))[:, None] == 6, float("nan"), s)

    with pytest.raises(SolverError, match=r"non-finite.*samples \[6\]") as err:
        log_likelihood(sde, broken, x)
    assert err.value.samples == [6]


@pytest.mark.parametrize("probes", [2, 16])
def test_probes_loop_and_vmap_give_the_same_terms(probes):
    """Several probes go through a loop of backward passes or one vmapped pass (by size): both
    give the same per-coordinate terms, and their sum is the Hutchinson estimate."""
    from score_sde.solvers import divergence

    g = torch.Generator().manual_seed(probes)
    w = torch.randn(12, 12, generator=g, dtype=torch.float64)
    fn = lambda y: torch.tanh(y @ w)  # noqa: E731
    x = torch.randn(5, 12, generator=g, dtype=torch.float64)
    v = divergence.draw_probes(x, probes, generator=g)
    terms = {}
    for batched in (False, True):
        value, vjp_fn = divergence._vjp(fn, x, batched=batched)
        terms[batched] = vjp_fn(v) * v
        torch.testing.assert_close(value, fn(x))
    torch.testing.assert_close(terms[False], terms[True], rtol=0, atol=1e-12)
    _, est = divergence.hutchinson_divergence(fn, x, v)
    torch.testing.assert_close(est, terms[True].sum(-1), rtol=0, atol=1e-12)
