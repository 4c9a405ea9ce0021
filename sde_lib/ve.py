"""The variance-exploding SDE (SMLD / NCSN in continuous time).

dx = sqrt(d sigma^2 / dt) dw with sigma(t) = sigma_min (sigma_max / sigma_min)^t, alpha = 1,
prior N(0, sigma_max^2 I). Convention (score_sde's): the marginal's std is sigma(t) itself, so the
model's t = 0 distribution is the data blurred by sigma_min; the SDE adds variance
sigma(t)^2 - sigma(s)^2 between s and t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib.base import SDE
from score_sde.sde_lib.tensors import check_number


class VESDE(SDE):
    """Variance-exploding SDE.

    Args:
        sigma_min: the noise std at t = 0 (> 0).
        sigma_max: the noise std at t = T (> sigma_min), about the largest distance between data.
        T: end time.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, T: float = 1.0):
        self.sigma_min = check_number("sigma_min", sigma_min)
        self.sigma_max = check_number("sigma_max", sigma_max, self.sigma_min)
        super().__init__(T, prior_std=self.sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return 0.0 * t  # not zeros_like: keeps alpha differentiable in t

    def _log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + (t / self.T) * self._log_ratio

    def _drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _diffusion(self, t: Tensor) -> Tensor:
        # d sigma^2 / dt = 2 sigma^2 log(sigma_max / sigma_min) / T
        return torch.exp(self._log_sigma(t)) * math.sqrt(2 * self._log_ratio / self.T)

    def _t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return (-0.5 * log_snr - math.log(self.sigma_min)) / self._log_ratio * self.T

    def t_from_sigma(self, sigma: float | Tensor) -> Tensor:
        """The time t with sigma(t) = sigma; sigma in [sigma_min, sigma_max]. Shape kept."""
        s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float64)
        return self.t_from_log_snr(-2 * torch.log(s))

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, T={self.T})"
