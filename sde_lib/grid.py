"""The SDE on a time grid: its coefficients at every grid time and the forward transition of every
step, checked once and evaluated once in float64, for the loops of the samplers.

A grid ts is strictly decreasing, ts[0] > ts[1] > ... > ts[N], all in [0, T]; step i goes from
t = ts[i] down to s = ts[i + 1]. Tables (float64, CPU):

    per time, (N + 1,)  alpha, sigma, log_snr, lam = log_snr / 2 (the time of the exponential
                        integrators; +inf where sigma = 0), f, g2 = g^2
    per step, (N,)      h = t - s; kernel_scale = alpha_{t|s} and kernel_std = sigma_{t|s} of the
                        forward transition x_t | x_s (`SDE.transition`); kernel_fraction =
                        sigma_{t|s}^2 / sigma_t^2 in (0, 1], the share of x_t's noise variance
                        added during the step

and `x0_from_score`, Tweedie's denoiser at a grid time. Nothing here runs per sampler step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib.base import SDE, transition_from_logs, x0_from_score


def check_sde(sde: SDE) -> SDE:
    """sde itself if it is an `sde_lib.SDE`, else a ValueError."""
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an sde_lib.SDE (VPSDE, SubVPSDE, VESDE, ...), got "
                         f"{type(sde).__name__}")
    return sde


class SDEGrid:
    """An SDE evaluated on a decreasing grid of times (module docstring).

    Args:
        sde: the SDE.
        ts: (N + 1,) the grid, N >= 1; any float tensor or sequence, kept as a float64 CPU copy.

    Attributes:
        sde, ts: the SDE and the grid (float64, CPU).
        times: the grid as Python floats (for callbacks and messages).
        alpha, sigma, log_snr, lam, f, g2: (N + 1,) per grid time.
        h, kernel_scale, kernel_std, kernel_fraction: (N,) per step.

    Raises:
        ValueError: sde is not an `sde_lib.SDE`, or ts is not a strictly decreasing 1-D grid of at
            least 2 finite times in [0, T].
    """

    def __init__(self, sde: SDE, ts: Tensor):
        check_sde(sde)
        ts = torch.as_tensor(ts).detach().to("cpu", torch.float64).clone()
        if ts.ndim != 1 or ts.numel() < 2:
            raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape "
                             f"{tuple(ts.shape)}")
        if not bool(torch.isfinite(ts).all()):
            raise ValueError("ts must be finite")
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError(f"ts must be strictly decreasing (T down to t_eps), got "
                             f"{ts.tolist()[:6]}" + ("..." if ts.numel() > 6 else ""))
        if ts[0].item() > sde.T or ts[-1].item() < 0:
            raise ValueError(f"ts must lie in [0, T] = [0, {sde.T}], got [{ts[-1].item():.6g}, "
                             f"{ts[0].item():.6g}]")
        self.sde, self.ts, self.times = sde, ts, ts.tolist()
        log_alpha, log_sigma = sde._log_alpha(ts), sde._log_sigma(ts)  # ts checked above
        self.alpha, self.sigma = torch.exp(log_alpha), torch.exp(log_sigma)
        self.lam = log_alpha - log_sigma
        self.log_snr = 2 * self.lam
        self.f, self.g2 = sde._drift_coef(ts), sde._diffusion(ts) ** 2
        self.h = ts[:-1] - ts[1:]
        self.kernel_scale, self.kernel_std = transition_from_logs(
            log_alpha[1:], log_sigma[1:], log_alpha[:-1], log_sigma[:-1])
        self.kernel_fraction = (self.kernel_std / self.sigma[:-1]) ** 2
        self._floats: dict[str, list[float]] = {}

    @property
    def steps(self) -> int:
        """N, the number of steps."""
        return len(self.times) - 1

    def times_like(self, x: Tensor) -> Tensor:
        """The grid (N + 1,) in x's dtype and on its device: index it in a loop, no copy per step."""
        return self.ts.to(device=x.device, dtype=x.dtype)

    def floats(self, table: str) -> list[float]:
        """The table named `table` ("alpha", "kernel_std", ...) as Python floats, converted once:
        what a loop multiplies tensors by, without a host sync per step."""
        if table not in self._floats:
            self._floats[table] = getattr(self, table).tolist()
        return self._floats[table]

    def x0_from_score(self, x: Tensor, score: Tensor, i: int) -> Tensor:
        """Tweedie's denoiser E[x_0 | x_{t_i} = x] from the score at grid time ts[i]. (B, *D)."""
        return x0_from_score(x, score, self.floats("alpha")[i], self.floats("sigma")[i])

    def __repr__(self) -> str:
        return f"SDEGrid({self.sde!r}, {self.steps} steps from {self.times[0]:.6g} to {self.times[-1]:.6g})"
