"""Log-SNR time for adaptive ODE solves on SDEs whose coefficients jump in t.

A discrete-schedule SDE (`VPSDE.from_alphas_cumprod`) has a piecewise-constant beta(t): the
probability-flow velocity v(x, t) jumps at each of the table's N knots, and an adaptive solver in t
either crawls across every knot or accepts an error at each one, N errors of one sign that add up
(on a 1000-step DDPM table: thousands of NFE and 1e-2 nats off the exact likelihood). In
u = log_snr(t) the velocity is (dt/du) v with dt/du = -sigma(t)^2 / g(t)^2; on VP
(dt/du) v = sigma^2 / 2 (x + score): the jumps of beta cancel, and the field depends on the schedule
only through the time the score is asked at. `SDE.smooth_coefficients` says which SDEs need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from score_sde.sde_lib import SDE

State = TypeVar("State", Tensor, tuple[Tensor, ...])


class LogSNRClock:
    """The change of variable t -> u = log_snr(t) on [t_lo, t_hi] for torchdiffeq.

    Args:
        sde: the SDE whose log-SNR is the clock.
        t_lo, t_hi: the time span of the solve, 0 <= t_lo < t_hi <= T.

    Raises:
        ValueError: log_snr(t_lo) is infinite (t_lo = 0 on VP): the clock cannot start there.
    """

    def __init__(self, sde: SDE, t_lo: float, t_hi: float):
        ends = sde.log_snr(torch.tensor([t_hi, t_lo], dtype=torch.float64)).tolist()
        if not all(map(math.isfinite, ends)):
            raise ValueError(f"t_eps must be > 0 here, got {t_lo!r}: {type(sde).__name__}'s "
                             "coefficients jump in t, so adaptive solves run in log-SNR time, which "
                             "is infinite at t = 0")
        self.sde, self.t_lo, self.t_hi, self.u_lo, self.u_hi = sde, t_lo, t_hi, ends[0], ends[1]

    def u(self, ts: Tensor) -> Tensor:
        """The clock times of the times ts, same shape, dtype and device."""
        return self.sde.log_snr(ts)

    def field(self, f: Callable[[Tensor, State], State]) -> Callable[[Tensor, State], State]:
        """f(t, state) -> d state / dt turned into d state / du, a function of (u, state)."""

        def in_u(u: Tensor, state: State) -> State:
            u = u.clamp(self.u_lo, self.u_hi)
            t = self.sde.t_from_log_snr(u, check=False).clamp(self.t_lo, self.t_hi)
            dt_du = -(self.sde.sigma(t, check=False) / self.sde.diffusion(t, check=False)) ** 2
            out = f(t, state)
            return tuple(dt_du * o for o in out) if isinstance(out, tuple) else dt_du * out

        return in_u
