"""High-order samplers (DPM-Solver++, EDM's Heun, adaptive reverse SDE) against exact answers:
empirical convergence order against a tight dopri5 reference of the probability-flow ODE, and the
mixture reproduced by the stochastic ones. Exact score of a Gaussian mixture, float64."""

import math

import pytest
import torch
from torchdiffeq import odeint

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE
from score_sde.solvers.adaptive import adaptive_sde
from score_sde.solvers.exponential import dpm_solver_multistep, dpm_solver_singlestep
from score_sde.solvers.grids import karras
from score_sde.solvers.heun import heun

D64 = torch.float64
T_EPS = 1e-2
SDES = {"vp": VPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


def mixture() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], dtype=D64),
                           torch.tensor([0.5, 0.6, 0.5], dtype=D64))


def pf_ode_reference(sde, score_fn, x_T, t_eps, tol=1e-10):
    """dopri5 at rtol = atol = tol on the PF-ODE written as d(x / alpha) / du = rho eps_hat with
    u = log rho = log(sigma / alpha) (smooth, so a tight tolerance is cheap)."""
    ends = torch.tensor([sde.T, t_eps], dtype=D64)
    u = (-0.5 * sde.log_snr(ends))

    def f(u_, xb):
        t = sde.t_from_log_snr(-2 * u_).clamp(t_eps, sde.T)
        a, s = sde.alpha(t), sde.sigma(t)
        return torch.exp(u_) * (-s) * score_fn(a * xb, t.expand(xb.shape[0]))

    a = sde.alpha(ends)
    xb = odeint(f, x_T / a[0], u, rtol=tol, atol=tol, method="dopri5",
                options={"step_t": u[1:]})[-1]
    return a[1] * xb


@pytest.fixture(scope="module", params=list(SDES))
def problem(request):
    sde, gm = SDES[request.param], mixture()
    score_fn = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    x_T = sde.prior_sample((16, 2), generator=torch.Generator().manual_seed(0), dtype=D64)
    return sde, score_fn, x_T, pf_ode_reference(sde, score_fn, x_T, T_EPS)


SOLVERS = {  # name: (sampler, expected global order)
    "dpm++1": (lambda *a, **k: dpm_solver_multistep(*a, order=1, lower_order_final=False, **k), 1),
    "dpm++2M": (lambda *a, **k: dpm_solver_multistep(*a, order=2, lower_order_final=False, **k), 2),
    "dpm++2S": (lambda *a, **k: dpm_solver_singlestep(*a, order=2, **k), 2),
    "dpm++3S": (lambda *a, **k: dpm_solver_singlestep(*a, order=3, **k), 3),
    "heun": (heun, 2),
    # UniPC: the corrector adds one order (UniC-p after a p-th order step); with order 3 the
    # start-up step (order 1, corrected to 2: local error h^3) keeps the global order at 3.
    "unipc1": (lambda *a, **k: dpm_solver_multistep(*a, order=1, corrector="unipc",
                                                    lower_order_final=False, **k), 2),
    "unipc2": (lambda *a, **k: dpm_solver_multistep(*a, order=2, corrector="unipc",
                                                    lower_order_final=False, **k), 3),
    "unipc3": (lambda *a, **k: dpm_solver_multistep(*a, order=3, corrector="unipc",
                                                    lower_order_final=False, **k), 3),
}


@pytest.mark.parametrize("name", SOLVERS)
def test_empirical_order(problem, name):
    """RMS error against the reference when the steps double: log2(ratio) -> the order."""
    sde, score_fn, x_T, ref = problem
    sampler, order = SOLVERS[name]
    errs = [(sampler(sde, score_fn, x_T, steps=n, t_eps=T_EPS).x - ref).pow(2).mean().sqrt().item()
            for n in (20, 40, 80)]
    observed = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert abs(observed[-1] - order) < 0.35, (errs, observed)


def test_three_step_multistep_beats_two_step(problem):
    """DPM-Solver++ 3M (DPM-Solver's reference update, whose D2 term is half the expansion's, and a
    first-order start-up step) is globally second order; its error is below 2M's from 20 steps on
    (at 10 steps of 0.7 in half-log-SNR its extrapolation overshoots: 2M is the safer choice)."""
    sde, score_fn, x_T, ref = problem
    for n in (20, 40, 80):
        e = [(dpm_solver_multistep(sde, score_fn, x_T, order=k, steps=n, t_eps=T_EPS).x - ref)
             .pow(2).mean().sqrt().item() for k in (2, 3)]
        assert e[1] < e[0], (n, e)


