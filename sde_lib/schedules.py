"""Noise-rate schedules beta(t) of the VP family, with B(t) = int_0^t beta(s) ds and its inverse.

A schedule is all the VP and sub-VP SDEs need: alpha(t) = exp(-B(t)/2) and
g(t)^2 = beta(t) (VP) or beta(t) (1 - exp(-2 B(t))) (sub-VP).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib.tensors import check_number


class LinearSchedule:
    """beta(t) = beta_min + t (beta_max - beta_min): DDPM's linear betas in continuous time (Ho et al.)."""

    name = "linear"

    def __init__(self, beta_min: float, beta_max: float):
        self.beta_min = check_number("beta_min", beta_min)
        self.beta_max = check_number("beta_max", beta_max, self.beta_min)

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
        self.s = check_number("cosine_s", s)
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


class DiscreteSchedule:
    """A table of N cumulative alphas abar_0 > ... > abar_{N-1} (DDPM's `alphas_cumprod`) as a schedule
    on [0, 1], in the time convention of DPM-Solver's discrete schedule: DDPM step k (diffusers'
    timestep k) sits at t_k = (k + 1) / N, so a discrete model's network takes the timestep N t - 1.

    B(t) = -log alpha(t)^2 is piecewise linear in t through the knots B(0) = 0 and
    B(t_k) = -log abar_k, so alpha(t_k)^2 = abar_k to float64 rounding; beta(t) = B'(t) is piecewise
    constant, N (B(t_k) - B(t_{k-1})) on (t_{k-1}, t_k] (left-continuous: at t_k it is DDPM's step k,
    -N log(1 - betas[k])). The inverse of B is piecewise linear too.

    Args:
        alphas_cumprod: (N,) the table, strictly decreasing, in (0, 1); N >= 2.
    """

    name = "discrete"
    default_T = 1.0

    def __init__(self, alphas_cumprod: Tensor):
        abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if abar.ndim != 1 or abar.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D table of at least 2 values, got shape "
                             f"{tuple(abar.shape)}")
        if not bool(((abar > 0) & (abar < 1)).all()):
            raise ValueError(f"alphas_cumprod must lie in (0, 1), got values in [{abar.min().item():.6g}, "
                             f"{abar.max().item():.6g}] (a zero-terminal-SNR table has no Gaussian prior: "
                             "cut its last step)")
        if not bool((abar[1:] < abar[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (every beta > 0)")
        self.num_steps = n = abar.numel()
        self.knots = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log(abar)])  # B(k / N)
        self.slopes = n * torch.diff(self.knots)  # beta on each segment, in float64 before any cast
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _tables_like(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(knots, slopes) in v's dtype and on its device, cast once per (device, dtype)."""
        key = (v.device, v.dtype)
        if key not in self._tables:
            self._tables[key] = (self.knots.to(device=v.device, dtype=v.dtype),
                                 self.slopes.to(device=v.device, dtype=v.dtype))
        return self._tables[key]

    def _segment(self, t: Tensor) -> Tensor:
        """The segment k of each t: (k / N, (k + 1) / N], k in [0, N - 1]."""
        return (torch.ceil(t.detach() * self.num_steps) - 1).clamp(0, self.num_steps - 1).long()

    def beta(self, t: Tensor) -> Tensor:
        return self._tables_like(t)[1][self._segment(t)]

    def integral(self, t: Tensor) -> Tensor:
        """B(t), linear between the knots (exact at both ends of a segment)."""
        knots, k = self._tables_like(t)[0], self._segment(t)
        return torch.lerp(knots[k], knots[k + 1], t * self.num_steps - k)

    def inverse_integral(self, b: Tensor) -> Tensor:
        """The t with B(t) = b, linear between the knots (b beyond B(1) extrapolates the last segment)."""
        knots = self._tables_like(b)[0]
        j = torch.searchsorted(knots, b.detach().contiguous()).clamp(1, self.num_steps)
        lo, hi = knots[j - 1], knots[j]
        return (j - 1 + (b - lo) / (hi - lo)) / self.num_steps

    def __repr__(self) -> str:
        return f"DiscreteSchedule(N={self.num_steps})"


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def beta_table(beta_schedule: str, num_steps: int = 1000, *, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> Tensor:
    """DDPM's betas b_0..b_{N-1} as diffusers' schedulers build them, for `VPSDE.from_betas`.

    "linear": linspace(beta_start, beta_end, N) (Ho et al.); "scaled_linear":
    linspace(sqrt(beta_start), sqrt(beta_end), N)^2 (latent diffusion); "squaredcos_cap_v2":
    b_i = min(1 - f((i + 1) / N) / f(i / N), 0.999), f(t) = cos((t + 0.008) / 1.008 pi / 2)^2
    (Nichol & Dhariwal). Computed in float32, as diffusers does, so the values equal a diffusers
    scheduler's `betas` bit for bit.

    Returns:
        (N,) float64.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    f32 = torch.float32
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=f32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=f32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - f((i + 1) / num_steps) / f(i / num_steps), 0.999)
                              for i in range(num_steps)], dtype=f32)
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    return betas.to(torch.float64)
