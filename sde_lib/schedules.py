"""Noise-rate schedules beta(t) of the VP family, with B(t) = int_0^t beta(s) ds and its inverse.

A schedule is all the VP and sub-VP SDEs need: alpha(t) = exp(-B(t)/2) and
g(t)^2 = beta(t) (VP) or beta(t) (1 - exp(-2 B(t))) (sub-VP).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class LinearSchedule:
    """beta(t) = beta_min + t (beta_max - beta_min): DDPM's linear betas in continuous time (Ho et al.)."""

    name = "linear"

    def __init__(self, beta_min: float, beta_max: float):
        if not beta_min > 0:
            raise ValueError(f"beta_min must be > 0, got {beta_min}")
        if not beta_max > beta_min:
            raise ValueError(f"beta_max must be > beta_min = {beta_min}, got {beta_max}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = beta_min t + (beta_max - beta_min) t^2 / 2."""
        return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))

    def inverse_integral(self, b: Tensor) -> Tensor:
        """The t >= 0 with B(t) = b, by the stable root of the quadratic."""
        slope = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * b))

    def __repr__(self) -> str:
        return f"LinearSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class CosineSchedule:
    """Nichol & Dhariwal's cosine schedule: alpha(t)^2 = cos^2(phi(t)) / cos^2(phi(0)),
    phi(t) = (t + s) / (1 + s) * pi / 2.

    beta(t) = pi / (1 + s) tan(phi(t)) diverges at t = 1, so SDEs on this schedule stop at
    T = 0.9946 by default (as DPM-Solver does), where alpha^2 ~ 7e-5 and beta ~ 370.
    """

    name = "cosine"
    default_T = 0.9946

    def __init__(self, s: float = 0.008):
        if not s > 0:
            raise ValueError(f"cosine_s must be > 0, got {s}")
        self.s = float(s)
        self._log_cos_phi0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def _phi(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def beta(self, t: Tensor) -> Tensor:
        return math.pi / (1 + self.s) * torch.tan(self._phi(t))

    def integral(self, t: Tensor) -> Tensor:
        """B(t) = -2 log(cos(phi(t)) / cos(phi(0))), clamped at 0 (rounding gives -3e-20 at t = 0,
        and sigma(0) = sqrt(-expm1(-B)) would be nan)."""
        return (-2 * (torch.log(torch.cos(self._phi(t))) - self._log_cos_phi0)).clamp(min=0)

    def inverse_integral(self, b: Tensor) -> Tensor:
        phi = torch.arccos(torch.exp(self._log_cos_phi0 - b / 2))
        return phi * (2 / math.pi) * (1 + self.s) - self.s

    def __repr__(self) -> str:
        return f"CosineSchedule(s={self.s})"
