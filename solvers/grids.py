"""Time grids for samplers: decreasing float64 tensors from T down to the last time.

A grid is a 1-D tensor ts with ts[0] > ts[1] > ... > ts[-1], all in [0, T]; a sampler takes
len(ts) - 1 steps over it. Grids are plain functions of the SDE (never stored on it):

    uniform          uniform in t (Song et al.)
    quadratic        t_eps + (T - t_eps) (i / steps)^2, dense near the data (DDIM's "quadratic")
    log_snr_uniform  uniform in log(alpha^2 / sigma^2), through sde.t_from_log_snr
    log_snr_window   uniform in log-SNR inside a window, longer steps into it and out (few steps)
    from_log_snr     the times of given log-SNRs, with exact ends (for grids built in log-SNR)
    karras           EDM's rho-schedule in sigma / alpha (Karras et al. 2022)
    ddpm_subsequence a sub-sequence of the N discrete DDPM steps, step k at time k T / N, then 0

`resolve_grid` turns a sampler's grid settings into a checked `sde_lib.SDEGrid`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, SDEGrid, check_int, check_sde, check_t_eps

SPACINGS = ("leading", "trailing", "linspace")


def check_steps(steps: int) -> None:
    """Raise a ValueError unless steps is an int >= 1."""
    check_int("steps", steps)


def uniform(sde: SDE, steps: int, *, t_eps: float = 1e-3) -> Tensor:
    """steps + 1 times uniform in t from T to t_eps. Returns (steps + 1,) float64."""
    check_steps(steps)
    check_t_eps(sde, t_eps)
    return torch.linspace(sde.T, t_eps, steps + 1, dtype=torch.float64)


def quadratic(sde: SDE, steps: int, *, t_eps: float = 1e-3) -> Tensor:
    """steps + 1 times t_eps + (T - t_eps) (i / steps)^2, i = steps..0. Returns (steps + 1,) float64."""
    check_steps(steps)
    check_t_eps(sde, t_eps)
    u = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return t_eps + (sde.T - t_eps) * u**2


def log_snr_ends(sde: SDE, t_eps: float) -> tuple[float, float]:
    """(log_snr(T), log_snr(t_eps)); ValueError unless both are finite (t_eps > 0 on VP)."""
    ends = sde.log_snr_range(t_eps)
    if not all(map(math.isfinite, ends)):
        raise ValueError(f"t_eps must give a finite log-SNR for a log-SNR grid, got {t_eps!r}")
    return ends


def log_snr_uniform(sde: SDE, steps: int, *, t_eps: float = 1e-3) -> Tensor:
    """steps + 1 times uniform in log-SNR between log_snr(T) and log_snr(t_eps).

    Needs a finite log_snr(t_eps) (t_eps > 0 for VP and sub-VP). Returns (steps + 1,) float64.
    """
    check_steps(steps)
    check_t_eps(sde, t_eps)
    ends = log_snr_ends(sde, t_eps)
    return from_log_snr(sde, torch.linspace(ends[0], ends[1], steps + 1, dtype=torch.float64), t_eps)


def from_log_snr(sde: SDE, log_snr: Tensor, t_eps: float) -> Tensor:
    """The times of the decreasing-time grid with these log-SNRs (N + 1,), log_snr[0] at T and
    log_snr[-1] at t_eps; the ends are set exactly, free of the round trip's rounding."""
    ts = sde.t_from_log_snr(log_snr)
    ts[0], ts[-1] = sde.T, t_eps
    return ts


def log_snr_window(sde: SDE, steps: int, *, t_eps: float = 1e-3, lo: float = -3.0,
                   hi: float | None = None, stretch: float = 3.0) -> Tensor:
    """Uniform in lambda = log(alpha / sigma) (half the log-SNR) on the window [lo, hi], with longer
    steps in the head [lambda(T), lo] and the tail [hi, lambda(t_eps)]: for few steps (5-20), where
    a plain log-SNR grid spends most of them in the tails. The tails are where x0_hat barely moves
    for data of unit scale (alpha / sigma < e^-3: x0_hat is about the data mean; alpha / sigma > e^hi:
    about x / alpha), so long exponential-integrator steps are accurate there. hi defaults to
    1 + log2(steps / 5) (1, 2, 3 at 5, 10, 20 steps): the window widens with the budget (on VP with
    t_eps = 1e-3 it reaches t_eps at about 45 steps). For data far from unit scale, shift lo and hi
    by -log(scale).

    The head and the tail are uniform too, with steps about `stretch` times the window's: a segment
    of length L outside the window gets max(1, round(steps * (L / stretch) / M)) steps, M = the
    window's length + the head's and the tail's lengths / stretch; the window gets the rest. At few
    steps that is one step into the window and one out of it; with more, the head is refined in
    proportion to the budget (on VP, t_eps = 1e-3: 1, 1, 2, 4 head steps at 5, 10, 20, 50), so the
    high-noise stretch where samples pick their mode is never crossed in one long step.
    `stretch=math.inf` keeps one step in each at every budget.

    Returns:
        (steps + 1,) float64 times from T to t_eps; the window is clipped to [lambda(T), lambda(t_eps)].
        With too few steps for a window (steps < 3 with a head and a tail) it is `log_snr_uniform`,
        as it is when the window lies outside [lambda(T), lambda(t_eps)].

    Raises:
        ValueError: lo >= hi, stretch < 1 (or not a number), or bad steps / t_eps.
    """
    check_steps(steps)
    check_t_eps(sde, t_eps)
    hi = 1.0 + math.log2(steps / 5) if hi is None else hi
    if not lo < hi:
        raise ValueError(f"the window must have lo < hi, got lo={lo!r}, hi={hi!r}")
    if isinstance(stretch, bool) or not (isinstance(stretch, (int, float)) and stretch >= 1):
        raise ValueError(f"stretch must be a number >= 1 (outer steps / window steps), got {stretch!r}")
    ends = [0.5 * v for v in log_snr_ends(sde, t_eps)]
    a, b = max(lo, ends[0]), min(hi, ends[1])
    outer = [a - ends[0], ends[1] - b]  # the head's and the tail's lengths (0: none)
    if a >= b or steps < 1 + sum(w > 0 for w in outer):
        return log_snr_uniform(sde, steps, t_eps=t_eps)
    share = steps / (b - a + sum(outer) / stretch)
    n_head, n_tail = (max(1, math.floor(share * w / stretch + 0.5)) if w > 0 else 0 for w in outer)
    n_head = min(n_head, steps - 1 - (n_tail > 0))  # leave the window a step, and the tail one
    n_tail = min(n_tail, steps - 1 - n_head)
    n_window = steps - n_head - n_tail
    lam = torch.cat([torch.linspace(ends[0], a, n_head + 1, dtype=torch.float64)[:-1],
                     torch.linspace(a, b, n_window + 1, dtype=torch.float64),
                     torch.linspace(b, ends[1], n_tail + 1, dtype=torch.float64)[1:]])
    return from_log_snr(sde, 2 * lam, t_eps)


