"""EDM's sampler (Karras et al. 2022) on any linear SDE: Heun's method on the probability-flow ODE
with optional stochastic churn (its grid is `solvers.grids.karras`).

In EDM's coordinates x_bar = x / alpha and rho = sigma / alpha (the noise-to-signal ratio,
exp(-log_snr / 2)), the PF-ODE of every linear SDE is dx_bar / d rho = eps_hat(x, t) with
eps_hat = -sigma_t score(x, t) (docs/math.md, "DDIM is Euler's method"); VE has alpha = 1 and
rho = sigma. Heun's method on it is EDM's Algorithm 1 (second order, 2 NFE a step; the step into
rho = 0 is Euler).
Churn (Algorithm 2) first raises rho_i to rho_hat = rho_i (1 + gamma) by adding fresh noise of
variance rho_hat^2 - rho_i^2, gamma = min(S_churn / N, sqrt(2) - 1) on rho in [S_tmin, S_tmax].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib import SDE
from score_sde.solvers.grids import resolve_grid
from score_sde.solvers.result import (
    Callback,
    CountingScore,
    SampleResult,
    ScoreFn,
    Trajectory,
    initial_state,
    randn_like,
)


@torch.no_grad()
def heun(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 18, t_eps: float = 1e-3,
         grid: str = "karras", ts: Tensor | None = None, churn: float = 0.0,
         churn_tmin: float = 0.0, churn_tmax: float = math.inf, churn_noise: float = 1.0,
         generator: torch.Generator | None = None, callback: Callback | None = None,
         return_trajectory: bool = False) -> SampleResult:
    """Heun's 2nd-order method on dx_bar / d rho = eps_hat (EDM), with optional stochastic churn.

    Args:
        sde, score_fn, x_T: the SDE, score_fn(x, t) with t (B,), and the (B, *D) state at ts[0].
        steps, t_eps, grid: the grid when `ts` is not given (default EDM's "karras", rho = 7).
        ts: an explicit decreasing grid.
        churn: EDM's S_churn (0 = deterministic, order 2); churn_tmin, churn_tmax bound the rho
            range where noise is added; churn_noise is S_noise.
        generator: the source of churn noise.
        callback, return_trajectory: as in every sampler.

    Returns:
        SampleResult with x (B, *D) at ts[-1]; nfe = 2 N (2 N - 1 if the grid ends at rho = 0).
    """
    x_T = initial_state(sde, x_T, generator)
    if not (isinstance(churn, (int, float)) and churn >= 0):
        raise ValueError(f"churn must be a number >= 0, got {churn!r}")
    ts = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    score, n, b = CountingScore(score_fn), len(ts) - 1, x_T.shape[0]
    alpha, sigma = sde.alpha(ts).tolist(), sde.sigma(ts).tolist()
    rhos = [s / a for a, s in zip(alpha, sigma)]
    rho_top = rhos[0]
    gamma_max = min(churn / n, math.sqrt(2) - 1)

    def eps_hat(x_bar: Tensor, t: float, a: float, s: float) -> Tensor:
        t_vec = torch.full((b,), t, dtype=x_bar.dtype, device=x_bar.device)
        return -s * score(a * x_bar, t_vec)

    record = Trajectory(return_trajectory, callback)
    t_list = ts.tolist()
    x_bar = x_T / alpha[0]
    record.record(0, t_list[0], x_T)
    for i in range(n):
        t, a, s, r = t_list[i], alpha[i], sigma[i], rhos[i]
        if gamma_max > 0 and churn_tmin <= r <= churn_tmax:
            r_hat = min(r * (1 + gamma_max), rho_top)
            x_bar = x_bar + math.sqrt(r_hat**2 - r**2) * churn_noise * randn_like(x_bar, generator)
            t_hat = sde.t_from_log_snr(torch.tensor(-2 * math.log(r_hat), dtype=torch.float64))
            t, a, r = t_hat.item(), sde.alpha(t_hat).item(), r_hat
            s = r * a
        d = eps_hat(x_bar, t, a, s)
        x_next = x_bar + (rhos[i + 1] - r) * d
        if rhos[i + 1] > 0:
            d_next = eps_hat(x_next, t_list[i + 1], alpha[i + 1], sigma[i + 1])
            x_next = x_bar + (rhos[i + 1] - r) * 0.5 * (d + d_next)
        x_bar = x_next
        record.record(i + 1, t_list[i + 1], alpha[i + 1] * x_bar)
    return SampleResult(x=alpha[-1] * x_bar, nfe=score.nfe, trajectory=record.stacked(), ts=ts)
