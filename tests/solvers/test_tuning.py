"""Grids tuned on a pilot batch (solvers.tuning): the equidistribution rule on an exact profile,
and tuned grids judged on held-out draws of p_T against the tight PF-ODE solution, exact score of a
Gaussian mixture in float64."""

import functools

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture
from score_sde.solvers import grids
from score_sde.solvers.ddim import ddim
from score_sde.solvers.exponential import dpm_solver_multistep
from score_sde.solvers.ode import probability_flow
from score_sde.solvers.tuning import equidistributed, tune_grid

D64 = torch.float64
T_EPS = 1e-3
UNIPC3 = functools.partial(dpm_solver_multistep, order=3, corrector="unipc")


def mixture() -> GaussianMixture:
    """Three well-separated modes of unequal weight and spread (2-D)."""
    return GaussianMixture(torch.tensor([[-2.0, 0.5], [2.0, 1.5], [0.0, -2.5]], dtype=D64),
                           torch.tensor([[0.3, 0.5], [0.6, 0.3], [0.4, 0.4]], dtype=D64),
                           torch.tensor([1.0, 2.0, 3.0], dtype=D64))


def draws(gm, sde, n, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = gm.sample(n, generator=g)
    return sde.alpha(sde.T) * x0 + sde.sigma(sde.T) * torch.randn(x0.shape, generator=g, dtype=D64)


@pytest.fixture(scope="module", params=["vp", "ve"])
def problem(request):
    """sde, score, a pilot of p_T draws, held-out draws and their PF-ODE solutions."""
    sde, gm = {"vp": VPSDE(), "ve": VESDE()}[request.param], mixture()
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    held = draws(gm, sde, 1000, seed=2)
    ref = probability_flow(sde, score, held, rtol=1e-9, atol=1e-9, t_eps=T_EPS).x
    return sde, score, draws(gm, sde, 300, seed=1), held, ref


def rms_error(x, ref):
    return (x - ref).norm(dim=1).pow(2).mean().div(x.shape[1]).sqrt().item()


def test_equidistribution_follows_the_error_density():
    """x0_hat = e^(a lam) has |d^p x0_hat / d lam^p| = a^p e^(a lam): with no floor every step must
    hold the same mass of the density e^(c lam), c = a / (p + 1), the rule's optimum."""
    a, order, steps = 2.0, 3, 12
    lam = torch.linspace(-2, 3, 2001, dtype=D64)
    x0_hat = torch.exp(a * lam)[:, None, None].expand(-1, 4, 2)
    out = equidistributed(lam, x0_hat, steps, order, floor=0.0)
    assert out[0] == lam[0] and out[-1] == lam[-1] and bool((out.diff() > 0).all())
    c = a / (order + 1)
    mass = torch.exp(c * out).diff()
    assert (mass.max() / mass.min()).item() < 1.002


def test_floor_spreads_steps_where_the_profile_vanishes():
    """A profile that is zero on half the range gets no steps there without a floor and some with."""
    lam = torch.linspace(0, 2, 401, dtype=D64)
    x0_hat = (torch.clamp(lam - 1, min=0) ** 4)[:, None, None]
    bare = equidistributed(lam, x0_hat, 10, 3, floor=0.0)
    floored = equidistributed(lam, x0_hat, 10, 3, floor=0.5)
    assert int((bare[1:-1] < 1).sum()) == 0
    assert int((floored[1:-1] < 1).sum()) >= 1


def test_grid_is_valid_and_reproducible(problem):
    sde, score, pilot, _, _ = problem
    tuned = tune_grid(sde, score, pilot, 7, search_evals=20)
    ts = tuned.ts
    assert tuned.eval_ts is None and tuned.kwargs == {"ts": ts}
    assert ts.dtype == D64 and ts.shape == (8,)
    assert ts[0].item() == sde.T and ts[-1].item() == T_EPS and bool((ts.diff() < 0).all())
    assert torch.equal(ts, tune_grid(sde, score, pilot, 7, search_evals=20).ts)


def test_equidistributed_grid_beats_the_log_snr_grid_at_many_steps(problem):
    """Without search, on held-out draws: UniPC-3 at 40 steps is at least 3x more accurate on the
    tuned grid than on the uniform log-SNR grid (measured: 8-10x)."""
    sde, score, pilot, held, ref = problem
    tuned = rms_error(UNIPC3(sde, score, held, ts=tune_grid(sde, score, pilot, 40).ts).x, ref)
    plain = rms_error(UNIPC3(sde, score, held, steps=40, t_eps=T_EPS).x, ref)
    assert tuned < plain / 3


def test_search_helps_at_few_steps(problem):
    """Powell's search at 8 steps: on held-out draws at least 1.4x more accurate than the best fixed
    grid (measured: 1.6x VP, 5x VE)."""
    sde, score, pilot, held, ref = problem
    searched = tune_grid(sde, score, pilot, 8, search_evals=150).ts
    fixed = min(rms_error(UNIPC3(sde, score, held, steps=8, t_eps=T_EPS, grid=g).x, ref)
                for g in ("log_snr", "log_snr_window", "karras", "uniform"))
    assert rms_error(UNIPC3(sde, score, held, ts=searched).x, ref) < fixed / 1.4


def test_any_sampler_can_be_tuned(problem):
    """DDIM (order 1) on its own tuned 10-step grid beats DDIM on every fixed grid, held out
    (measured: by 1.2x on VP, 1.6x on VE)."""
    sde, score, pilot, held, ref = problem
    ts = tune_grid(sde, score, pilot, 10, sampler=ddim, order=1, search_evals=200).ts
    fixed = min(rms_error(ddim(sde, score, held, steps=10, t_eps=T_EPS, grid=g).x, ref)
                for g in ("log_snr", "log_snr_window", "karras", "uniform", "quadratic"))
    assert rms_error(ddim(sde, score, held, ts=ts).x, ref) < fixed


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(order=0), "order"), (dict(search_evals=-1), "search_evals"),
    (dict(floor=-0.1), "floor"), (dict(points=4), "points"), (dict(t_eps=0.0), "t_eps"),
    (dict(shift=True), "search_evals > 0"),
])
def test_bad_settings_are_named(kwargs, match):
    sde, gm = VPSDE(), mixture()
    settings = dict(steps=5) | kwargs
    with pytest.raises(ValueError, match=match):
        tune_grid(sde, lambda x, t: gm.score(x, t, sde), torch.zeros(4, 2, dtype=D64), **settings)