def karras(sde: SDE, steps: int, *, t_eps: float = 1e-3, rho: float = 7.0) -> Tensor:
    """EDM's grid: rho_i = (rho_max^(1/r) + i/N (rho_min^(1/r) - rho_max^(1/r)))^r, i = 0..N, with
    rho = sigma / alpha between its values at T and t_eps, mapped back to times. (N + 1,) float64."""
    check_steps(steps)
    if not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be > 0, got {rho!r}")
    if not (isinstance(t_eps, (int, float)) and 0 < t_eps < sde.T):
        raise ValueError(f"t_eps must lie in (0, T) = (0, {sde.T}) for the Karras grid, got {t_eps!r}")
    ends = torch.exp(-0.5 * sde.log_snr(torch.tensor([sde.T, t_eps], dtype=torch.float64)))
    i = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    r = (ends[0] ** (1 / rho) + i * (ends[1] ** (1 / rho) - ends[0] ** (1 / rho))) ** rho
    return from_log_snr(sde, -2 * torch.log(r), t_eps)


def ddpm_subsequence(sde: SDE, steps: int, *, num_train_steps: int = 1000,
                     spacing: str = "leading") -> Tensor:
    """A sub-sequence of a DDPM's N = num_train_steps discrete steps, as DDIM samples it.

    DDPM step k = 1..N (diffusers' timestep k - 1) sits at time k T / N, so its alpha_bar is
    alpha(k T / N)^2. The grid visits `steps` of them, decreasing, then ends at t = 0 (x_0; diffusers'
    `set_alpha_to_one=True`). `steps = N` gives the full DDPM grid N T/N, ..., T/N, 0.

    Args:
        sde: the SDE whose [0, T] the N steps divide.
        steps: how many DDPM steps to visit, 1..N.
        num_train_steps: N.
        spacing: as in diffusers: "leading" (k = 1 + i N // steps), "trailing"
            (k = round(N - i N / steps)), or "linspace" (k = 1 + round(linspace(0, N - 1, steps))).

    Returns:
        (steps + 1,) float64 times, decreasing, the last one 0.
    """
    check_steps(num_train_steps)
    check_steps(steps)
    n = num_train_steps
    if steps > n:
        raise ValueError(f"steps must be <= num_train_steps = {n}, got {steps}")
    if spacing == "leading":
        k = torch.arange(steps, dtype=torch.float64) * (n // steps) + 1
    elif spacing == "trailing":
        k = torch.round(torch.arange(n, 0, -n / steps, dtype=torch.float64)).flip(0)
    elif spacing == "linspace":
        k = torch.round(torch.linspace(0, n - 1, steps, dtype=torch.float64)) + 1
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return torch.cat([k.flip(0) * (sde.T / n), torch.zeros(1, dtype=torch.float64)])


GRIDS: dict[str, Callable[..., Tensor]] = {
    "uniform": uniform, "quadratic": quadratic, "log_snr": log_snr_uniform,
    "log_snr_window": log_snr_window, "karras": karras,
}


def resolve_grid(sde: SDE, *, ts: Tensor | None, steps: int, t_eps: float, grid: str
                 ) -> SDEGrid:
    """The SDE on the grid a sampler uses: `ts` if given, else GRIDS[grid](sde, steps, t_eps=t_eps).

    Raises:
        ValueError: sde is not an SDE, an unknown grid name, bad steps or t_eps, or a bad ts.
    """
    check_sde(sde)
    if ts is None:
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {tuple(GRIDS)}, got {grid!r}")
        ts = GRIDS[grid](sde, steps, t_eps=t_eps)
    return SDEGrid(sde, ts)
