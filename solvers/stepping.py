"""One-step linear schemes: x_{i+1} = c_x[i] x_i + c_score[i] score(x_i, t_i) + c_noise[i] z_i.

Euler-Maruyama, reverse diffusion, DDPM's ancestral step and the whole DDIM family are all of this
form on a linear SDE, with coefficients that depend on the grid only. They are computed once per
grid in float64 from the tables of `sde_lib.SDEGrid` (never re-derived here), and one loop without
host syncs applies them. Legend, for a step from t = ts[i] down to s = ts[i + 1]:

    a        kernel_scale = alpha_t / alpha_s, the forward transition's scale from s to t
    frac     kernel_fraction = 1 - a^2 sigma_s^2 / sigma_t^2, in (0, 1]
    var_ts   kernel_std^2 = sigma_t^2 frac, the forward transition's variance (DDPM's beta_t)
    x0_hat   Tweedie's denoiser (x + sigma_t^2 score) / alpha_t; eps_hat = -sigma_t score
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from score_sde.sde_lib import ScoreFn, SDEGrid, check_number, randn_like
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog

Corrector = Callable[[int, Tensor, CountingScore], Tensor]


@dataclass(frozen=True)
class LinearSteps:
    """Per-step coefficients of x_{i+1} = c_x x_i + c_score score(x_i, t_i) + c_noise z_i.

    Attributes:
        c_x, c_score, c_noise: (N,) float64, for the N steps of a grid of N + 1 times.
    """

    c_x: Tensor
    c_score: Tensor
    c_noise: Tensor


def em_coefficients(grid: SDEGrid) -> LinearSteps:
    """Euler-Maruyama on the reverse SDE: x_s = x - (f_t x - g_t^2 score) h + g_t sqrt(h) z."""
    f, g2 = grid.f[:-1], grid.g2[:-1]
    return LinearSteps(1 - f * grid.h, g2 * grid.h, torch.sqrt(g2 * grid.h))


def reverse_diffusion_coefficients(grid: SDEGrid) -> LinearSteps:
    """Song et al.'s reverse-diffusion predictor with the exact forward transition of the step:
    x_s = (2 - a) x + var_ts score + sqrt(var_ts) z (VP: a = sqrt(1 - beta_i), VE: a = 1)."""
    return LinearSteps(2 - grid.kernel_scale, grid.kernel_std**2, grid.kernel_std)


def ancestral_coefficients(grid: SDEGrid, variance: str = "beta_tilde") -> LinearSteps:
    """DDPM's ancestral step: the posterior q(x_s | x_t, x0 = x0_hat) of the forward process,

        mean = a sigma_s^2 / sigma_t^2 x + alpha_s frac x0_hat,
        std  = sigma_s sqrt(frac) ("beta_tilde", the posterior's) or sigma_t sqrt(frac) = sqrt(var_ts)
               ("beta"; no noise on a step that ends at sigma_s = 0, as in Ho et al.).

    On VP this is Ho et al.'s x_s = (x - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t) + std z;
    on VE it is SMLD's ancestral step.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    alpha_t, sigma_t, alpha_s, sigma_s = grid.alpha[:-1], grid.sigma[:-1], grid.alpha[1:], grid.sigma[1:]
    frac = grid.kernel_fraction
    c_x = grid.kernel_scale * (sigma_s / sigma_t) ** 2 + alpha_s * frac / alpha_t
    c_score = alpha_s * frac * sigma_t**2 / alpha_t
    if variance == "beta_tilde":
        c_noise = sigma_s * torch.sqrt(frac)
    else:
        c_noise = torch.where(sigma_s > 0, grid.kernel_std, 0.0)
    return LinearSteps(c_x, c_score, c_noise)


def ddim_coefficients(grid: SDEGrid, eta: float) -> LinearSteps:
    """DDIM's step x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c_s^2) eps_hat + c_s z with
    c_s = eta sigma_s sqrt(frac), eta times the posterior std (VP: eta sigma_s / sigma_t
    sqrt(1 - alpha_t^2 / alpha_s^2), as in Song, Meng, Ermon). eta = 0 is Euler's method on
    d(x / alpha) = eps d(sigma / alpha); on VE (alpha = 1) that is Euler in sigma.

    Raises:
        ValueError: eta < 0, or eta so large that c_s > sigma_s on some step.
    """
    check_number("eta", eta, strict=False)
    alpha_t, sigma_t, alpha_s, sigma_s = grid.alpha[:-1], grid.sigma[:-1], grid.alpha[1:], grid.sigma[1:]
    c_z = eta * sigma_s * torch.sqrt(grid.kernel_fraction)
    direction2 = sigma_s**2 - c_z**2
    if bool((direction2 < -1e-12 * sigma_s**2).any()):
        raise ValueError(f"eta = {eta} makes the noise std exceed sigma_s on this grid; "
                         "use eta <= 1")
    c_eps = torch.sqrt(direction2.clamp(min=0)) - alpha_s * sigma_t / alpha_t
    return LinearSteps(alpha_s / alpha_t, -sigma_t * c_eps, c_z)


def run_linear_steps(grid: SDEGrid, score_fn: ScoreFn, x_T: Tensor, coefficients: LinearSteps,
                     *, generator: torch.Generator | None = None,
                     callback: Callback | None = None, return_trajectory: bool = False,
                     denoise: bool = False, corrector: Corrector | None = None) -> SampleResult:
    """Apply a one-step linear scheme over the grid, drawing z_i from `generator` in step order.

    Args:
        grid: the SDE on the grid of N + 1 times.
        score_fn: score_fn(x, t) with t of shape (B,).
        x_T: (B, *D) the state at ts[0], checked (`result.initial_state`).
        coefficients: the scheme's coefficients for the N steps.
        generator: the source of z_i (one draw of x's shape per step with c_noise != 0).
        callback: called as callback(i, t_i, x) on each state, i = 0..N.
        return_trajectory: keep the N + 1 states in the result.
        denoise: end with Tweedie's denoiser at ts[-1] (one more score call).
        corrector: corrector(i, x, score) -> x, run on the state at ts[i + 1] after step i.

    Returns:
        SampleResult with x (B, *D) and nfe = N (+ 1 with denoise, + the corrector's calls).
    """
    score, x = CountingScore(score_fn), x_T
    t_x = grid.times_like(x)[:, None].expand(-1, x.shape[0])  # row i: t_i for the batch
    log = StepLog(return_trajectory, callback)
    log.record(0, grid.times[0], x)
    steps = zip(coefficients.c_x.tolist(), coefficients.c_score.tolist(),
                coefficients.c_noise.tolist())
    for i, (c_x, c_s, c_z) in enumerate(steps):
        s = score(x, t_x[i])
        x = x * c_x  # a new tensor: the in-place updates below fuse the scaled adds
        x.add_(s, alpha=c_s)
        if c_z != 0:
            x.add_(randn_like(x, generator), alpha=c_z)
        if corrector is not None:
            x = corrector(i, x, score)
        log.record(i + 1, grid.times[i + 1], x)
    if denoise:
        x = grid.x0_from_score(x, score(x, t_x[-1]), grid.steps)
    return log.result(x, score.nfe)
