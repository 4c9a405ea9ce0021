"""Exponential-integrator solvers of the probability-flow ODE in log-SNR time: DPM-Solver++.

With lambda = log(alpha / sigma) (half the log-SNR) and the data prediction
x0_hat(x, t) = (x + sigma_t^2 score(x, t)) / alpha_t, the PF-ODE of any linear SDE is solved exactly
in its linear part (Lu et al. 2022, "DPM-Solver++"); a step from t to s with h = lambda_s - lambda_t > 0 is

    x_s = (sigma_s / sigma_t) x_t - alpha_s expm1(-h) [x0_hat + higher-order corrections].

order 1 is DDIM (eta = 0). Multistep ("2M", "3M") reuse the previous steps' x0_hat (1 NFE a step);
single-step ("2S", "3S") evaluate at intermediate log-SNRs (k NFE a step). The multistep solver takes
UniPC's corrector as an option (Zhao et al. 2023, "UniC", B(h) = expm1(h) variant "bh2"): once x0_hat
is evaluated at the new point x_s, the step t -> s is redone with it as one more node,
    x_s <- (sigma_s / sigma_t) x_t - alpha_s expm1(-h) m_t - alpha_s expm1(-h) [sum_k rho_k D_k],
with D_k the divided differences (m_k - m_t) / r_k over the previous nodes and m_s (r = 1), and
rho solving sum_k rho_k r_k^(j-1) = j! phi_{j+1}(-h) (-h)^j / expm1(-h), j = 1..p (rho = 1/2 for p = 1);
a step of order p becomes order p + 1 at no extra NFE. x0_hat is not re-evaluated at the corrected
point (UniPC's choice), and the last step is not corrected (it would cost one more NFE).
The stabilising choices of diffusers' and DPM-Solver's later releases are built in by default:
    - the grid is uniform in log-SNR (`grid="log_snr"`),
    - lower-order final steps: the order at step i of N is min(order, i + 1, N - i) for multistep,
      so the last step is first order (a data-prediction step that cannot overshoot),
    - a step into sigma_s = 0 (a grid ending at t = 0 on VP) is the first-order step x_s = x0_hat.
Legend: m_i = x0_hat at ts[i]; r = ratio of consecutive log-SNR step lengths.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib import SDE
from score_sde.solvers.grids import resolve_grid
from score_sde.solvers.result import Callback, CountingScore, SampleResult, ScoreFn, Trajectory, initial_state

MULTISTEP_ORDERS = (1, 2, 3)
SINGLESTEP_ORDERS = (1, 2, 3)


class _Coefs:
    """alpha, sigma, lambda of the SDE on a float64 grid, and the data prediction at a grid time."""

    def __init__(self, sde: SDE, ts: Tensor):
        self.sde, self.t = sde, ts.tolist()
        self.alpha, self.sigma = sde.alpha(ts).tolist(), sde.sigma(ts).tolist()
        self.lam = (0.5 * sde.log_snr(ts)).tolist()  # +inf where sigma = 0

    def x0(self, score: CountingScore, x: Tensor, t: float, alpha: float, sigma: float) -> Tensor:
        t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        return (x + sigma**2 * score(x, t_vec)) / alpha


def _check_eval_ts(sde: SDE, eval_ts: Tensor, n: int) -> Tensor:
    """eval_ts as float64 (n,), each in (0, T]; ValueError otherwise."""
    eval_ts = torch.as_tensor(eval_ts).detach().to("cpu", torch.float64)
    if eval_ts.shape != (n,) or not bool(torch.isfinite(eval_ts).all()):
        raise ValueError(f"eval_ts must hold one finite time per step, shape ({n},), got "
                         f"{tuple(eval_ts.shape)}")
    if not bool(((eval_ts > 0) & (eval_ts <= sde.T)).all()):
        raise ValueError(f"eval_ts must lie in (0, T] = (0, {sde.T}]")
    return eval_ts


def _lam_to_t(sde: SDE, lam: float) -> tuple[float, float, float]:
    """The time with half-log-SNR lam and its alpha, sigma."""
    t = sde.t_from_log_snr(torch.tensor(2 * lam, dtype=torch.float64))
    return t.item(), sde.alpha(t).item(), sde.sigma(t).item()


def _check_order(order: int, allowed: tuple[int, ...]) -> None:
    if isinstance(order, bool) or order not in allowed:
        raise ValueError(f"order must be one of {allowed}, got {order!r}")


@torch.no_grad()
def dpm_solver_multistep(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, order: int = 2,
                         steps: int = 20, t_eps: float = 1e-3, grid: str = "log_snr",
                         ts: Tensor | None = None, lower_order_final: bool = True,
                         corrector: bool = False, eval_ts: Tensor | None = None,
                         generator: torch.Generator | None = None,
                         callback: Callback | None = None,
                         return_trajectory: bool = False) -> SampleResult:
    """DPM-Solver++ multistep (order 1 = DDIM, 2 = "2M", 3 = "3M"), data-prediction form; 1 NFE a step.
    corrector=True adds UniPC's corrector: at order 2 this is UniPC-2 (bh2) exactly (UniP-2 is 2M;
    tests/solvers/test_diffusers_oracle.py), at order 3 the predictor stays 3M (UniP-3 differs).

    Args:
        sde, score_fn, x_T: the SDE, score_fn(x, t) with t (B,), and the (B, *D) state at ts[0].
        order: 1, 2 or 3. Empirical global order: `order` (tests/solvers/test_fast_samplers.py).
        steps, t_eps, grid: the grid when `ts` is not given (see `solvers.grids`).
        ts: an explicit decreasing grid from T (or below) to the final time.
        lower_order_final: lower the order on the last steps (min(order, N - i)); recommended.
        corrector: apply UniC after every step but the last; empirical global order: order + 1 for
            orders 1 and 2 (3 for order 3: the start-up steps limit it), same NFE.
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
    x_T = initial_state(sde, x_T, generator)
    ts = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    c, score = _Coefs(sde, ts), CountingScore(score_fn)
    n = len(ts) - 1
    q = c if eval_ts is None else _Coefs(sde, _check_eval_ts(sde, eval_ts, n))
    record = Trajectory(return_trajectory, callback)
    x = x_T
    record.record(0, c.t[0], x)
    ms: list[Tensor] = []  # x0_hat at previous grid times, newest last
    x_prev, k = x, 0  # the state before the last step and that step's order
    for i in range(n):
        m = c.x0(score, x, q.t[i], q.alpha[i], q.sigma[i])
        if corrector and i > 0:
            x = _unic(c, i, x_prev, ms[-k:], m, k)
        ms = (ms + [m])[-3:]
        x_prev = x
        k = min(order, i + 1, n - i) if lower_order_final else min(order, i + 1)
        a_s, s_s = c.alpha[i + 1], c.sigma[i + 1]
        if s_s == 0:  # into the data: x0_hat itself
            x = ms[-1] * a_s
        else:
            h = c.lam[i + 1] - c.lam[i]
            phi1 = math.expm1(-h)  # e^{-h} - 1
            x = (s_s / c.sigma[i]) * x - a_s * phi1 * ms[-1]
            if k >= 2:
                r0 = (c.lam[i] - c.lam[i - 1]) / h
                d1_0 = (ms[-1] - ms[-2]) / r0
                if k == 2:
                    x = x - 0.5 * a_s * phi1 * d1_0
                else:
                    r1 = (c.lam[i - 1] - c.lam[i - 2]) / h
                    d1_1 = (ms[-2] - ms[-3]) / r1
                    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    phi2 = phi1 / h + 1
                    phi3 = phi2 / h - 0.5
                    x = x + a_s * phi2 * d1 - a_s * phi3 * d2
        record.record(i + 1, c.t[i + 1], x)
    return SampleResult(x=x, nfe=score.nfe, trajectory=record.stacked(), ts=ts)


