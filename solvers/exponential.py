"""Exponential-integrator solvers of the probability-flow ODE in log-SNR time: DPM-Solver++.

With lambda = log(alpha / sigma) (half the log-SNR) and the data prediction
x0_hat(x, t) = (x + sigma_t^2 score(x, t)) / alpha_t, the PF-ODE of any linear SDE is solved exactly
in its linear part (Lu et al. 2022, "DPM-Solver++"); a step from t to s with h = lambda_s - lambda_t > 0 is

    x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) [x0_hat + higher-order corrections].

This is the exact solution x_s = (sigma_s / sigma_t) x_t + sigma_s int e^l x0_hat(l) dl with x0_hat
expanded in lambda around the step's start, m + m' u + m'' u^2 / 2 (Lu et al. 2022b; the terms are
derived in docs/math.md, "Exponential integrators in log-SNR"):

    x_s = (sigma_s / sigma_t) x_t - alpha_s phi1 m + alpha_s phi2 h m' - alpha_s phi3 h^2 m'' + O(h^4),
    phi1 = expm1(-h),  phi2 = phi1 / h + 1,  phi3 = phi2 / h - 1/2.

Order 1 is DDIM (eta = 0). Multistep ("2M", the paper's Algorithm 2; "3M") reuse the previous steps'
x0_hat (1 NFE a step); single-step ("2S", Algorithm 1; "3S", the r1 = 1/3, r2 = 2/3 scheme of
DPM-Solver-3, Lu et al. 2022a, Algorithm 2, in data prediction) evaluate at intermediate
log-SNRs (k NFE a step). The third-order updates are those of the authors' reference code
(`multistep_dpm_solver_third_update`, `singlestep_dpm_solver_third_update`), which diffusers and
k-diffusion share. Its 3M uses D1 = h m' + O(h^3) and D2 = (D1_0 - D1_1) / (r0 + r1) =
h^2 m'' / 2 + O(h^3) as - alpha_s phi3 D2, half of the expansion's h^2 term: a 3M step's local
error is O(h^3), not O(h^4) (docs/math.md), so 3M is globally second order, as its peers' are.
The multistep solver takes UniPC's corrector as an option (corrector="unipc"; Zhao et al. 2023,
"UniC", B(h) = expm1(h) variant "bh2"): once x0_hat is evaluated at the new point x_s, the step
t -> s is redone with it as one more node,
    x_s <- (sigma_s / sigma_t) x_t - alpha_s expm1(-h) m_t - alpha_s expm1(-h) [sum_k rho_k D_k],
with D_k the divided differences (m_k - m_t) / r_k over the previous nodes and m_s (r = 1), and
rho solving sum_k rho_k r_k^(j-1) = j! phi_{j+1}(-h) (-h)^j / expm1(-h), j = 1..p (rho = 1/2 for p = 1;
phi_1(u) = expm1(u) / u, phi_{j+1}(u) = (phi_j(u) - 1/j!) / u);
a step of order p becomes order p + 1 at no extra NFE. x0_hat is not re-evaluated at the corrected
point (UniPC's choice), and the last step is not corrected (it would cost one more NFE).
UniPC's own predictor UniP-p (predictor="unip") is the same update over the p - 1 previous nodes
alone (rho from the first p - 1 equations; rho = 1/2 for one node): a UniP-p step's local error is
O(h^(p+1)), so UniP-3's is O(h^4) where 3M's is O(h^3). B(h) = -h ("bh1") is the paper's other
variant, for both.
The stabilising choices of diffusers' and DPM-Solver's later releases are built in by default:
    - the grid is uniform in log-SNR (`grid="log_snr"`),
    - lower-order final steps: the order at step i of N is min(order, i + 1, N - i) for multistep,
      so the last step is first order (a data-prediction step that cannot overshoot),
    - a step into sigma_s = 0 (a grid ending at t = 0 on VP) is the first-order step x_s = x0_hat.
Every coefficient depends on the grid only and is computed at entry; the loops make no host sync.
Legend: m_i = x0_hat at ts[i]; r = ratio of consecutive log-SNR step lengths; p = a step's order.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, x0_from_score
from score_sde.solvers.grids import resolve_grid
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state

MULTISTEP_ORDERS = (1, 2, 3)
SINGLESTEP_ORDERS = (1, 2, 3)
CORRECTORS = ("none", "unipc")
PREDICTORS = ("dpmsolver++", "unip")
UNIPC_VARIANTS = ("bh2", "bh1")


def _check_order(order: int, allowed: tuple[int, ...]) -> None:
    if isinstance(order, bool) or order not in allowed:
        raise ValueError(f"order must be one of {allowed}, got {order!r}")


def _model_times(grid: SDEGrid, eval_ts: Tensor | None, x: Tensor
                 ) -> tuple[Tensor, list[float], list[float]]:
    """The times the model is asked at for the states at ts[:-1] (on x's device), and alpha,
    sigma there: the grid's own by default, or eval_ts (N,), each in (0, T]."""
    if eval_ts is None:
        return grid.times_like(x)[:-1], grid.floats("alpha")[:-1], grid.floats("sigma")[:-1]
    sde, n = grid.sde, grid.steps
    eval_ts = torch.as_tensor(eval_ts).detach().to("cpu", torch.float64)
    if eval_ts.shape != (n,) or not bool(torch.isfinite(eval_ts).all()):
        raise ValueError(f"eval_ts must hold one finite time per step, shape ({n},), got "
                         f"{tuple(eval_ts.shape)}")
    if not bool(((eval_ts > 0) & (eval_ts <= sde.T)).all()):
        raise ValueError(f"eval_ts must lie in (0, T] = (0, {sde.T}]")
    return (eval_ts.to(device=x.device, dtype=x.dtype), sde.alpha(eval_ts, check=False).tolist(),
            sde.sigma(eval_ts, check=False).tolist())


def _combine(terms: list[tuple[float, Tensor]]) -> Tensor:
    """sum_j c_j v_j for terms (c_j, v_j): one new tensor, updated in place."""
    (c, v), rest = terms[0], terms[1:]
    out = v * c
    for c, v in rest:
        out.add_(v, alpha=c)
    return out


def _multistep_weights(alpha: list[float], sigma: list[float], lam: list[float], i: int, p: int
                       ) -> tuple[float, list[float]]:
    """The DPM-Solver++ step ts[i] -> ts[i+1] of order p as x_{i+1} = c_x x_i + sum_j c_j m_{i-j}
    (m_{i-j}: x0_hat j steps back; the update of the module docstring with its divided
    differences expanded). A step into sigma = 0 is x0_hat itself, times alpha_s."""
    a_s, s_s = alpha[i + 1], sigma[i + 1]
    if s_s == 0:
        return 0.0, [a_s]
    h = lam[i + 1] - lam[i]
    phi1 = math.expm1(-h)  # e^{-h} - 1
    c_x, c_m0 = s_s / sigma[i], -a_s * phi1
    if p == 1:
        return c_x, [c_m0]
    r0 = (lam[i] - lam[i - 1]) / h
    if p == 2:  # - a_s phi1 D1_0 / 2, D1_0 = (m0 - m1) / r0
        w = 0.5 * a_s * phi1 / r0
        return c_x, [c_m0 - w, w]
    r1 = (lam[i - 1] - lam[i - 2]) / h
    phi2 = phi1 / h + 1
    phi3 = phi2 / h - 0.5
    # + a_s phi2 D1 - a_s phi3 D2, D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1),
    # D2 = (D1_0 - D1_1) / (r0 + r1), D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1
    q, v = r0 / (r0 + r1), 1 / (r0 + r1)
    w0 = a_s * (phi2 * (1 + q) - phi3 * v)  # the weight of D1_0
    w1 = a_s * (phi3 * v - phi2 * q)  # the weight of D1_1
    return c_x, [c_m0 + w0 / r0, w1 / r1 - w0 / r0, -w1 / r1]


def moment_weights(nodes: list[float], moments: list[float]) -> list[float]:
    """w solving sum_k w_k nodes_k^j = moments_j, j = 0 .. K - 1, for K distinct nodes (a
    transposed Vandermonde system): w_k = sum_j c_kj moments_j, c_kj the coefficients of the
    Lagrange polynomial l_k (l_k(nodes_i) = [i == k]). Plain floats: on the host, no solver call."""
    weights = []
    for k, r in enumerate(nodes):
        poly, denom = [1.0], 1.0  # l_k's coefficients, lowest power first, and its scale
        for i, q in enumerate(nodes):
            if i != k:  # poly *= (u - q)
                poly = [(poly[j - 1] if j else 0.0) - q * (poly[j] if j < len(poly) else 0.0)
                        for j in range(len(poly) + 1)]
                denom *= r - q
        weights.append(sum(c * m for c, m in zip(poly, moments)) / denom)
    return weights


def _unipc_weights(a_s: float, h: float, ratios: list[float], b_h: str) -> list[float]:
    """UniPC's update -a_s expm1(-h) m_0 - a_s B(h) sum_k rho_k (m_k - m_0) / r_k as weights of
    m_0 (the step's start) and of the nodes m_k at log-SNR ratios r_k = (lam_k - lam_0) / h, in
    that order; rho solves sum_k rho_k r_k^(j-1) = j! phi_{j+1}(-h) (-h)^j / B(h), j = 1..K
    (rho = 1/2 for one node, as UniPC's code), with B(h) = expm1(-h) ("bh2") or -h ("bh1")."""
    minus_h = -h
    phi1 = math.expm1(minus_h)
    b = phi1 if b_h == "bh2" else minus_h
    if len(ratios) <= 1:
        rhos = [0.5] * len(ratios)
    else:  # j! phi_{j+1}(-h) (-h)^j / B(h), by phi_{j+1} = (phi_j - 1/j!) / u
        rhs, h_phi, factorial = [], phi1 / minus_h - 1, 1
        for j in range(1, len(ratios) + 1):
            rhs.append(h_phi * factorial / b)
            factorial *= j + 1
            h_phi = h_phi / minus_h - 1 / factorial
        rhos = moment_weights(ratios, rhs)
    nodes = [-a_s * b * rho / r for rho, r in zip(rhos, ratios)]
    return [-a_s * phi1 - sum(nodes), *nodes]


def _unip_weights(alpha: list[float], sigma: list[float], lam: list[float], i: int, p: int,
                  b_h: str) -> tuple[float, list[float]]:
    """UniP-p, UniPC's own predictor, for the step ts[i] -> ts[i+1] as x_{i+1} = c_x x_i +
    sum_j c_j m_{i-j}: `_unipc_weights` over the p - 1 previous nodes. UniP-1 is DDIM; UniP-2 with
    bh2 is 2M. A step into sigma = 0 is x0_hat itself, times alpha_s."""
    if p == 1 or sigma[i + 1] == 0:
        return _multistep_weights(alpha, sigma, lam, i, 1)
    h = lam[i + 1] - lam[i]
    ratios = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
    return sigma[i + 1] / sigma[i], _unipc_weights(alpha[i + 1], h, ratios, b_h)


def _unic_weights(alpha: list[float], sigma: list[float], lam: list[float], i: int, p: int,
                  b_h: str) -> tuple[float, list[float], float]:
    """UniC-p for the step ts[i-1] -> ts[i] as x_i = c_prev x_{i-1} + sum_j c_j m_{i-1-j} + c_new
    m_i: `_unipc_weights` over the p - 1 previous nodes and m_i (r = 1)."""
    h = lam[i] - lam[i - 1]
    ratios = [(lam[i - 1 - j] - lam[i - 1]) / h for j in range(1, p)] + [1.0]
    weights = _unipc_weights(alpha[i], h, ratios, b_h)
    return sigma[i] / sigma[i - 1], weights[:-1], weights[-1]


def multistep_coefficients(alpha: list[float], sigma: list[float], lam: list[float],
                           orders: list[int], *, predictor: str = "dpmsolver++",
                           corrector: str = "none", unipc_variant: str = "bh2"
                           ) -> tuple[tuple[tuple[float, tuple[float, ...]], ...],
                                      tuple[tuple[float, tuple[float, ...], float], ...]]:
    """Every step's coefficients on a grid with alpha, sigma, lam at its N + 1 times (lam may
    decrease or increase: the formulas hold for either sign of h), step i of order orders[i]:
    (predictor steps, (c_x, (c_j, ...)) per step as in `_multistep_weights`; UniC corrections of
    the states 1 .. N - 1, (c_prev, (c_j, ...), c_new) as in `_unic_weights`, or () without a
    corrector). The dpmsolver++ predictor has orders 1-3, UniP any (it needs orders[i] previous
    nodes). Cached on the arguments (pure floats): every batch of a dataset on one grid sets up once."""
    return _coefficients(tuple(alpha), tuple(sigma), tuple(lam), tuple(orders), predictor,
                         corrector, unipc_variant)


@functools.lru_cache(maxsize=64)
def _coefficients(alpha: tuple[float, ...], sigma: tuple[float, ...], lam: tuple[float, ...],
                  orders: tuple[int, ...], predictor: str, corrector: str, unipc_variant: str
                  ) -> tuple[tuple, tuple]:
    """`multistep_coefficients` on tuples (hashable: the cache's key)."""
    n = len(orders)
    steps_w = tuple(
        _frozen(_multistep_weights(alpha, sigma, lam, i, orders[i]) if predictor == "dpmsolver++"
                else _unip_weights(alpha, sigma, lam, i, orders[i], unipc_variant))
        for i in range(n))
    unic = (tuple(_frozen(_unic_weights(alpha, sigma, lam, i, orders[i - 1], unipc_variant))
                  for i in range(1, n)) if corrector == "unipc" else ())
    return steps_w, unic


def _frozen(coefficients: tuple) -> tuple:
    """A step's coefficients with its list of node weights as a tuple (they are cached, shared)."""
    return tuple(tuple(c) if isinstance(c, list) else c for c in coefficients)


def multistep_predict(coefficients: tuple[float, tuple[float, ...]], x: Tensor, ms: list[Tensor]
                      ) -> Tensor:
    """One predictor step x -> c_x x + sum_j c_j ms[j] (coefficients of `multistep_coefficients`,
    ms the x0_hat of the nodes so far, newest first)."""
    c_x, c_hist = coefficients
    return _combine([*([(c_x, x)] if c_x else []), *zip(c_hist, ms)])


def unic_correct(coefficients: tuple[float, tuple[float, ...], float], x_prev: Tensor,
                 ms: list[Tensor], m: Tensor) -> Tensor:
    """UniC: the last step redone from x_prev with m, the x0_hat at its end, as one more node
    (coefficients of `multistep_coefficients`, ms the earlier nodes' x0_hat, newest first)."""
    c_prev, c_hist, c_new = coefficients
    return _combine([(c_prev, x_prev), *zip(c_hist, ms), (c_new, m)])


@torch.no_grad()
def dpm_solver_multistep(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *,
                         order: int = 2, steps: int = 20, t_eps: float = 1e-3,
                         grid: str = "log_snr", ts: Tensor | None = None,
                         lower_order_final: bool = True, corrector: str = "none",
                         predictor: str = "dpmsolver++", unipc_variant: str = "bh2",
                         eval_ts: Tensor | None = None, generator: torch.Generator | None = None,
                         callback: Callback | None = None,
                         return_trajectory: bool = False) -> SampleResult:
    """DPM-Solver++ multistep (order 1 = DDIM, 2 = "2M", 3 = "3M"), data-prediction form; 1 NFE a step.
    corrector="unipc" adds UniPC's corrector; with predictor="unip" the whole step is UniPC-p
    (Zhao et al. 2023, UniP-p then UniC-p), as diffusers' UniPCMultistepScheduler
    (tests/solvers/test_exponential_unip.py); at order 2 with bh2 the two predictors coincide.

    Args:
        sde, score_fn, x_T: the SDE, score_fn(x, t) with t (B,), and the (B, *D) state at ts[0].
        order: 1, 2 or 3. Empirical global order: 1, 2 and 2 (3M: module docstring;
            tests/solvers/test_fast_samplers.py).
        steps, t_eps, grid: the grid when `ts` is not given (see `solvers.grids`).
        ts: an explicit decreasing grid from T (or below) to the final time.
        lower_order_final: lower the order on the last steps (min(order, N - i)); recommended.
        corrector: "none" or "unipc" (UniC after every step but the last; empirical global order:
            order + 1 for orders 1 and 2, 3 for order 3 (the start-up steps limit it; about 4 at
            20-80 steps with predictor="unip", tests/solvers/test_exponential_unip.py); same NFE).
        predictor: "dpmsolver++" (the update of the module docstring) or "unip" (UniPC's own
            predictor: the corrector's update over the p - 1 previous nodes alone; a UniP-3 step
            is one order above a 3M step).
        unipc_variant: UniPC's B(h) for UniP and UniC: "bh2" = expm1(-h) (diffusers' default), or
            "bh1" = -h (diffusers recommends it for unconditional sampling under 10 steps).
        eval_ts: (N,) the times the model is asked at for x0_hat of the states at ts[:-1] (default
            ts[:-1]): x0_hat_i = (x_i + sigma'^2 score(x_i, t'_i)) / alpha' at t'_i. Decoupling them
            from the grid lets a tuned grid absorb part of the truncation error at few steps
            (Tong et al. 2025, "LD3"; `solvers.tune_grid(shift=True)`); the method's order holds
            only with eval_ts = ts[:-1].
        generator: draws x_T when it is a shape; otherwise unused (the method is deterministic).
        callback, return_trajectory: as in every sampler.

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe = N.
    """
    _check_order(order, MULTISTEP_ORDERS)
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}")
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    if unipc_variant not in UNIPC_VARIANTS:
        raise ValueError(f"unipc_variant must be one of {UNIPC_VARIANTS}, got {unipc_variant!r}")
    x_T = initial_state(sde, x_T, generator)
    on_grid = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    n, times, batch = on_grid.steps, on_grid.times, x_T.shape[0]
    model_t, model_alpha, model_sigma = _model_times(on_grid, eval_ts, x_T)
    alpha, sigma, lam = (on_grid.floats(name) for name in ("alpha", "sigma", "lam"))
    orders = [min(order, i + 1, n - i) if lower_order_final else min(order, i + 1)
              for i in range(n)]
    steps_w, unic = multistep_coefficients(alpha, sigma, lam, orders, predictor=predictor,
                                           corrector=corrector, unipc_variant=unipc_variant)
    score, log = CountingScore(score_fn), StepLog(return_trajectory, callback)
    x = x_prev = x_T
    log.record(0, times[0], x)
    ms: list[Tensor] = []  # x0_hat at previous grid times, newest first
    for i in range(n):
        m = x0_from_score(x, score(x, model_t[i].expand(batch)), model_alpha[i], model_sigma[i])
        if unic and i > 0:
            x = unic_correct(unic[i - 1], x_prev, ms, m)
        ms = [m, *ms[:2]]
        x_prev = x
        x = multistep_predict(steps_w[i], x, ms)
        log.record(i + 1, times[i + 1], x)
    return log.result(x, score.nfe)


