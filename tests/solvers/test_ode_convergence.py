"""Deterministic samplers converge to the probability-flow ODE's solution at their order.

Reference: dopri5 at rtol = atol = 1e-10 in float64 from the same x_T (its error, ~1e-9, is far
below the errors measured). Errors are max |x_n - x_ref| over a batch of the 2-D mixture.
"""

import math

import pytest
import torch
from solver_oracles import exact_score, make_sdes, mixture_2d, noised_draw

from score_sde import solvers

SDES = make_sdes()
STEPS = [25, 50, 100, 200, 400]


@pytest.fixture(scope="module", params=list(SDES))
def problem(request):
    sde, gm = SDES[request.param], mixture_2d()
    score = exact_score(gm, sde)
    x_T = noised_draw(gm, sde, 16, sde.T, seed=0)
    ref = solvers.probability_flow(sde, score, x_T, rtol=1e-10, atol=1e-10)
    return sde, score, x_T, ref.x


def _orders(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


def _slope(steps, errors):
    """Least-squares slope of -log(error) against log(steps)."""
    lx = torch.log(torch.tensor(steps, dtype=torch.float64))
    ly = -torch.log(torch.tensor(errors, dtype=torch.float64))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


@pytest.mark.parametrize("sampler, order", [
    (lambda sde, s, x, n: solvers.ddim(sde, s, x, steps=n, eta=0.0), 1),
    (lambda sde, s, x, n: solvers.probability_flow(sde, s, x, method="euler", steps=n), 1),
    (lambda sde, s, x, n: solvers.probability_flow(sde, s, x, method="midpoint", steps=n), 2),
], ids=["ddim", "euler", "midpoint"])
def test_low_order_methods_converge_at_their_order(problem, sampler, order):
    """DDIM and Euler: the error halves when the steps double, over 25..400 steps."""
    sde, score, x_T, ref = problem
    errors = [(sampler(sde, score, x_T, n).x - ref).abs().max().item() for n in STEPS]
    assert errors[-1] < 0.05 ** order
    assert abs(_slope(STEPS, errors) - order) < 0.35, errors
    assert all(abs(p - order) < 0.15 for p in _orders(errors)[-2:]), errors


def test_rk4_converges_at_order_4(problem):
    sde, score, x_T, ref = problem
    steps = [25, 50, 100, 200]
    errors = [(solvers.probability_flow(sde, score, x_T, method="rk4", steps=n).x - ref)
              .abs().max().item() for n in steps]
    assert all(3.5 < p < 4.4 for p in _orders(errors)), errors


def test_dopri5_error_follows_its_tolerance(problem):
    sde, score, x_T, ref = problem
    errors, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        r = solvers.probability_flow(sde, score, x_T, rtol=tol, atol=tol)
        errors.append((r.x - ref).abs().max().item())
        nfes.append(r.nfe)
        assert errors[-1] < 200 * tol
    assert errors[0] > errors[1] > errors[2] and nfes[0] < nfes[1] < nfes[2]


def test_ddim_and_euler_agree_in_the_limit():
    """DDIM (Euler in rho) and Euler in t are two first-order schemes for the same ODE: their
    difference shrinks like 1/steps."""
    sde, gm = SDES["vp"], mixture_2d()
    score, x_T = exact_score(gm, sde), noised_draw(gm, sde, 16, 1.0, seed=1)
    diffs = [(solvers.ddim(sde, score, x_T, steps=n).x
              - solvers.probability_flow(sde, score, x_T, method="euler", steps=n).x
              ).abs().max().item() for n in (100, 400)]
    assert 3.0 < diffs[0] / diffs[1] < 5.0