def _unic(c: _Coefs, i: int, x_prev: Tensor, ms: list[Tensor], m_new: Tensor, p: int) -> Tensor:
    """UniC-p: redo the step ts[i-1] -> ts[i] of order p from x_prev with the nodes ms (x0_hat at
    ts[i-p], ..., ts[i-1], newest last) and m_new = x0_hat at ts[i]; see the module docstring."""
    h = c.lam[i] - c.lam[i - 1]
    hh = -h
    phi1 = math.expm1(hh)
    m0 = ms[-1]
    rks = [(c.lam[i - 1 - j] - c.lam[i - 1]) / h for j in range(1, p)] + [1.0]
    ds = [(ms[-1 - j] - m0) / rks[j - 1] for j in range(1, p)] + [m_new - m0]
    if p == 1:
        rhos = [0.5]
    else:
        b, h_phi, fact = [], phi1 / hh - 1, 1
        for j in range(1, p + 1):  # b_j = j! phi_{j+1}(hh) hh^j / B(h), by phi_{j+1} = (phi_j - 1/j!) / hh
            b.append(h_phi * fact / phi1)
            fact *= j + 1
            h_phi = h_phi / hh - 1 / fact
        vander = torch.tensor([[r ** (j - 1) for r in rks] for j in range(1, p + 1)], dtype=torch.float64)
        rhos = torch.linalg.solve(vander, torch.tensor(b, dtype=torch.float64)).tolist()
    a_s = c.alpha[i]
    x = (c.sigma[i] / c.sigma[i - 1]) * x_prev - a_s * phi1 * m0
    return x - a_s * phi1 * sum(rho * d for rho, d in zip(rhos, ds))


