"""The probability-flow ODE dx/dt = f(t) x - g(t)^2 score(x, t) / 2, solved by torchdiffeq.odeint
(adaptive methods in log-SNR time when the SDE's coefficients jump in t, see `solvers.clock`)."""

from __future__ import annotations

import torch
import torchdiffeq
from torch import Tensor

from score_sde.sde_lib import SDE, check_t_eps
from score_sde.solvers import grids
from score_sde.solvers.clock import LogSNRClock
from score_sde.solvers.result import Callback, CountingScore, SampleResult, ScoreFn, initial_state

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams")


class ProbabilityFlow(torch.nn.Module):
    """The PF-ODE's velocity in torchdiffeq's (t, x) order; t is 0-d and expanded to (B,).

    Attributes:
        score: the NFE-counting score function.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn):
        super().__init__()
        self.sde = sde
        self.score = score_fn if isinstance(score_fn, CountingScore) else CountingScore(score_fn)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t_vec = t.to(x.dtype).expand(x.shape[0])
        return self.sde.probability_flow_drift(x, t_vec, self.score(x, t_vec))


@torch.no_grad()
def probability_flow(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, method: str = "dopri5",
                     rtol: float = 1e-5, atol: float = 1e-5, steps: int = 100,
                     t_eps: float = 1e-3, grid: str = "uniform", ts: Tensor | None = None,
                     options: dict | None = None, generator: torch.Generator | None = None,
                     callback: Callback | None = None, return_trajectory: bool = False
                     ) -> SampleResult:
    """Integrate the probability-flow ODE from ts[0] (T) down to ts[-1] (t_eps) with torchdiffeq.

    Adaptive methods (dopri5, ...) step by rtol/atol and report the solution at the grid times
    (by default just T and t_eps); fixed-step methods (euler, rk4, ...) step exactly on the grid
    (by default `steps` uniform steps).

    Args:
        sde: the forward SDE.
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        method: one of ADAPTIVE_METHODS or FIXED_METHODS.
        rtol, atol: tolerances of adaptive methods (> 0).
        steps: number of steps of a fixed-step method when ts is not given.
        t_eps: end time when ts is not given.
        grid: "uniform", "quadratic" or "log_snr" for a fixed-step method when ts is not given.
        ts: an explicit decreasing grid in [0, T]; overrides steps, t_eps and grid.
        options: extra torchdiffeq options (e.g. {"first_step": 0.01}).
        generator: draws x_T when x_T is a shape; the ODE itself is deterministic.
        callback: callback(i, t_i, x_i) on the solution at each grid time, after the solve.
        return_trajectory: keep the solution at every grid time.

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe, the exact number of score calls.
    """
    x_T = initial_state(sde, x_T, generator)
    if method in ADAPTIVE_METHODS:
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
                raise ValueError(f"{name} must be a number > 0, got {tol!r}")
        if ts is None:
            check_t_eps(sde, t_eps)
            ts = torch.tensor([sde.T, t_eps], dtype=torch.float64)
        ts = grids.check_grid(sde, ts)
    elif method in FIXED_METHODS:
        ts = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    else:
        raise ValueError(f"method must be one of {ADAPTIVE_METHODS + FIXED_METHODS}, "
                         f"got {method!r}")
    field = ProbabilityFlow(sde, score_fn)
    t_x = ts.to(device=x_T.device, dtype=x_T.dtype)
    func, kwargs = field, {}
    if method in ADAPTIVE_METHODS:
        if not sde.smooth_coefficients:  # beta jumps in t: integrate in log-SNR time
            clock = LogSNRClock(sde, ts[-1].item(), ts[0].item())
            func, t_x = clock.field(field), clock.u(t_x)
        # Land on every grid time rather than step past ts[-1] and interpolate back, and give the
        # first step (torchdiffeq's own guess probes f at t0 + h0, which can lie far outside
        # [0, T]): the score is only defined on [0, T].
        first = 1e-2 * abs((t_x[0] - t_x[1]).item())
        options = {"step_t": t_x, "first_step": first, **(options or {})}
        kwargs = dict(rtol=rtol, atol=atol)
    xs = torchdiffeq.odeint(func, x_T, t_x, method=method, options=options, **kwargs)
    if callback is not None:
        for i, (t, x) in enumerate(zip(ts.tolist(), xs)):
            callback(i, t, x)
    return SampleResult(x=xs[-1], nfe=field.score.nfe,
                        trajectory=xs if return_trajectory else None, ts=ts)
