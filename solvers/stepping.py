"""One-step linear schemes: x_{i+1} = c_x[i] x_i + c_score[i] score(x_i, t_i) + c_noise[i] z_i.

Euler-Maruyama, reverse diffusion, DDPM's ancestral step and the whole DDIM family are all of this
form on a linear SDE, with coefficients that depend on the grid only. They are computed once per
grid in float64 from the SDE's alpha, sigma, log_snr, f and g (never re-derived here), and one
low-overhead loop applies them. Legend, for a step from t = ts[i] down to s = ts[i + 1]:

    a        alpha_t / alpha_s, the forward transition's scale from s to t
    frac     1 - a^2 sigma_s^2 / sigma_t^2 = -expm1(log_snr_t - log_snr_s), in (0, 1]
    var_ts   sigma_t^2 frac, the forward transition's variance from s to t (DDPM's beta_t)
    x0_hat   (x + sigma_t^2 score) / alpha_t, Tweedie's denoiser; eps_hat = -sigma_t score
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from score_sde.sde_lib import SDE
from score_sde.solvers.result import Callback, CountingScore, SampleResult, ScoreFn, Trajectory, randn_like


@dataclass(frozen=True)
class LinearSteps:
    """Per-step coefficients of x_{i+1} = c_x x_i + c_score score(x_i, t_i) + c_noise z_i.

    Attributes:
        c_x, c_score, c_noise: (N,) float64, for the N steps of a grid of N + 1 times.
    """

    c_x: Tensor
    c_score: Tensor
    c_noise: Tensor


@dataclass(frozen=True)
class GridCoefficients:
    """The SDE's coefficients at the start t = ts[:-1] and end s = ts[1:] of each step, (N,) float64."""

    alpha_t: Tensor
    sigma_t: Tensor
    alpha_s: Tensor
    sigma_s: Tensor
    frac: Tensor
    f_t: Tensor
    g2_t: Tensor
    h: Tensor

    @classmethod
    def on(cls, sde: SDE, ts: Tensor) -> GridCoefficients:
        """Evaluate the SDE once on the whole float64 grid ts (N + 1,)."""
        alpha, sigma, lsnr = sde.alpha(ts), sde.sigma(ts), sde.log_snr(ts)
        t = ts[:-1]
        return cls(alpha_t=alpha[:-1], sigma_t=sigma[:-1], alpha_s=alpha[1:], sigma_s=sigma[1:],
                   frac=-torch.expm1(lsnr[:-1] - lsnr[1:]), f_t=sde.drift_coef(t),
                   g2_t=sde.diffusion(t) ** 2, h=ts[:-1] - ts[1:])

    @property
    def var_ts(self) -> Tensor:
        return self.sigma_t**2 * self.frac


def em_coefficients(c: GridCoefficients) -> LinearSteps:
    """Euler-Maruyama on the reverse SDE: x_s = x - (f_t x - g_t^2 score) h + g_t sqrt(h) z."""
    return LinearSteps(1 - c.f_t * c.h, c.g2_t * c.h, torch.sqrt(c.g2_t * c.h))


def reverse_diffusion_coefficients(c: GridCoefficients) -> LinearSteps:
    """Song et al.'s reverse-diffusion predictor with the exact forward transition of the step:
    x_s = (2 - a) x + var_ts score + sqrt(var_ts) z (VP: a = sqrt(1 - beta_i), VE: a = 1)."""
    a = c.alpha_t / c.alpha_s
    return LinearSteps(2 - a, c.var_ts, torch.sqrt(c.var_ts))