@torch.no_grad()
def dpm_solver_singlestep(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, order: int = 2,
                          steps: int = 10, t_eps: float = 1e-3, grid: str = "log_snr",
                          ts: Tensor | None = None, generator: torch.Generator | None = None,
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
    ts = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    c, score = _Coefs(sde, ts), CountingScore(score_fn)
    record = Trajectory(return_trajectory, callback)
    x = x_T
    record.record(0, c.t[0], x)

    def phi1(h: float) -> float:
        return math.expm1(-h)

    for i in range(len(ts) - 1):
        a_t, s_t, a_s, s_s = c.alpha[i], c.sigma[i], c.alpha[i + 1], c.sigma[i + 1]
        m0 = c.x0(score, x, c.t[i], a_t, s_t)
        if s_s == 0 or order == 1:
            x = a_s * m0 if s_s == 0 else (s_s / s_t) * x - a_s * phi1(c.lam[i + 1] - c.lam[i]) * m0
        else:
            h = c.lam[i + 1] - c.lam[i]
            r1 = 0.5 if order == 2 else 1 / 3
            t1, a1, s1 = _lam_to_t(sde, c.lam[i] + r1 * h)
            x1 = (s1 / s_t) * x - a1 * phi1(r1 * h) * m0
            m1 = c.x0(score, x1, t1, a1, s1)
            if order == 2:
                x = (s_s / s_t) * x - a_s * phi1(h) * m0 - a_s / (2 * r1) * phi1(h) * (m1 - m0)
            else:
                r2 = 2 / 3
                t2, a2, s2 = _lam_to_t(sde, c.lam[i] + r2 * h)
                phi22 = phi1(r2 * h) / (r2 * h) + 1
                x2 = (s2 / s_t) * x - a2 * phi1(r2 * h) * m0 + (r2 / r1) * a2 * phi22 * (m1 - m0)
                m2 = c.x0(score, x2, t2, a2, s2)
                phi2 = phi1(h) / h + 1
                x = (s_s / s_t) * x - a_s * phi1(h) * m0 + (1 / r2) * a_s * phi2 * (m2 - m0)
        record.record(i + 1, c.t[i + 1], x)
    return SampleResult(x=x, nfe=score.nfe, trajectory=record.stacked(), ts=ts)
