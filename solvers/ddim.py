"""DDIM (the eta family) and DDPM's ancestral sampler, on any linear SDE and any decreasing grid.

Both read alpha(t), sigma(t) of the SDE and turn the score into DDPM's noise prediction
eps_hat = -sigma_t score (docs/math.md, "Discrete samplers"). The step formulas are in `solvers.stepping`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, check_sde
from score_sde.solvers import grids
from score_sde.solvers.result import Callback, SampleResult, initial_state
from score_sde.solvers.stepping import ancestral_coefficients, ddim_coefficients, run_linear_steps


@torch.no_grad()
def ddim(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 100, eta: float = 0.0,
         t_eps: float = 1e-3, grid: str = "uniform", ts: Tensor | None = None,
         generator: torch.Generator | None = None, callback: Callback | None = None,
         return_trajectory: bool = False) -> SampleResult:
    """DDIM (Song, Meng, Ermon 2021) from T to t_eps, with eta interpolating DDIM and DDPM.

    Each step, from t to s:  x0_hat = (x - sigma_t eps_hat) / alpha_t,
        x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,  c = eta sigma_s sqrt(frac),
    with frac = 1 - alpha_t^2 sigma_s^2 / (alpha_s^2 sigma_t^2). On VP this is the paper's
    c = eta sigma_s / sigma_t sqrt(1 - alpha_t^2 / alpha_s^2); eta = 0 is deterministic (Euler on
    dx_bar = eps d rho, x_bar = x / alpha, rho = sigma / alpha); eta = 1 is DDPM's ancestral step
    with variance beta_tilde. On VE (alpha = 1) the same formula is Euler in sigma (eta = 0) and
    the ancestral Euler step (eta = 1), so one sampler serves VP, sub-VP and VE models.

    Args:
        sde: a linear SDE (VPSDE, SubVPSDE, VESDE).
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0] (usually T), or a shape (B, *D): a prior draw from
            `generator`.
        steps: number of steps (= NFE) when ts is not given.
        eta: >= 0; the noise scale (0 deterministic, 1 DDPM-like).
        t_eps: last time of the default grid.
        grid: "uniform", "quadratic" or "log_snr", when ts is not given.
        ts: an explicit decreasing grid in [0, T] (e.g. `grids.ddpm_subsequence`); overrides
            steps, t_eps and grid.
        generator: source of the noise z (one draw per step, when eta > 0).
        callback: callback(i, t_i, x_i) after each step (and at the start, i = 0).
        return_trajectory: keep the len(ts) states.

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe = len(ts) - 1.
    """
    x_T = initial_state(sde, x_T, generator)
    on_grid = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    return run_linear_steps(on_grid, score_fn, x_T, ddim_coefficients(on_grid, eta),
                            generator=generator, callback=callback,
                            return_trajectory=return_trajectory)


@torch.no_grad()
def ddpm_ancestral(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 1000,
                   variance: str = "beta_tilde", ts: Tensor | None = None,
                   generator: torch.Generator | None = None, callback: Callback | None = None,
                   return_trajectory: bool = False) -> SampleResult:
    """DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2) on the SDE's alpha, sigma.

    Each step samples the forward process's posterior q(x_s | x_t, x_0 = x0_hat): on VP,
        x_s = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(1 - beta_t) + std z,
    with abar = alpha^2, beta_t = 1 - abar_t / abar_s, and std^2 = beta_t ("beta") or
    beta_tilde_t = beta_t (1 - abar_s) / (1 - abar_t) ("beta_tilde", the posterior variance).

    Args:
        sde: a linear SDE (VPSDE, SubVPSDE, VESDE).
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        steps: N; without ts the grid is the full DDPM grid k T / N, k = N..1, then t = 0.
        variance: "beta_tilde" or "beta".
        ts: an explicit decreasing grid in [0, T]; overrides steps.
        generator: source of the noise z, one draw per step with nonzero std.
        callback: callback(i, t_i, x_i) after each step (and at the start, i = 0).
        return_trajectory: keep the len(ts) states.

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe = len(ts) - 1.
    """
    x_T = initial_state(sde, x_T, generator)
    if ts is None:
        ts = grids.ddpm_subsequence(check_sde(sde), steps, num_train_steps=steps)
    on_grid = SDEGrid(sde, ts)
    return run_linear_steps(on_grid, score_fn, x_T, ancestral_coefficients(on_grid, variance),
                            generator=generator, callback=callback,
                            return_trajectory=return_trajectory)
