"""The abstract linear (affine-drift) SDE dx = f(t) x dt + g(t) dw and what follows from it.

Legend (docs/math.md):
    alpha(t), sigma(t)  the marginal x_t = alpha(t) x_0 + sigma(t) z, z ~ N(0, I)
    f(t) = d log alpha / dt, the drift coefficient: drift(x, t) = f(t) x
    g(t)                the diffusion coefficient
    log_snr(t)          log(alpha^2 / sigma^2), strictly decreasing in t
Reverse-time SDE: dx = [f x - g^2 score] dt + g dw_bar. Probability-flow ODE: dx/dt = f x - g^2 score / 2.

Times are floats or (B,) tensors; x is (B, *D). Coefficient methods return a tensor of t's shape
(0-d for a float) and check t in [0, T]; with check=False they skip that check (and its host
sync), for callers that checked their times once at entry.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib.tensors import append_dims, batch_times, check_number, time_tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""A score function score_fn(x (B, *D), t (B,)) -> (B, *D), an estimate of grad log p_t(x)."""


def x0_from_score(x: Tensor, score: Tensor, alpha: float | Tensor, sigma: float | Tensor
                  ) -> Tensor:
    """Tweedie's formula: E[x_0 | x_t = x] = (x + sigma_t^2 score) / alpha_t (docs/math.md).

    Args:
        x, score: (B, *D) the state at time t and the score there.
        alpha, sigma: alpha_t and sigma_t as floats or tensors that broadcast against x.

    Returns:
        (B, *D).
    """
    return (x + sigma**2 * score) / alpha