def test_nfe_counts():
    sde, gm = SDES["vp"], mixture()
    calls = []

    def score_fn(x, t):
        calls.append(1)
        return gm.score(x, t, sde)

    x_T = sde.prior_sample((4, 2), dtype=D64)
    for sampler, nfe in ((lambda: dpm_solver_multistep(sde, score_fn, x_T, order=3, steps=7), 7),
                         (lambda: dpm_solver_singlestep(sde, score_fn, x_T, order=3, steps=7), 21),
                         (lambda: heun(sde, score_fn, x_T, steps=7), 14)):
        calls.clear()
        assert sampler().nfe == nfe == len(calls)


def test_karras_grid():
    sde = VPSDE()
    ts = karras(sde, 10, t_eps=1e-3, rho=7.0)
    rho = torch.exp(-0.5 * sde.log_snr(ts))
    expected = torch.linspace(rho[0].item() ** (1 / 7), rho[-1].item() ** (1 / 7), 11,
                              dtype=D64) ** 7
    torch.testing.assert_close(rho, expected, rtol=1e-9, atol=0)
    assert ts[0] == sde.T and ts[-1] == 1e-3 and bool((ts[1:] < ts[:-1]).all())


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0)],
                         ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("sampler", ["adaptive_sde", "heun_churn", "dpm++2M"])
def test_samplers_reproduce_the_mixture(sde, sampler):
    """x_T drawn from the exact p_T (so that no prior mismatch hides in the result): component masses
    within 5 binomial SE + 0.01 and the mean within 5 SE + 0.02 (the discretization error at these
    settings). 10k samples; 4k for the adaptive solver, which runs until its slowest sample ends."""
    gm = GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, -3.0]], dtype=D64),
                         torch.tensor([0.5, 0.4, 0.6], dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    score_fn = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    n = 4000 if sampler == "adaptive_sde" else 10000
    mean_T, std_T = sde.marginal(gm.sample(n, generator=g), sde.T)
    x_T = mean_T + std_T[:, None] * torch.randn(n, 2, generator=g, dtype=D64)
    if sampler == "adaptive_sde":
        result = adaptive_sde(sde, score_fn, x_T, rtol=2e-2, atol=1e-2, t_eps=1e-3, generator=g)
    elif sampler == "heun_churn":
        result = heun(sde, score_fn, x_T, steps=40, t_eps=1e-3, churn=20.0, generator=g)
    else:
        result = dpm_solver_multistep(sde, score_fn, x_T, order=2, steps=30, t_eps=1e-3)
    x = result.x
    assert torch.isfinite(x).all()
    masses = torch.bincount(gm.posterior(x).argmax(1), minlength=3).double() / n
    se = torch.sqrt(gm.weights * (1 - gm.weights) / n)
    assert torch.all((masses - gm.weights).abs() < 5 * se + 0.01), (masses, result.nfe)
    se_mean = torch.sqrt(torch.diag(gm.covariance()) / n)
    assert torch.all((x.mean(0) - gm.mean()).abs() < 5 * se_mean + 0.02), x.mean(0)


def test_adaptive_sde_spends_fewer_evaluations_at_looser_tolerance():
    sde, gm = VPSDE(), mixture()
    score_fn = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    x_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(1), dtype=D64)
    nfe = [adaptive_sde(sde, score_fn, x_T, rtol=r, atol=r, generator=torch.Generator()
                        .manual_seed(2)).nfe for r in (3e-3, 1e-2, 1e-1)]
    assert nfe[0] > nfe[1] > nfe[2], nfe


@pytest.mark.parametrize("call, match", [
    (lambda s, f, x: dpm_solver_multistep(s, f, x, order=4), "order"),
    (lambda s, f, x: dpm_solver_singlestep(s, f, x, order=0), "order"),
    (lambda s, f, x: heun(s, f, x, churn=-1.0), "churn"),
    (lambda s, f, x: heun(s, f, x, steps=0), "steps"),
    (lambda s, f, x: adaptive_sde(s, f, x, rtol=0.0), "rtol"),
    (lambda s, f, x: adaptive_sde(s, f, x, max_attempts=2, rtol=1e-8, atol=1e-8), "max_attempts"),
    (lambda s, f, x: dpm_solver_multistep(s, f, x[0]), "x_T"),
])
def test_bad_input(call, match):
    sde = VPSDE()
    with pytest.raises(ValueError, match=match):
        call(sde, lambda x, t: -x, torch.randn(3, 2))
