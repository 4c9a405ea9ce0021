"""The likelihood's probability-flow ODE on a fixed log-SNR grid (`log_likelihood(method="unipc")`):
UniPC multistep for the path, an interpolatory quadrature in log-SNR for the divergence integral.

With rho = log(sigma / alpha) = -lambda, the divergence integral of any linear SDE's flow becomes
(docs/math.md, "The likelihood on a log-SNR grid")

    int_{t_eps}^T div v dt = N log(alpha_T / alpha_eps) + int_{rho_eps}^{rho_T} G drho,
    G = -sigma^2 div s(x(rho), t(rho)) = N - alpha div x0_hat,

an integrand that moves between 0 (where the data's density is smooth at scale sigma / alpha) and
N (where x0_hat no longer depends on x) over a few units of rho, where in t it is the stiff
~N / sigma^2 term that an adaptive solver resolves with small steps near t_eps. The grid is
uniform in lambda from lambda(t_eps) down to lambda(T) (`steps` steps, steps + 1 evaluations: the
one at T serves the quadrature only). The path x takes UniPC's steps (UniP-p, then UniC-p with the
next node's x0_hat, `solvers.exponential.multistep_coefficients`; its formulas hold with h < 0,
data to noise), order p = `order` after start-up steps; the integral of G takes the weights of
`interpolatory_weights` (4 nodes per interval, exact for cubics), so both are 4th order.

Hutchinson probes redrawn at every node (`redraw_probes`) make G's errors independent across the
nodes: the estimate's variance is sum_j w_j^2 Var_j, and since the path never depends on the
probes, the estimate is unbiased for the exact divergence's on the same grid. There is no error
control: `steps` sets the error (bench/README.md, "Likelihood", measures it against the
tolerance-controlled solves).
"""

from __future__ import annotations

import functools
import math

from torch import Tensor

from score_sde.sde_lib import SDEGrid, x0_from_score
from score_sde.solvers.exponential import (
    moment_weights,
    multistep_coefficients,
    multistep_predict,
    unic_correct,
)
from score_sde.solvers.grids import log_snr_uniform
from score_sde.solvers.likelihood_flow import AugmentedFlow

GRID_ORDERS = (1, 2, 3, 4)
QUADRATURE_NODES = 4


def interpolatory_weights(nodes: list[float], points: int = QUADRATURE_NODES) -> list[float]:
    """Weights w with sum_j w_j F(nodes_j) = int_{nodes_0}^{nodes_n} F, exact for polynomials of
    degree points - 1: on each interval, the integral of the polynomial through the `points`
    nearest nodes (centred, shifted inwards at the ends; fewer nodes if there are fewer).
    Cached on the nodes (every batch of a dataset on one grid computes them once).

    Args:
        nodes: n + 1 strictly increasing floats, n >= 1.
        points: nodes per interpolant (>= 2; 2 is the trapezoidal rule).

    Returns:
        n + 1 weights.
    """
    return list(_interpolatory(tuple(nodes), points))


@functools.lru_cache(maxsize=64)
def _interpolatory(nodes: tuple[float, ...], points: int) -> tuple[float, ...]:
    """`interpolatory_weights` on a tuple (hashable: the cache's key)."""
    n = len(nodes) - 1
    k = min(points, n + 1)
    weights = [0.0] * (n + 1)
    moments = [1 / (j + 1) for j in range(k)]  # int_0^1 u^j du
    for i in range(n):
        lo = min(max(i - (k - 2) // 2, 0), n + 1 - k)
        a, scale = nodes[i], nodes[i + 1] - nodes[i]
        u = [(v - a) / scale for v in nodes[lo:lo + k]]  # the interval is [0, 1] in u
        for j, w in enumerate(moment_weights(u, moments)):
            weights[lo + j] += scale * w
    return tuple(weights)


def solve_on_grid(flow: AugmentedFlow, x: Tensor, *, steps: int, order: int
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The flow from t_eps to T on the log-SNR grid of the module docstring.

    Args:
        flow: the augmented flow (its `evaluate`: score and divergence at a node; the grid runs
            from its t_lo = t_eps to T).
        x: (B, *D) the data in the state's dtype.
        steps: grid steps (steps + 1 evaluations).
        order: UniPC's order, one of GRID_ORDERS.

    Returns:
        (z = x(T) (B, *D), Delta (B, P), the per-coordinate integrals (P, B, N) or None), in x's
        dtype.
    """
    if isinstance(order, bool) or order not in GRID_ORDERS:
        raise ValueError(f"order must be one of {GRID_ORDERS}, got {order!r}")
    grid = SDEGrid(flow.sde, log_snr_uniform(flow.sde, steps, t_eps=flow.t_lo))  # T -> t_eps
    alpha, sigma, lam = (grid.floats(name)[::-1] for name in ("alpha", "sigma", "lam"))
    ts = grid.times_like(x).flip(0)
    orders = [min(order, i + 1) for i in range(steps)]
    steps_w, unic = multistep_coefficients(alpha, sigma, lam, orders, predictor="unip",
                                           corrector="unipc")
    quad = [-w * s ** 2 for w, s in zip(interpolatory_weights([-v for v in lam]), sigma)]
    delta = coords = None
    x_prev, ms = x, []  # ms: x0_hat at the previous nodes, newest first
    for i in range(steps + 1):
        score, div_s, terms = flow.evaluate(ts[i], x)
        delta = div_s.to(x.dtype) * quad[i] + (0 if delta is None else delta)
        if terms is not None:
            coords = terms.to(x.dtype) * quad[i] + (0 if coords is None else coords)
        if i == steps:
            break
        m = x0_from_score(x, score.to(x.dtype), alpha[i], sigma[i])
        if i > 0:
            x = unic_correct(unic[i - 1], x_prev, ms, m)
        ms = [m, *ms[:order - 1]]
        x_prev = x
        x = multistep_predict(steps_w[i], x, ms)
    delta = delta + flow.n * math.log(alpha[-1] / alpha[0])
    return x, delta, coords
