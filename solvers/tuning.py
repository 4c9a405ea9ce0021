"""Time grids tuned to one score model from a pilot batch: where the steps go decides most of a
few-step sampler's error, and the best place depends on the data, not only on the SDE.

`tune_grid` solves the probability-flow ODE tightly (dopri5) from a pilot batch of prior draws, then
    1. equidistributes the local error: a method of order p makes an error of about
       h^(p+1) |d^p x0_hat / d lambda^p| in a step of length h in lambda = log(alpha / sigma), so
       the steps that minimise the sum for a fixed count have density
       rho(lambda) ~ RMS_pilot |d^p x0_hat / d lambda^p|^(1 / (p + 1)) (plus a floor, `floor`
       times its mean, so that no stretch goes without steps); the derivative is taken by finite
       differences of x0_hat along the reference paths on a fine log-SNR grid;
    2. keeps, of that grid, `log_snr_window` and `log_snr`, the one with the smallest pilot error;
    3. optionally (`search_evals` > 0) moves the interior log-SNRs to minimise the RMS error on 3/4
       of the pilot against the reference end points by Powell's derivative-free search (scipy),
       over the log-lengths of the steps (so the grid stays ordered and keeps its ends), and keeps
       the result only if it is no worse than step 2's grid on the other quarter. With
       `shift=True` the search also moves the times the model is asked at, one per step, off the
       grid (`eval_ts`, lambda'_i = lambda_i + delta_i; Tong et al. 2025, "LD3"): the model then
       answers for a slightly different noise level, which can cancel part of a long step's
       error (dpm_solver_multistep takes them).
The pilot error is the RMS over the pilot of ||x - x_ref|| / sqrt(D), the sampler's x against the
reference solution's. Step 3 fits the pilot (the held-out quarter guards against the worst of it):
use a pilot of about 1000+ draws and judge the grid on other draws.
Related: Chen et al. 2024 ("GITS", dynamic programming on a pilot trajectory), Sabour et al. 2024
("Align Your Steps"); error equidistribution is the classical mesh-design rule for ODE solvers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, check_int, check_t_eps
from score_sde.solvers import grids
from score_sde.solvers.exponential import dpm_solver_multistep
from score_sde.solvers.ode import probability_flow
from score_sde.solvers.result import SampleResult

Sampler = Callable[..., SampleResult]


@dataclass
class TunedGrid:
    """What `tune_grid` found: call the sampler with `**tuned.kwargs`.

    Attributes:
        ts: (N + 1,) float64 decreasing times from T to t_eps.
        eval_ts: (N,) float64 times the model is asked at (shift=True), else None.
        pilot_error: the sampler's RMS error on the whole pilot on this grid.
    """

    ts: Tensor
    eval_ts: Tensor | None
    pilot_error: float

    @property
    def kwargs(self) -> dict[str, Tensor]:
        """{"ts": ts} and, if set, {"eval_ts": eval_ts}: the sampler's grid keywords."""
        return {"ts": self.ts} | ({} if self.eval_ts is None else {"eval_ts": self.eval_ts})


@torch.no_grad()
def tune_grid(sde: SDE, score_fn: ScoreFn, x_pilot: Tensor, steps: int, *,
              sampler: Sampler | None = None, order: int = 3, t_eps: float = 1e-3,
              floor: float = 0.05, search_evals: int = 0, shift: bool = False,
              points: int = 201, rtol: float = 1e-8, atol: float = 1e-8) -> TunedGrid:
    """A `steps`-step grid for `sampler` on this score model, from a pilot batch (module docstring).

    Args:
        sde, score_fn: the SDE and the model's score, as for every sampler.
        x_pilot: (B, *D) draws of the prior p_T, like the x_T the grid will be used from (not them).
        steps: the grid's number of steps (its NFE for a multistep sampler).
        sampler: sampler(sde, score_fn, x_T, ts=ts) -> SampleResult, the one the grid is for;
            default UniPC-3 (`dpm_solver_multistep(order=3, corrector="unipc")`).
        order: the sampler's order p, for the equidistribution (1 DDIM, 2 for 2M, 3 for UniPC-3).
        t_eps: the grid's last time (> 0: the log-SNR must be finite).
        floor: the density floor, a fraction of the mean density (>= 0).
        search_evals: budget of sampler runs on the pilot for the Powell search (0: no search).
        shift: search the model's evaluation times too (needs search_evals > 0 and a sampler that
            takes `eval_ts`, as dpm_solver_multistep does).
        points: size of the fine log-SNR grid the reference is recorded on (>= order + 3); the
            reference paths and their x0_hat take 2 * points times the pilot's memory.
        rtol, atol: dopri5 tolerances of the reference; keep them well below the sampler's error.

    Returns:
        TunedGrid(ts, eval_ts, pilot_error); `sampler(sde, score_fn, x_T, **tuned.kwargs)`.
    """
    grids.check_steps(steps)
    check_t_eps(sde, t_eps)
    if not isinstance(x_pilot, Tensor) or not x_pilot.is_floating_point() or x_pilot.ndim < 2:
        raise ValueError(f"x_pilot must be a floating (B, *D) batch of prior draws, got "
                         f"{tuple(x_pilot.shape) if isinstance(x_pilot, Tensor) else x_pilot!r}")
    for name, value, least in (("order", order, 1), ("search_evals", search_evals, 0),
                               ("points", points, order + 3)):
        check_int(name, value, least)
    if not (isinstance(floor, (int, float)) and floor >= 0):
        raise ValueError(f"floor must be a number >= 0, got {floor!r}")
    if shift and not search_evals:
        raise ValueError("shift=True searches the evaluation times: give it search_evals > 0")
    sampler = sampler or functools.partial(dpm_solver_multistep, order=3, corrector="unipc")
    lam = 0.5 * torch.linspace(*grids.log_snr_ends(sde, t_eps), points, dtype=torch.float64)
    fine = SDEGrid(sde, grids.from_log_snr(sde, 2 * lam, t_eps))
    paths = probability_flow(sde, score_fn, x_pilot, ts=fine.ts, rtol=rtol, atol=atol,
                             return_trajectory=True).trajectory
    t_pilot = fine.times_like(x_pilot)
    x0_hat = torch.stack([fine.x0_from_score(x, score_fn(x, t_pilot[i].expand(len(x))), i)
                          for i, x in enumerate(paths)])

    def pilot_error(kwargs: dict[str, Tensor], part: slice = slice(None)) -> float:
        x = sampler(sde, score_fn, x_pilot[part], **kwargs).x
        err = (x - paths[-1][part]).flatten(1).norm(dim=1).pow(2).mean().div(x[0].numel())
        return err.sqrt().item() if bool(torch.isfinite(err)) else math.inf

    candidates = [grids.from_log_snr(sde, 2 * equidistributed(lam, x0_hat, steps, order, floor),
                                     t_eps),
                  grids.log_snr_window(sde, steps, t_eps=t_eps),
                  grids.log_snr_uniform(sde, steps, t_eps=t_eps)]
    best = {"ts": min(candidates, key=lambda ts: pilot_error({"ts": ts}))}
    if search_evals and steps >= 2:
        # search on 3/4 of the pilot; keep the result only if it is no worse on the other quarter
        split = len(x_pilot) - len(x_pilot) // 4
        found = _powell(sde, best["ts"], t_eps, shift,
                        functools.partial(pilot_error, part=slice(split)), search_evals)
        check = slice(split, None)
        if split == len(x_pilot) or pilot_error(found, check) <= pilot_error(best, check):
            best = found
    return TunedGrid(best["ts"], best.get("eval_ts"), pilot_error(best))


