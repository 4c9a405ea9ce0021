"""The training losses on noised data: weighted denoising score matching over t ~ U(t_eps, T), with
importance sampling of t, and the cross-entropy of a noise-conditional classifier.

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

Neither loss synchronises with the device when called with check=False (and given or drawn times):
a training loop that checks its loss at logging intervals runs without host syncs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from score_sde.sde_lib.base import SDE, ScoreFn
from score_sde.sde_lib.tensors import (
    append_dims,
    check_t_eps,
    describe_samples,
    nonfinite_samples,
    randn_like,
)

WEIGHTINGS = ("sigma2", "likelihood", "none")


def _importance_range(sde: SDE, t_eps: float) -> tuple[float, float]:
    """(log_snr(T), log_snr(t_eps)), which must be finite for importance sampling."""
    lo, hi = sde.log_snr_range(t_eps)
    if not math.isfinite(hi):
        raise ValueError("importance sampling needs t_eps > 0 for this SDE (log-SNR is infinite "
                         "at t = 0); pass t_eps=1e-5")
    return lo, hi


def sample_time(sde: SDE, n: int, *, t_eps: float = 1e-5, importance: bool = False,
                generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Draw n times in [t_eps, T]: uniformly, or with density proportional to g^2 / sigma^2.

    Returns:
        (n,) times of `dtype` (default dtype if None) on `device` (default: the generator's).
    """
    check_t_eps(sde, t_eps)
    if generator is not None and device is None:
        device = generator.device
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    if importance:
        lo, hi = _importance_range(sde, t_eps)
        t = sde.t_from_log_snr(hi + u * (lo - hi), check=False).clamp(t_eps, sde.T)
    else:
        t = t_eps + u * (sde.T - t_eps)
    return t.to(dtype or torch.get_default_dtype())


def time_density(sde: SDE, t: Tensor, *, t_eps: float = 1e-5, importance: bool = False,
                 check: bool = True) -> Tensor:
    """The density on [t_eps, T] that `sample_time` draws from, evaluated at t. Shape of t.

    check=False skips the check of t in [0, T] (and its host sync).
    """
    check_t_eps(sde, t_eps)
    if not importance:
        return torch.full_like(t, 1.0 / (sde.T - t_eps))
    lo, hi = _importance_range(sde, t_eps)
    return sde.diffusion(t, check=check) ** 2 / sde.sigma(t, check=check) ** 2 / (hi - lo)


def weighting_fn(sde: SDE, t: Tensor, weighting: str, *, check: bool = True) -> Tensor:
    """lambda(t) for a weighting name (see the module docstring). Shape of t.

    check=False skips the check of t in [0, T] (and its host sync).
    """
    if weighting == "sigma2":
        return sde.sigma(t, check=check) ** 2
    if weighting == "likelihood":
        return sde.diffusion(t, check=check) ** 2
    if weighting == "none":
        return torch.ones_like(t)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _check_data(x0: Tensor, t_eps: float, sde: SDE) -> None:
    """x0 a (B, *D) float batch with B >= 1 (shapes only: no host sync)."""
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 2:
        raise ValueError(f"x0 must be a floating tensor of shape (B, *D) with at least one data "
                         f"dim, got {getattr(x0, 'dtype', type(x0).__name__)} of shape "
                         f"{tuple(getattr(x0, 'shape', ()))}")
    if x0.shape[0] == 0:
        raise ValueError("x0 is an empty batch (B = 0): give at least one sample")
    check_t_eps(sde, t_eps)


def _check_values(x0: Tensor, t: Tensor, t_eps: float, T: float) -> None:
    """x0 finite and t in [t_eps, T], in one host sync (two more to name the culprits)."""
    t_ok = (t >= t_eps) & (t <= T)
    if bool(torch.isfinite(x0).all() & t_ok.all()):
        return
    bad = nonfinite_samples(x0)
    if bad:
        raise ValueError(f"x0 has non-finite values in {describe_samples(bad, x0.shape[0])}; "
                         "clean the data")
    raise ValueError(f"t must lie in [t_eps, T] = [{t_eps}, {T}], got values in "
                     f"[{t.min().item():.6g}, {t.max().item():.6g}]")


