"""Weighted denoising score matching over t ~ U(t_eps, T), with importance sampling of t.

    L(theta) = E_{t ~ U(t_eps, T)} E_{x0, z} lambda(t) || s_theta(x_t, t) + z / sigma(t) ||^2,
    x_t = alpha(t) x0 + sigma(t) z,

with the squared norm summed over the dims of one sample. Weightings lambda(t):
    "sigma2"      sigma(t)^2: DDPM's eps-prediction loss || sigma s + z ||^2
    "likelihood"  g(t)^2: Song, Durkan, Murray, Ermon (2021); bounds KL(p_0 || p_theta)
    "none"        1

Importance sampling draws t from q(t) proportional to g(t)^2 / sigma(t)^2 = -d log_snr / dt, i.e.
uniformly in log-SNR, and reweights by lambda(t) / (q(t) (T - t_eps)) so the expectation is unchanged.
For the likelihood weighting the weighted integrand becomes (Delta log_snr / (T - t_eps)) ||sigma s + z||^2,
which varies little in t: that is where the variance goes down.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib._shapes import append_dims, check_t_eps
from score_sde.sde_lib.base import SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]
WEIGHTINGS = ("sigma2", "likelihood", "none")


def _log_snr_range(sde: SDE, t_eps: float) -> tuple[float, float]:
    ends = sde.log_snr(torch.tensor([t_eps, sde.T], dtype=torch.float64)).tolist()
    return ends[0], ends[1]


def sample_time(sde: SDE, n: int, *, t_eps: float = 1e-5, importance: bool = False,
                generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Draw n times in [t_eps, T]: uniformly, or with density proportional to g^2 / sigma^2.

    Returns:
        (n,) times of `dtype` (default dtype if None) on `device`.
    """
    check_t_eps(sde, t_eps)
    if importance and t_eps == 0 and bool(torch.isinf(sde.log_snr(0.0))):
        raise ValueError("importance sampling needs t_eps > 0 for this SDE (log-SNR is infinite "
                         "at t = 0); pass t_eps=1e-5")
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    if importance:
        hi, lo = _log_snr_range(sde, t_eps)
        t = sde.t_from_log_snr(hi + u * (lo - hi)).clamp(t_eps, sde.T)
    else:
        t = t_eps + u * (sde.T - t_eps)
    return t.to(dtype or torch.get_default_dtype())


def time_density(sde: SDE, t: Tensor, *, t_eps: float = 1e-5, importance: bool = False) -> Tensor:
    """The density on [t_eps, T] that `sample_time` draws from, evaluated at t. Shape of t."""
    check_t_eps(sde, t_eps)
    if not importance:
        return torch.full_like(t, 1.0 / (sde.T - t_eps))
    hi, lo = _log_snr_range(sde, t_eps)
    return sde.diffusion(t) ** 2 / sde.sigma(t) ** 2 / (hi - lo)


def weighting_fn(sde: SDE, t: Tensor, weighting: str) -> Tensor:
    """lambda(t) for a weighting name (see the module docstring). Shape of t."""
    if weighting == "sigma2":
        return sde.sigma(t) ** 2
    if weighting == "likelihood":
        return sde.diffusion(t) ** 2
    if weighting == "none":
        return torch.ones_like(t)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def dsm_loss(score_fn: ScoreFn, sde: SDE, x0: Tensor, *, weighting: str = "sigma2",
             t_eps: float = 1e-5, importance_sampling: bool = False, t: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             reduction: str = "mean") -> Tensor:
    """Weighted denoising score-matching loss, a Monte-Carlo estimate of L(theta) above.

    Args:
        score_fn: s_theta(x_t, t) -> (B, *D), with t of shape (B,).
        sde: the forward SDE.
        x0: (B, *D) data.
        weighting: "sigma2", "likelihood" or "none".
        t_eps: times are drawn from [t_eps, T].
        importance_sampling: draw t uniformly in log-SNR and reweight (unbiased for any weighting).
        t: (B,) times to use instead of drawing them (drawn from the importance density if
            importance_sampling, else uniform); injectable for tests.
        noise: (B, *D) standard normal z to use instead of drawing it.
        generator: the source of t and z when they are drawn.
        reduction: "mean" over the batch (a scalar) or "none" (per-sample, (B,)).

    Returns:
        A scalar, or (B,) per-sample losses for reduction="none".
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (B, *D) with at least one data dim, got "
                         f"{tuple(x0.shape)}")
    check_t_eps(sde, t_eps)
    b = x0.shape[0]
    if t is None:
        t = sample_time(sde, b, t_eps=t_eps, importance=importance_sampling, generator=generator,
                        dtype=x0.dtype, device=x0.device)
    elif t.shape != (b,):
        raise ValueError(f"t must have shape (B,) = ({b},), got {tuple(t.shape)}")
    elif bool((t < t_eps).any()) or bool((t > sde.T).any()):
        raise ValueError(f"t must lie in [t_eps, T] = [{t_eps}, {sde.T}]")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(noise.shape)}")

    mean, sigma = sde.marginal(x0, t)
    sigma_b = append_dims(sigma, x0.ndim)
    score = score_fn(mean + sigma_b * noise, t)
    if score.shape != x0.shape:
        raise ValueError(f"score_fn must return the shape of x {tuple(x0.shape)}, got "
                         f"{tuple(score.shape)}")
    # lambda ||s + z / sigma||^2 = (lambda / sigma^2) ||sigma s + z||^2, stable for small sigma
    sq = (sigma_b * score + noise).flatten(1).pow(2).sum(1)
    w = weighting_fn(sde, t, weighting) / sigma**2
    if importance_sampling:
        w = w / (time_density(sde, t, t_eps=t_eps, importance=True) * (sde.T - t_eps))
    loss = w * sq
    return loss.mean() if reduction == "mean" else loss