def equidistributed(lam: Tensor, x0_hat: Tensor, steps: int, order: int, floor: float) -> Tensor:
    """steps + 1 half-log-SNRs from lam[0] to lam[-1] with density ~ RMS |d^p x0_hat / d lam^p|^(1/(p+1))
    + floor * its mean, p = order.

    Args:
        lam: (P,) uniform increasing half-log-SNRs; x0_hat: (P, B, *D) the data predictions there.

    Returns:
        (steps + 1,) float64, increasing, with the exact ends lam[0] and lam[-1].
    """
    h = (lam[1] - lam[0]).item()
    d = x0_hat.flatten(2).to(torch.float64)
    for _ in range(order):
        d = torch.diff(d, dim=0) / h
    rho = d.pow(2).mean(dim=(1, 2)).sqrt() ** (1 / (order + 1))  # (P - order,) at the mid-points
    rho = rho + floor * rho.mean() + 1e-300
    mids = lam[: len(rho)] + order * h / 2
    edges = torch.cat([lam[:1], (mids[1:] + mids[:-1]) / 2, lam[-1:]])
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), (rho * edges.diff()).cumsum(0)])
    cdf = cdf / cdf[-1]
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    j = torch.searchsorted(cdf, u, right=True).clamp(1, len(cdf) - 1)
    out = edges[j - 1] + (u - cdf[j - 1]) / (cdf[j] - cdf[j - 1]) * edges.diff()[j - 1]
    out[0], out[-1] = lam[0], lam[-1]
    return out


def _powell(sde: SDE, ts: Tensor, t_eps: float, shift: bool,
            error: Callable[[dict[str, Tensor]], float], evals: int) -> dict[str, Tensor]:
    """Powell's search from grid ts over the log step lengths in lambda (ends fixed) and, with
    shift, the evaluation offsets in lambda: the sampler keywords of least error seen (ts itself
    if none beat it)."""
    lam = 0.5 * sde.log_snr(ts)
    lo, hi, n = lam[0].item(), lam[-1].item(), len(ts) - 1

    def to_kwargs(p: np.ndarray) -> dict[str, Tensor]:
        p = torch.as_tensor(p, dtype=torch.float64)
        steps = torch.softmax(p[:n], 0) * (hi - lo)
        lam = torch.cat([torch.tensor([lo], dtype=torch.float64), lo + steps.cumsum(0)])
        out = {"ts": grids.from_log_snr(sde, 2 * lam, t_eps)}
        if shift:  # the model's times: lambda_i + delta_i within [lambda(T), lambda(t_eps)]
            asked = (lam[:-1] + p[n:]).clamp(lo, hi)
            out["eval_ts"] = sde.t_from_log_snr(2 * asked).clamp(t_eps, sde.T)
        return out

    def objective(p: np.ndarray) -> float:
        try:
            return min(error(to_kwargs(p)), 1e10)
        except ValueError:  # steps collapsed below the float64 spacing of t
            return 1e10

    start = np.concatenate([torch.log(lam.diff()).numpy(), np.zeros(n if shift else 0)])
    res = scipy.optimize.minimize(objective, start, method="Powell",
                                  options=dict(maxfev=evals, xtol=1e-3, ftol=1e-4))
    return to_kwargs(res.x) if res.fun < objective(start) else {"ts": ts}