def ancestral_coefficients(c: GridCoefficients, variance: str = "beta_tilde") -> LinearSteps:
    """DDPM's ancestral step: the posterior q(x_s | x_t, x0 = x0_hat) of the forward process,

        mean = a sigma_s^2 / sigma_t^2 x + alpha_s frac x0_hat,
        std  = sigma_s sqrt(frac) ("beta_tilde", the posterior's) or sigma_t sqrt(frac) = sqrt(var_ts)
               ("beta"; no noise on a step that ends at sigma_s = 0, as in Ho et al.).

    On VP this is Ho et al.'s x_s = (x - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t) + std z;
    on VE it is SMLD's ancestral step.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    c_x = (c.alpha_t / c.alpha_s) * (c.sigma_s / c.sigma_t) ** 2 + c.alpha_s * c.frac / c.alpha_t
    c_score = c.alpha_s * c.frac * c.sigma_t**2 / c.alpha_t
    if variance == "beta_tilde":
        c_noise = c.sigma_s * torch.sqrt(c.frac)
    else:
        c_noise = torch.where(c.sigma_s > 0, c.sigma_t * torch.sqrt(c.frac), 0.0)
    return LinearSteps(c_x, c_score, c_noise)


def ddim_coefficients(c: GridCoefficients, eta: float) -> LinearSteps:
    """DDIM's step x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c_s^2) eps_hat + c_s z with
    c_s = eta sigma_s sqrt(frac), eta times the posterior std (VP: eta sigma_s / sigma_t
    sqrt(1 - alpha_t^2 / alpha_s^2), as in Song, Meng, Ermon). eta = 0 is Euler's method on
    d(x / alpha) = eps d(sigma / alpha); on VE (alpha = 1) that is Euler in sigma.

    Raises:
        ValueError: eta < 0, or eta so large that c_s > sigma_s on some step.
    """
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta >= 0:
        raise ValueError(f"eta must be a number >= 0, got {eta!r}")
    c_z = eta * c.sigma_s * torch.sqrt(c.frac)
    direction2 = c.sigma_s**2 - c_z**2
    if bool((direction2 < -1e-12 * c.sigma_s**2).any()):
        raise ValueError(f"eta = {eta} makes the noise std exceed sigma_s on this grid; "
                         "use eta <= 1")
    c_eps = torch.sqrt(direction2.clamp(min=0)) - c.alpha_s * c.sigma_t / c.alpha_t
    return LinearSteps(c.alpha_s / c.alpha_t, -c.sigma_t * c_eps, c_z)


def tweedie(sde: SDE, score: CountingScore, x: Tensor, t: float) -> Tensor:
    """Tweedie's denoiser E[x_0 | x_t] = (x + sigma_t^2 score(x, t)) / alpha_t; one score call."""
    tt = torch.tensor([t], dtype=torch.float64)
    alpha, sigma = sde.alpha(tt).item(), sde.sigma(tt).item()
    t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    return (x + sigma**2 * score(x, t_vec)) / alpha


def run_linear_steps(score_fn: ScoreFn, x_T: Tensor, ts: Tensor, steps: LinearSteps, *,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     return_trajectory: bool = False, sde: SDE | None = None,
                     denoise: bool = False) -> SampleResult:
    """Apply a one-step linear scheme over the grid ts, drawing z_i from `generator` in step order.

    Args:
        score_fn: score_fn(x, t) with t of shape (B,).
        x_T: (B, *D) the state at ts[0].
        ts: (N + 1,) float64 decreasing grid.
        steps: the scheme's coefficients for the N steps.
        generator: the source of z_i (one draw of x's shape per step with c_noise != 0).
        callback: called as callback(i, t_i, x) on each state, i = 0..N.
        return_trajectory: keep the N + 1 states in the result.
        sde: needed only for `denoise`.
        denoise: end with Tweedie's denoiser at ts[-1] (one more score call).

    Returns:
        SampleResult with x (B, *D) and nfe = N (+ 1 with denoise).
    """
    score = score_fn if isinstance(score_fn, CountingScore) else CountingScore(score_fn)
    x = x_T
    t_list = ts.tolist()
    t_x = ts.to(device=x.device, dtype=x.dtype)
    batch = x.shape[0]
    record = Trajectory(return_trajectory, callback)
    record.record(0, t_list[0], x)
    for i, (c_x, c_s, c_z) in enumerate(zip(steps.c_x.tolist(), steps.c_score.tolist(),
                                            steps.c_noise.tolist())):
        s = score(x, t_x[i].expand(batch))
        x = c_x * x + c_s * s
        if c_z != 0:
            x = x + c_z * randn_like(x, generator)
        record.record(i + 1, t_list[i + 1], x)
    if denoise:
        x = tweedie(sde, score, x, t_list[-1])
    return SampleResult(x=x, nfe=score.nfe, trajectory=record.stacked(), ts=ts)
