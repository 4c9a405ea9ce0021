"""The variance-preserving SDE (DDPM in continuous time) and the sub-VP SDE.

VP:     dx = -beta(t)/2 x dt + sqrt(beta(t)) dw,  alpha = exp(-B/2), sigma^2 = 1 - exp(-B)
sub-VP: dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2B))) dw,  alpha = exp(-B/2), sigma = 1 - exp(-B)
with B(t) = int_0^t beta(s) ds from a schedule (linear, cosine, or a discrete DDPM table: see
`VPSDE.from_alphas_cumprod`). Both have prior N(0, I).
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib.base import SDE
from score_sde.sde_lib.schedules import CosineSchedule, DiscreteSchedule, LinearSchedule
from score_sde.sde_lib.tensors import check_int

_SCHEDULES = ("linear", "cosine")


class VPSDE(SDE):
    """Variance-preserving SDE (Song et al. 2021), the continuous limit of DDPM.

    Args:
        beta_min: beta(0) of the linear schedule (DDPM: 0.1, i.e. 1e-4 per step of 1000).
        beta_max: beta(1) of the linear schedule (DDPM: 20, i.e. 0.02 per step of 1000).
        schedule: "linear", "cosine" (Nichol & Dhariwal; beta_min/beta_max are then unused), or a
            `DiscreteSchedule` (as `from_alphas_cumprod` builds it).
        cosine_s: the offset s of the cosine schedule.
        T: end time; default 1 for linear and discrete, 0.9946 for cosine (where its beta stays finite).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *,
                 schedule: str | DiscreteSchedule = "linear", cosine_s: float = 0.008,
                 T: float | None = None):
        if isinstance(schedule, DiscreteSchedule):
            self.schedule = schedule
            T = DiscreteSchedule.default_T if T is None else T
            if not (isinstance(T, (int, float)) and 0 < T <= 1):
                raise ValueError(f"T must lie in (0, 1] for a discrete schedule, got {T!r}")
        elif schedule == "linear":
            self.schedule = LinearSchedule(beta_min, beta_max)
            T = 1.0 if T is None else T
        elif schedule == "cosine":
            self.schedule = CosineSchedule(cosine_s)
            T = CosineSchedule.default_T if T is None else T
            if not (isinstance(T, (int, float)) and 0 < T < 1):
                raise ValueError(f"T must lie in (0, 1) for the cosine schedule, got {T!r}")
        else:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
        super().__init__(T, prior_std=1.0)

    @property
    def smooth_coefficients(self) -> bool:
        """False on a discrete table, whose beta is piecewise constant (see `SDE`)."""
        return not isinstance(self.schedule, DiscreteSchedule)

    # B(t) and the coefficients ----------------------------------------------------------------
    def beta(self, t: float | Tensor, *, check: bool = True) -> Tensor:
        """beta(t), the noise rate. Shape of t."""
        return self.schedule.beta(self._t(t, check))

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.integral(t)

    def _log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(-self.schedule.integral(t)))

    def _drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def _diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def _t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # log_snr = -log(expm1(B))  =>  B = softplus(-log_snr)
        return self.schedule.inverse_integral(torch.nn.functional.softplus(-log_snr))

    # DDPM's discrete betas ---------------------------------------------------------------------
    def discrete_betas(self, n: int) -> Tensor:
        """DDPM's betas b_1..b_n for n steps over [0, T], as their papers define them. (n,) float64.

        Linear: b_i = beta(t_i) T / n on t_i = linspace(0, T, n) (Ho et al.: beta_min 0.1 and
        beta_max 20 give linspace(1e-4, 0.02, 1000)); prod_{j<=i} (1 - b_j) = alpha(i T/n)^2 + O(1/n).
        Cosine: b_i = min(1 - alpha(i T/n)^2 / alpha((i-1) T/n)^2, 0.999) (Nichol & Dhariwal).
        """
        check_int("n (the number of DDPM steps)", n)
        if self.schedule.name == "linear":
            t = torch.linspace(0, self.T, n, dtype=torch.float64)
            return self.schedule.beta(t) * self.T / n
        t = torch.linspace(0, self.T, n + 1, dtype=torch.float64)
        log_abar = -self.schedule.integral(t)
        return (-torch.expm1(log_abar[1:] - log_abar[:-1])).clamp(max=0.999)

    @classmethod
    def from_discrete_betas(cls, betas: Tensor, **kwargs) -> VPSDE:
        """The linear-schedule VPSDE whose `discrete_betas(len(betas))` are `betas`.

        Raises:
            ValueError: betas are not increasing and linear (within 1e-6 relative), or not in (0, 1).
        """
        b = torch.as_tensor(betas, dtype=torch.float64)
        n = b.numel()
        if b.ndim != 1 or n < 2:
            raise ValueError(f"betas must be a 1-D sequence of at least 2 values, got shape "
                             f"{tuple(b.shape)}")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        linear = torch.linspace(b[0].item(), b[-1].item(), n, dtype=torch.float64)
        if not torch.allclose(b, linear, rtol=1e-6, atol=0) or not b[-1] > b[0]:
            raise ValueError("betas must be increasing and linear (DDPM's linspace schedule); "
                             "other schedules have no continuous linear VPSDE")
        return cls(beta_min=b[0].item() * n, beta_max=b[-1].item() * n, **kwargs)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, *, T: float | None = None) -> VPSDE:
        """The SDE of a discrete DDPM table (e.g. a diffusers scheduler's `alphas_cumprod`), exactly:
        alpha(t_k)^2 = alphas_cumprod[k] at t_k = (k + 1) / N, log alpha piecewise linear in t
        between (see `DiscreteSchedule`); a discrete model's network takes the timestep N t - 1.

        Args:
            alphas_cumprod: (N,) strictly decreasing, in (0, 1).
            T: end time in (0, 1]; default 1 (= t_{N-1}).
        """
        return cls(schedule=DiscreteSchedule(alphas_cumprod), T=T)

    @classmethod
    def from_betas(cls, betas: Tensor, *, T: float | None = None) -> VPSDE:
        """`from_alphas_cumprod` of cumprod(1 - betas), in float64: DDPM's betas b_0..b_{N-1} of any
        schedule (e.g. `sde_lib.beta_table`), exactly. (`from_discrete_betas` instead fits the
        continuous linear schedule to linear betas.)"""
        b = torch.as_tensor(betas).detach().to("cpu", torch.float64)
        return cls.from_alphas_cumprod(torch.cumprod(1 - b, dim=0), T=T)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schedule!r}, T={self.T})"


class SubVPSDE(VPSDE):
    """sub-VP SDE (Song et al. 2021): VP's drift, a smaller diffusion, sigma(t) = 1 - exp(-B(t)).

    Its variance is at most the VP's at every t; same arguments as `VPSDE`.
    """

    def _log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(-self.schedule.integral(t)))

    def _diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(-2 * self.schedule.integral(t)))

    def _t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # with a = exp(-B): a / (1 - a)^2 = exp(log_snr); the root a < 1 gives, for u = exp(-log_snr),
        # B = -log a = log1p((u + sqrt(u^2 + 4u)) / 2), written so that neither end overflows.
        u = torch.exp(-log_snr)
        b = torch.log1p(0.5 * (u + torch.sqrt(u) * torch.sqrt(u + 4)))
        return self.schedule.inverse_integral(b)
