"""Reverse-time SDE samplers: Euler-Maruyama and predictor-corrector (Song et al. 2021).

Reverse SDE, integrated from T down to t_eps:  dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dw_bar.
Each step's dt is the actual grid spacing (not 1 / N), and predictor-corrector runs the predictor
first and then the corrector at the new time, as in the paper's Algorithm 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, check_int, check_number, randn_like
from score_sde.solvers import grids
from score_sde.solvers.result import Callback, CountingScore, SampleResult, initial_state
from score_sde.solvers.stepping import (
    ancestral_coefficients,
    em_coefficients,
    reverse_diffusion_coefficients,
    run_linear_steps,
)

PREDICTORS = {
    "euler_maruyama": em_coefficients,
    "reverse_diffusion": reverse_diffusion_coefficients,
    "ancestral": ancestral_coefficients,
}
CORRECTORS = ("langevin", "none")


@torch.no_grad()
def euler_maruyama(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 1000,
                   t_eps: float = 1e-3, grid: str = "uniform", ts: Tensor | None = None,
                   denoise: bool = False, generator: torch.Generator | None = None,
                   callback: Callback | None = None, return_trajectory: bool = False
                   ) -> SampleResult:
    """Euler-Maruyama on the reverse SDE: x_s = x - (f_t x - g_t^2 score) h + g_t sqrt(h) z, h = t - s.

    Args:
        sde: the forward SDE.
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        steps: number of steps when ts is not given.
        t_eps: last time of the default grid.
        grid: "uniform", "quadratic" or "log_snr", when ts is not given.
        ts: an explicit decreasing grid in [0, T]; overrides steps, t_eps and grid.
        denoise: finish with Tweedie's denoiser x0 = (x + sigma^2 score) / alpha at ts[-1]
            (score_sde's final denoising; one more score call).
        generator: source of the noise, one draw of x's shape per step.
        callback: callback(i, t_i, x_i) after each step (and at the start, i = 0).
        return_trajectory: keep the len(ts) states (before denoising).

    Returns:
        SampleResult with x (B, *D) and nfe = len(ts) - 1 (+ 1 with denoise).
    """
    x_T = initial_state(sde, x_T, generator)
    on_grid = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    return run_linear_steps(on_grid, score_fn, x_T, em_coefficients(on_grid), generator=generator,
                            callback=callback, return_trajectory=return_trajectory,
                            denoise=denoise)


def langevin_step(x: Tensor, score: Tensor, z: Tensor, *, snr: float,
                  alpha_ratio: float = 1.0) -> Tensor:
    """One Langevin corrector step with Song et al.'s signal-to-noise step size (Algorithm 5):

        eps = 2 alpha_ratio (snr ||z|| / ||score||)^2,   x <- x + eps score + sqrt(2 eps) z,

    with ||z|| and ||score|| the batch means of the per-sample norms, as in score_sde. (Per-sample
    norms would make eps heavy-tailed in low dimension: near a mode ||score|| -> 0 and eps blows up.)

    Args:
        x, score, z: (B, *D) state, score at (x, t), standard normal noise.
        snr: the target signal-to-noise ratio r > 0.
        alpha_ratio: alpha_t^2 / alpha_s^2 of the predictor step t -> s just taken (score_sde's
            `alphas[i]` = 1 - beta_i on VP; 1 on VE).

    Returns:
        (B, *D) the corrected state.
    """
    grad_norm = score.flatten(1).norm(dim=1).mean().clamp_min(torch.finfo(x.dtype).tiny)
    noise_norm = z.flatten(1).norm(dim=1).mean()
    eps = 2 * alpha_ratio * (snr * noise_norm / grad_norm) ** 2
    return x + eps * score + torch.sqrt(2 * eps) * z


@torch.no_grad()
def predictor_corrector(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, steps: int = 1000,
                        predictor: str = "reverse_diffusion", corrector: str = "langevin",
                        snr: float = 0.16, n_steps: int = 1, t_eps: float = 1e-3,
                        grid: str = "uniform", ts: Tensor | None = None, denoise: bool = False,
                        generator: torch.Generator | None = None,
                        callback: Callback | None = None, return_trajectory: bool = False
                        ) -> SampleResult:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 1): for each step t -> s, one
    predictor step to s, then `n_steps` Langevin corrector steps at s.

    Args:
        sde: the forward SDE (VP, sub-VP or VE).
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        steps: number of predictor steps when ts is not given.
        predictor: "euler_maruyama", "reverse_diffusion" (exact transition of each step) or
            "ancestral" (DDPM's posterior step, variance beta_tilde).
        corrector: "langevin" or "none".
        snr: the corrector's signal-to-noise ratio (> 0).
        n_steps: corrector steps per predictor step (>= 0).
        t_eps: last time of the default grid.
        grid: "uniform", "quadratic" or "log_snr", when ts is not given.
        ts: an explicit decreasing grid in [0, T]; overrides steps, t_eps and grid.
        denoise: finish with Tweedie's denoiser at ts[-1] (one more score call).
        generator: source of all noise: per step, the predictor's draw, then one per corrector step.
        callback: callback(i, t_i, x_i) after each predictor-corrector step (and at i = 0).
        return_trajectory: keep the len(ts) states (before denoising).

    Returns:
        SampleResult with x (B, *D) and nfe = (len(ts) - 1) (1 + n_steps) (+ 1 with denoise).
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {tuple(PREDICTORS)}, got {predictor!r}")
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}")
    check_int("n_steps", n_steps, 0)
    check_number("snr", snr)
    x_T = initial_state(sde, x_T, generator)
    on_grid = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    corrector_steps = n_steps if corrector == "langevin" else 0
    alpha_ratio = (on_grid.kernel_scale**2).tolist()
    t_x = on_grid.times_like(x_T)

    def langevin(i: int, x: Tensor, score: CountingScore) -> Tensor:
        t_s = t_x[i + 1].expand(x.shape[0])
        for _ in range(corrector_steps):
            x = langevin_step(x, score(x, t_s), randn_like(x, generator), snr=snr,
                              alpha_ratio=alpha_ratio[i])
        return x

    return run_linear_steps(on_grid, score_fn, x_T, PREDICTORS[predictor](on_grid),
                            generator=generator, callback=callback,
                            return_trajectory=return_trajectory, denoise=denoise,
                            corrector=langevin if corrector_steps else None)
