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

from score_sde.sde_lib import SDE, ScoreFn, check_number, randn_like
from score_sde.solvers.grids import resolve_grid
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state


@torch.no_grad()
def heun(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 18,
         t_eps: float = 1e-3, grid: str = "karras", ts: Tensor | None = None, churn: float = 0.0,
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
    check_number("churn", churn, strict=False)
    on_grid = resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    n, times, batch, t_x = on_grid.steps, on_grid.times, x_T.shape[0], on_grid.times_like(x_T)
    alpha, sigma = on_grid.floats("alpha"), on_grid.floats("sigma")
    rho = on_grid.sigma / on_grid.alpha
    rhos = rho.tolist()
    # churn: rho_i raised to rho_hat = min(rho_i (1 + gamma), rho_0) on [churn_tmin, churn_tmax]
    gamma = min(churn / n, math.sqrt(2) - 1)
    churned = ((rho[:-1] >= churn_tmin) & (rho[:-1] <= churn_tmax)).tolist() if gamma > 0 else [
        False] * n
    rho_hat = (rho[:-1] * (1 + gamma)).clamp(max=rhos[0])
    t_hat = sde.t_from_log_snr(-2 * torch.log(rho_hat), check=False)
    t_hat_x = t_hat.to(device=x_T.device, dtype=x_T.dtype)
    alpha_hat, rho_hat = sde.alpha(t_hat, check=False).tolist(), rho_hat.tolist()
    score, log = CountingScore(score_fn), StepLog(return_trajectory, callback)

    x_bar = x_T / alpha[0]
    log.record(0, times[0], x_T)
    for i in range(n):
        t, a, s, r = t_x[i], alpha[i], sigma[i], rhos[i]
        if churned[i]:
            x_bar = x_bar + math.sqrt(rho_hat[i] ** 2 - r**2) * churn_noise * randn_like(
                x_bar, generator)
            t, a, r = t_hat_x[i], alpha_hat[i], rho_hat[i]
            s = r * a
        # Euler, then Heun's average, of d x_bar / d rho = eps_hat = -sigma score(alpha x_bar, t)
        drho = rhos[i + 1] - r
        score_t = score(x_bar * a, t.expand(batch))
        x_next = torch.add(x_bar, score_t, alpha=-drho * s)
        if rhos[i + 1] > 0:
            score_s = score(x_next * alpha[i + 1], t_x[i + 1].expand(batch))
            x_next = torch.add(x_bar, score_t, alpha=-0.5 * drho * s)
            x_next.add_(score_s, alpha=-0.5 * drho * sigma[i + 1])
        x_bar = x_next
        log.record(i + 1, times[i + 1], x_bar, alpha[i + 1])
    return log.result(alpha[-1] * x_bar, score.nfe)