def dsm_loss(sde: SDE, score_fn: ScoreFn, x0: Tensor, *, weighting: str = "sigma2",
             t_eps: float = 1e-5, importance_sampling: bool = False, t: Tensor | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             reduction: str = "mean", check: bool = True) -> Tensor:
    """Weighted denoising score-matching loss, a Monte-Carlo estimate of L(theta) above.

    Args:
        sde: the forward SDE.
        score_fn: s_theta(x_t, t) -> (B, *D), with t of shape (B,).
        x0: (B, *D) data, B >= 1.
        weighting: "sigma2", "likelihood" or "none".
        t_eps: times are drawn from [t_eps, T].
        importance_sampling: draw t uniformly in log-SNR and reweight (unbiased for any weighting).
        t: (B,) times to use instead of drawing them (drawn from the importance density if
            importance_sampling, else uniform); injectable for tests.
        noise: (B, *D) standard normal z to use instead of drawing it.
        generator: the source of t and z when they are drawn.
        reduction: "mean" over the batch (a scalar) or "none" (per-sample, (B,)).
        check: check that x0 is finite and t lies in [t_eps, T] (one host-device sync). A training
            loop passes False and checks its loss at logging intervals instead.

    Returns:
        A scalar, or (B,) per-sample losses for reduction="none".
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    _check_data(x0, t_eps, sde)
    b = x0.shape[0]
    if t is None:
        t = sample_time(sde, b, t_eps=t_eps, importance=importance_sampling, generator=generator,
                        dtype=x0.dtype, device=x0.device)
    elif t.shape != (b,):
        raise ValueError(f"t must have shape (B,) = ({b},), got {tuple(t.shape)}")
    if noise is None:
        noise = randn_like(x0, generator)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(noise.shape)}")
    if check:
        _check_values(x0, t, t_eps, sde.T)

    mean, sigma = sde.marginal(x0, t, check=False)
    sigma_b = append_dims(sigma, x0.ndim)
    score = score_fn(mean + sigma_b * noise, t)
    if score.shape != x0.shape:
        raise ValueError(f"score_fn must return the shape of x {tuple(x0.shape)}, got "
                         f"{tuple(score.shape)}")
    # lambda ||s + z / sigma||^2 = (lambda / sigma^2) ||sigma s + z||^2, stable for small sigma
    sq = (sigma_b * score + noise).flatten(1).pow(2).sum(1)
    w = weighting_fn(sde, t, weighting, check=False) / sigma**2
    if importance_sampling:
        w = w / (time_density(sde, t, t_eps=t_eps, importance=True, check=False) * (sde.T - t_eps))
    loss = w * sq
    return loss.mean() if reduction == "mean" else loss


def classifier_loss(sde: SDE, classifier: nn.Module, x0: Tensor, y: Tensor, *,
                    t_eps: float = 1e-5, generator: torch.Generator | None = None) -> Tensor:
    """Cross-entropy of a noise-conditional classifier on noised data:

        E_{t ~ U(t_eps, T)} E_{z} [-log c_y(alpha(t) x0 + sigma(t) z, t)].

    Args:
        sde: the forward SDE whose marginal noises x0.
        classifier: classifier(x_t (B, *D), t (B,)) -> (B, K) logits, e.g. a
            `models.NoisyClassifier`.
        x0: (B, *D) clean data.
        y: (B,) integer labels in [0, K).
        t_eps: the smallest training time.
        generator: source of t and z.

    Returns:
        The scalar mean loss (differentiable in the classifier's parameters).

    Raises:
        ValueError: y not a (B,) integer tensor, labels outside [0, K), or logits not (B, K).
    """
    _check_data(x0, t_eps, sde)
    if not isinstance(y, Tensor) or y.is_floating_point() or y.shape != (x0.shape[0],):
        raise ValueError(f"y must be an integer tensor of shape (B,) = ({x0.shape[0]},), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} of shape "
                         f"{tuple(getattr(y, 'shape', ()))}")
    t = sample_time(sde, x0.shape[0], t_eps=t_eps, generator=generator, dtype=x0.dtype,
                    device=x0.device)
    mean, sigma = sde.marginal(x0, t, check=False)
    logits = classifier(mean + append_dims(sigma, x0.ndim) * randn_like(x0, generator), t)
    if logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
        raise ValueError(f"classifier must return (B, K) logits with B = {x0.shape[0]}, got "
                         f"{tuple(logits.shape)}")
    if bool((y < 0).any()) or bool((y >= logits.shape[1]).any()):
        raise ValueError(f"y must lie in [0, K) = [0, {logits.shape[1]}), got values in "
                         f"[{y.min().item()}, {y.max().item()}]")
    return F.cross_entropy(logits, y.long())
