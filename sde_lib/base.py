"""The abstract linear (affine-drift) SDE dx = f(t) x dt + g(t) dw and what follows from it.

Legend (docs/math.md):
    alpha(t), sigma(t)  the marginal x_t = alpha(t) x_0 + sigma(t) z, z ~ N(0, I)
    f(t) = d log alpha / dt, the drift coefficient: drift(x, t) = f(t) x
    g(t)                the diffusion coefficient
    log_snr(t)          log(alpha^2 / sigma^2), strictly decreasing in t
Reverse-time SDE: dx = [f x - g^2 score] dt + g dw_bar. Probability-flow ODE: dx/dt = f x - g^2 score / 2.

Times are floats or (B,) tensors; x is (B, *D). Coefficient methods return a tensor of t's shape
(0-d for a float) and validate t in [0, T].
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from score_sde.sde_lib._shapes import append_dims, as_time, time_for


class SDE(abc.ABC):
    """A linear SDE on [0, T] with a Gaussian prior N(0, prior_std^2 I).

    Subclasses implement `_log_alpha`, `_log_sigma`, `_drift_coef`, `_diffusion`, `_t_from_log_snr`
    on validated tensors; the public methods validate and broadcast.

    It also satisfies torchsde's contract (`f`, `g`, `noise_type`, `sde_type`), so
    `torchsde.sdeint(sde, x0, ts)` simulates the forward SDE of a (B, d) state directly.
    """

    noise_type = "diagonal"
    sde_type = "ito"
    #: f(t) and g(t) are continuous in t. False for a discrete schedule, whose beta jumps at its
    #: knots: adaptive ODE solvers then integrate in log-SNR time (`solvers.clock`).
    smooth_coefficients = True

    def __init__(self, T: float, prior_std: float):
        if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite number > 0, got {T!r}")
        self.T = float(T)
        self.prior_std = float(prior_std)

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
    def _t(self, t: float | Tensor) -> Tensor:
        return as_time(t, self.T)

    def alpha(self, t: float | Tensor) -> Tensor:
        """alpha(t), the scale of x_0 in x_t. Shape of t."""
        return torch.exp(self._log_alpha(self._t(t)))

    def sigma(self, t: float | Tensor) -> Tensor:
        """sigma(t), the std of the noise in x_t. Shape of t."""
        return torch.exp(self._log_sigma(self._t(t)))

    def log_snr(self, t: float | Tensor) -> Tensor:
        """log(alpha(t)^2 / sigma(t)^2): +inf at t = 0 for VP and sub-VP, decreasing. Shape of t."""
        t = self._t(t)
        return 2 * (self._log_alpha(t) - self._log_sigma(t))

    def t_from_log_snr(self, log_snr: float | Tensor) -> Tensor:
        """The inverse of `log_snr`: the time t in [0, T] with log_snr(t) = log_snr. Shape kept.

        Raises:
            ValueError: log_snr lies outside [log_snr(T), log_snr(0)].
        """
        lam = torch.as_tensor(log_snr, dtype=None if isinstance(log_snr, Tensor)
                              else torch.get_default_dtype())
        t_ends = torch.tensor([self.T, 0.0], dtype=torch.float64)
        lo, hi = (2 * (self._log_alpha(t_ends) - self._log_sigma(t_ends))).tolist()
        slack = 1e-6 * (1 + abs(lo)), 1e-6 * (1 + abs(hi))
        if bool(torch.isnan(lam).any()) or bool((lam < lo - slack[0]).any()) or bool(
                (lam > hi + slack[1]).any()):
            raise ValueError(f"log_snr must lie in [log_snr(T), log_snr(0)] = [{lo:.6g}, {hi:.6g}],"
                             f" got values in [{lam.min().item():.6g}, {lam.max().item():.6g}]")
        return self._t_from_log_snr(lam).clamp(0, self.T)

    def drift_coef(self, t: float | Tensor) -> Tensor:
        """f(t) = d log alpha / dt, so that drift(x, t) = f(t) x. Shape of t."""
        return self._drift_coef(self._t(t))

    def diffusion(self, t: float | Tensor) -> Tensor:
        """g(t). Shape of t."""
        return self._diffusion(self._t(t))

    # -- vector fields on x of shape (B, *D) ----------------------------------------------------
    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Forward drift f(t) x. Returns (B, *D)."""
        return append_dims(self._drift_coef(time_for(x, t, self.T)), x.ndim) * x

    def marginal(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of p(x_t | x_0): (alpha(t) x0 of shape (B, *D), sigma(t) of shape (B,))."""
        t = time_for(x0, t, self.T)
        return append_dims(torch.exp(self._log_alpha(t)), x0.ndim) * x0, torch.exp(self._log_sigma(t))

    def reverse_drift(self, x: Tensor, t: float | Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE, f(t) x - g(t)^2 score, in forward time. Returns (B, *D).

        Args:
            x: (B, *D) state.
            t: float or (B,) times.
            score: (B, *D) the value of grad log p_t at (x, t), e.g. score_fn(x, t).
        """
        t = self._check_score(x, t, score)
        g2 = self._diffusion(t) ** 2
        return append_dims(self._drift_coef(t), x.ndim) * x - append_dims(g2, x.ndim) * score

    def probability_flow_drift(self, x: Tensor, t: float | Tensor, score: Tensor) -> Tensor:
        """Velocity of the probability-flow ODE, f(t) x - g(t)^2 score / 2. Returns (B, *D)."""
        t = self._check_score(x, t, score)
        g2 = self._diffusion(t) ** 2
        return append_dims(self._drift_coef(t), x.ndim) * x - append_dims(0.5 * g2, x.ndim) * score

    def _check_score(self, x: Tensor, t: float | Tensor, score: Tensor) -> Tensor:
        if score.shape != x.shape:
            raise ValueError(f"score must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(score.shape)}")
        return time_for(x, t, self.T)

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
        """torchsde drift: f(t) y, (B, d)."""
        return self.drift(y, t)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """torchsde diagonal diffusion: g(t) broadcast to (B, d)."""
        return append_dims(self._diffusion(as_time(t, self.T, like=y)), y.ndim).expand_as(y)