def test_pilot_must_be_a_batch():
    sde, gm = VPSDE(), mixture()
    with pytest.raises(ValueError, match="x_pilot"):
        tune_grid(sde, lambda x, t: gm.score(x, t, sde), torch.zeros(4, dtype=D64), 5)


def test_shifted_evaluation_times_help_at_four_steps():
    """shift=True (the model asked off the grid, LD3) on VE at 4 steps: held out, at least 1.15x
    more accurate than the searched grid alone (measured: 1.5x)."""
    sde, gm = VESDE(), mixture()
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    pilot, held = draws(gm, sde, 300, seed=1), draws(gm, sde, 1000, seed=2)
    ref = probability_flow(sde, score, held, rtol=1e-9, atol=1e-9, t_eps=T_EPS).x
    plain = tune_grid(sde, score, pilot, 4, search_evals=300)
    shifted = tune_grid(sde, score, pilot, 4, search_evals=300, shift=True)
    assert shifted.eval_ts.shape == (4,) and set(shifted.kwargs) == {"ts", "eval_ts"}
    assert (rms_error(UNIPC3(sde, score, held, **shifted.kwargs).x, ref)
            < rms_error(UNIPC3(sde, score, held, **plain.kwargs).x, ref) / 1.15)


def test_eval_ts_on_the_grid_is_the_plain_sampler():
    sde, gm = VPSDE(), mixture()
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    x_T = draws(gm, sde, 64, seed=3)
    ts = grids.log_snr_window(sde, 6, t_eps=T_EPS)
    assert torch.equal(UNIPC3(sde, score, x_T, ts=ts, eval_ts=ts[:-1]).x,
                       UNIPC3(sde, score, x_T, ts=ts).x)
    for bad in (ts[:-2], torch.cat([ts[:-2], torch.tensor([2.0], dtype=D64)])):
        with pytest.raises(ValueError, match="eval_ts"):
            UNIPC3(sde, score, x_T, ts=ts, eval_ts=bad)


def test_tuning_a_network_keeps_no_graph():
    """A score with parameters: every call, the pilot's x0_hat included, runs without autograd
    (a network's graphs for points x pilot evaluations would be kept otherwise)."""
    sde, net = VPSDE(), torch.nn.Linear(2, 2).double()
    grad_on = []

    def score(x, t):
        grad_on.append(torch.is_grad_enabled())
        return net(x)

    tune_grid(sde, score, draws(mixture(), sde, 32, seed=4), 4, points=41, rtol=1e-5, atol=1e-5)
    assert len(grad_on) > 41 and not any(grad_on)