def _points_at(sde: SDE, lam: Tensor, x: Tensor) -> tuple[Tensor, list[float], list[float]]:
    """The times with half-log-SNRs lam (finite entries; others get t = T), on x's device, and
    alpha, sigma there."""
    t = sde.t_from_log_snr(2 * lam.nan_to_num(posinf=0.0), check=False)
    t = torch.where(torch.isfinite(lam), t, sde.T)
    return (t.to(device=x.device, dtype=x.dtype), sde.alpha(t, check=False).tolist(),
            sde.sigma(t, check=False).tolist())


@torch.no_grad()
def dpm_solver_singlestep(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *,
                          order: int = 2, steps: int = 10, t_eps: float = 1e-3,
                          grid: str = "log_snr", ts: Tensor | None = None,
                          generator: torch.Generator | None = None,
                          callback: Callback | None = None,
                          return_trajectory: bool = False) -> SampleResult:
    """DPM-Solver++ single-step: "2S" (midpoint in lambda) and "3S" (r1 = 1/3, r2 = 2/3); order NFE
    a step. A step into sigma_s = 0 is first order.

    Args: as `dpm_solver_multistep`; `order` is 1, 2 or 3 (empirical global order in the tests).

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe = order * N (less on a step into sigma = 0).
    """
    _check_order(order, SINGLESTEP_ORDERS)
    x_T = initial_state(sde, x_T, generator)
    on_grid = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    times, batch, t_x = on_grid.times, x_T.shape[0], on_grid.times_like(x_T)
    alpha, sigma, lam = (on_grid.floats(name) for name in ("alpha", "sigma", "lam"))
    r1, r2 = (0.5, None) if order == 2 else (1 / 3, 2 / 3)
    lam_h = on_grid.lam[1:] - on_grid.lam[:-1]
    mid1 = _points_at(sde, on_grid.lam[:-1] + r1 * lam_h, x_T) if order >= 2 else None
    mid2 = _points_at(sde, on_grid.lam[:-1] + r2 * lam_h, x_T) if order == 3 else None
    score, log = CountingScore(score_fn), StepLog(return_trajectory, callback)
    x = x_T
    log.record(0, times[0], x)

    def phi1(h: float) -> float:
        return math.expm1(-h)

    def x0_hat(x: Tensor, t: Tensor, a: float, s: float) -> Tensor:
        return x0_from_score(x, score(x, t.expand(batch)), a, s)

    for i in range(on_grid.steps):
        a_t, s_t, a_s, s_s = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        m0 = x0_hat(x, t_x[i], a_t, s_t)
        if s_s == 0 or order == 1:
            x = a_s * m0 if s_s == 0 else (s_s / s_t) * x - a_s * phi1(lam[i + 1] - lam[i]) * m0
        else:
            h = lam[i + 1] - lam[i]
            t1, a1, s1 = mid1[0][i], mid1[1][i], mid1[2][i]
            x1 = (s1 / s_t) * x - a1 * phi1(r1 * h) * m0
            m1 = x0_hat(x1, t1, a1, s1)
            if order == 2:
                x = (s_s / s_t) * x - a_s * phi1(h) * m0 - a_s / (2 * r1) * phi1(h) * (m1 - m0)
            else:
                t2, a2, s2 = mid2[0][i], mid2[1][i], mid2[2][i]
                phi22 = phi1(r2 * h) / (r2 * h) + 1
                x2 = (s2 / s_t) * x - a2 * phi1(r2 * h) * m0 + (r2 / r1) * a2 * phi22 * (m1 - m0)
                m2 = x0_hat(x2, t2, a2, s2)
                phi2 = phi1(h) / h + 1
                x = (s_s / s_t) * x - a_s * phi1(h) * m0 + (1 / r2) * a_s * phi2 * (m2 - m0)
        log.record(i + 1, times[i + 1], x)
    return log.result(x, score.nfe)