def transition_from_logs(log_alpha_s: Tensor, log_sigma_s: Tensor, log_alpha_t: Tensor,
                         log_sigma_t: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_{t|s}, sigma_{t|s}) of the forward transition from log alpha and log sigma at s <= t
    (see `SDE.transition`)."""
    log_snr_drop = 2 * ((log_alpha_t - log_sigma_t) - (log_alpha_s - log_sigma_s))  # <= 0
    var = -torch.exp(2 * log_sigma_t) * torch.expm1(log_snr_drop)
    return torch.exp(log_alpha_t - log_alpha_s), var.clamp_min(0).sqrt()


class SDE(abc.ABC):
    """A linear SDE on [0, T] with a Gaussian prior N(0, prior_std^2 I).

    Subclasses implement `_log_alpha`, `_log_sigma`, `_drift_coef`, `_diffusion`, `_t_from_log_snr`
    on tensors of checked times; the public methods check and broadcast.

    It also satisfies torchsde's contract (`f`, `g`, `noise_type`, `sde_type`), so
    `torchsde.sdeint(sde, x0, ts)` simulates the forward SDE of a (B, d) state directly.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    #: f(t) and g(t) are continuous in t. False for a discrete schedule, whose beta jumps at its
    #: knots: adaptive ODE solvers then integrate in log-SNR time (`solvers.clock`).
    smooth_coefficients = True

    def __init__(self, T: float, prior_std: float):
        self.T = check_number("T", T)
        self.prior_std = check_number("prior_std", prior_std)
        self._log_snr_ranges: dict[float, tuple[float, float]] = {}

    # -- to implement ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _log_sigma(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _drift_coef(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _diffusion(self, t: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _t_from_log_snr(self, log_snr: Tensor) -> Tensor: ...

    # -- coefficients ---------------------------------------------------------------------------
    def _t(self, t: float | Tensor, check: bool) -> Tensor:
        return time_tensor(t, self.T, check=check)

    def alpha(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """alpha(t), the scale of x_0 in x_t. Shape of t."""
        return torch.exp(self._log_alpha(self._t(t, check)))

    def sigma(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """sigma(t), the std of the noise in x_t. Shape of t."""
        return torch.exp(self._log_sigma(self._t(t, check)))

    def log_snr(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """log(alpha(t)^2 / sigma(t)^2): +inf at t = 0 for VP and sub-VP, decreasing. Shape of t."""
        t = self._t(t, check)
        return 2 * (self._log_alpha(t) - self._log_sigma(t))

    def log_snr_range(self, t_eps: float) -> tuple[float, float]:
        """(log_snr(T), log_snr(t_eps)) as floats, computed once per t_eps (the second is +inf
        at t_eps = 0 for VP and sub-VP)."""
        if t_eps not in self._log_snr_ranges:
            ends = self.log_snr(torch.tensor([self.T, t_eps], dtype=torch.float64))
            self._log_snr_ranges[t_eps] = tuple(ends.tolist())
        return self._log_snr_ranges[t_eps]

    def t_from_log_snr(self, log_snr: float | Tensor, *, check: bool = True) -> Tensor:
        """The inverse of `log_snr`: the time t in [0, T] with log_snr(t) = log_snr. Shape kept.

        Raises:
            ValueError: log_snr lies outside [log_snr(T), log_snr(0)] (with check).
        """
        lam = torch.as_tensor(log_snr, dtype=None if isinstance(log_snr, Tensor)
                              else torch.get_default_dtype())
        if check:
            lo, hi = self.log_snr_range(0.0)
            slack = 1e-6 * (1 + abs(lo)), 1e-6 * (1 + abs(hi))
            if not bool(((lam >= lo - slack[0]) & (lam <= hi + slack[1])).all()):
                raise ValueError(f"log_snr must lie in [log_snr(T), log_snr(0)] = [{lo:.6g}, "
                                 f"{hi:.6g}], got values in [{lam.min().item():.6g}, "
                                 f"{lam.max().item():.6g}]")
        return self._t_from_log_snr(lam).clamp(0, self.T)

    def drift_coef(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """f(t) = d log alpha / dt, so that drift(x, t) = f(t) x. Shape of t."""
        return self._drift_coef(self._t(t, check))

    def diffusion(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """g(t). Shape of t."""
        return self._diffusion(self._t(t, check))

    def transition(self, s: float | Tensor, t: float | Tensor, *, check: bool = True
                   ) -> tuple[Tensor, Tensor]:
        """The forward transition x_t | x_s ~ N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s <= t:

            alpha_{t|s} = alpha_t / alpha_s,
            sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2 = -sigma_t^2 expm1(log_snr_t - log_snr_s),

        the second form free of the cancellation near s = t (docs/math.md).

        Returns:
            (alpha_{t|s}, sigma_{t|s}), of the broadcast shape of s and t.
        """
        t = self._t(t, check)
        s = time_tensor(s, self.T, like=t, check=check)
        return transition_from_logs(self._log_alpha(s), self._log_sigma(s), self._log_alpha(t),
                                    self._log_sigma(t))

    # -- vector fields on x of shape (B, *D) ----------------------------------------------------
    def drift(self, x: Tensor, t: float | Tensor, *, check: bool = True) -> Tensor:
        """Forward drift f(t) x. Returns (B, *D)."""
        t = batch_times(x, t, self.T, check=check)
        return append_dims(self._drift_coef(t), x.ndim) * x

    def marginal(self, x0: Tensor, t: float | Tensor, *, check: bool = True
                 ) -> tuple[Tensor, Tensor]:
        """Mean and std of p(x_t | x_0): (alpha(t) x0 of shape (B, *D), sigma(t) of shape (B,))."""
        t = batch_times(x0, t, self.T, check=check)
        return append_dims(torch.exp(self._log_alpha(t)), x0.ndim) * x0, torch.exp(self._log_sigma(t))

    def reverse_drift(self, x: Tensor, t: float | Tensor, score: Tensor, *,
                      check: bool = True) -> Tensor:
        """Drift of the reverse-time SDE, f(t) x - g(t)^2 score, in forward time. Returns (B, *D).

        Args:
            x: (B, *D) state.
            t: float or (B,) times.
            score: (B, *D) the value of grad log p_t at (x, t), e.g. score_fn(x, t).
            check: check t in [0, T] (one host sync).
        """
        return self._drift_minus_score(x, t, score, 1.0, check)

    def probability_flow_drift(self, x: Tensor, t: float | Tensor, score: Tensor, *,
                               check: bool = True) -> Tensor:
        """Velocity of the probability-flow ODE, f(t) x - g(t)^2 score / 2. Returns (B, *D)."""
        return self._drift_minus_score(x, t, score, 0.5, check)

    def _drift_minus_score(self, x: Tensor, t: float | Tensor, score: Tensor, weight: float,
                           check: bool) -> Tensor:
        """f(t) x - weight g(t)^2 score."""
        if score.shape != x.shape:
            raise ValueError(f"score must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(score.shape)}")
        t = batch_times(x, t, self.T, check=check)
        g2 = self._diffusion(t) ** 2
        return append_dims(self._drift_coef(t), x.ndim) * x - append_dims(weight * g2, x.ndim) * score

    # -- prior ----------------------------------------------------------------------------------
    def prior_sample(self, shape: tuple[int, ...] | torch.Size, *,
                     generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                     device: torch.device | str | None = None) -> Tensor:
        """A draw from the prior N(0, prior_std^2 I) of the given shape (B, *D)."""
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I) per sample: (B, *D) -> (B,)."""
        d = z[0].numel()
        sq = z.flatten(1).pow(2).sum(1)
        return -0.5 * d * math.log(2 * math.pi * self.prior_std**2) - sq / (2 * self.prior_std**2)

    # -- torchsde contract: (t, y) order, y of shape (B, d), t a 0-d tensor ---------------------
    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """torchsde drift: f(t) y, (B, d) (t unchecked: torchsde checks its times at entry)."""
        return self.drift(y, t, check=False)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """torchsde diagonal diffusion: g(t) broadcast to (B, d)."""
        t = time_tensor(t, self.T, like=y, check=False)
        return append_dims(self._diffusion(t), y.ndim).expand_as(y)
