"""The probability-flow ODE dx/dt = f(t) x - g(t)^2 score(x, t) / 2, solved by torchdiffeq.odeint
(adaptive methods in log-SNR time when the SDE's coefficients jump in t, see `solvers.clock`), and
the translation of torchdiffeq's failures into a `SolverError` (shared with the likelihood)."""

from __future__ import annotations

import torch
import torchdiffeq
from torch import Tensor

from score_sde.sde_lib import (
    SDE,
    ScoreFn,
    SDEGrid,
    check_int,
    check_number,
    check_t_eps,
    describe_samples,
    nonfinite_samples,
)
from score_sde.solvers import grids
from score_sde.solvers.clock import LogSNRClock
from score_sde.solvers.errors import SolverError
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def check_ode_settings(method: str, rtol: float, atol: float, max_steps: int) -> None:
    """Check a torchdiffeq method name and, for adaptive ones, rtol, atol and max_steps."""
    if method not in ADAPTIVE_METHODS + FIXED_METHODS:
        raise ValueError(f"method must be one of {ADAPTIVE_METHODS + FIXED_METHODS}, "
                         f"got {method!r}")
    if method in ADAPTIVE_METHODS:
        check_number("rtol", rtol)
        check_number("atol", atol)
        check_int("max_steps", max_steps)


def ode_failure(err: AssertionError, *, what: str, t: float, samples: list[int], batch: int,
                rtol: float, atol: float, max_steps: int) -> SolverError | None:
    """The SolverError for torchdiffeq's "max_num_steps" and "underflow in dt" assertions (None for
    any other assertion): names the samples, the time reached and the settings to change."""
    message = str(err)
    if "max_num_steps" in message:
        why, setting = f"hit max_steps = {max_steps}", "max_steps"
    elif "underflow" in message:
        why, setting = "shrank its step below float resolution", "rtol"
    else:
        return None
    return SolverError(
        f"{what} {why} near t = {t:.6g}; {describe_samples(samples, batch)} set the step there. "
        f"Loosen the tolerances (rtol = {rtol}, atol = {atol}, e.g. 10x), raise max_steps, or "
        "check the score of those samples near this time", samples=samples, t=t,
        setting=setting)


class ProbabilityFlow(torch.nn.Module):
    """The PF-ODE's velocity in torchdiffeq's (t, x) order; t is 0-d and expanded to (B,).

    Attributes:
        score: the NFE-counting score function.
        evaluations: (t, sum of the score) of every evaluation, and last_x the last state; tensors,
            read only after a failure, to say where the score first turned non-finite.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn):
        super().__init__()
        self.sde, self.score = sde, CountingScore(score_fn)
        self.evaluations: list[tuple[Tensor, Tensor]] = []
        self.last_x: Tensor | None = None

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t_vec = t.to(x.dtype).expand(x.shape[0])
        score = self.score(x, t_vec)
        self.evaluations.append((t, score.sum()))
        self.last_x = x
        return self.sde.probability_flow_drift(x, t_vec, score, check=False)

    def failure_point(self) -> tuple[float, list[int], bool]:
        """The time the score first turned non-finite (else the last time asked), the samples of
        the last state that are non-finite (else all of them), and whether any value was."""
        sums = torch.stack([s for _, s in self.evaluations])
        bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()
        t = self.evaluations[bad[0] if bad else -1][0].item()
        samples = nonfinite_samples(self.last_x)
        return t, samples or list(range(self.last_x.shape[0])), bool(bad or samples)


@torch.no_grad()
def probability_flow(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *,
                     method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                     max_steps: int = 10_000, steps: int = 100, t_eps: float = 1e-3,
                     grid: str = "uniform", ts: Tensor | None = None, options: dict | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     return_trajectory: bool = False) -> SampleResult:
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
        max_steps: adaptive steps allowed before the solve gives up.
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

    Raises:
        SolverError: the solve hit max_steps, its step underflowed, or its result is not finite.
    """
    x_T = initial_state(sde, x_T, generator)
    check_ode_settings(method, rtol, atol, max_steps)
    if method in ADAPTIVE_METHODS:
        if ts is None:
            check_t_eps(sde, t_eps)
            ts = torch.tensor([sde.T, t_eps], dtype=torch.float64)
        on_grid = SDEGrid(sde, ts)
    else:
        on_grid = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    field = ProbabilityFlow(sde, score_fn)
    t_x = on_grid.times_like(x_T)
    func, kwargs = field, {}
    if method in ADAPTIVE_METHODS:
        if not sde.smooth_coefficients:  # beta jumps in t: integrate in log-SNR time
            clock = LogSNRClock(sde, on_grid.times[-1], on_grid.times[0])
            func, t_x = clock.field(field), clock.u(t_x)
        # Land on every grid time rather than step past ts[-1] and interpolate back, and give the
        # first step (torchdiffeq's own guess probes f at t0 + h0, which can lie far outside
        # [0, T]): the score is only defined on [0, T].
        first = 1e-2 * abs((t_x[0] - t_x[1]).item())
        options = {"step_t": t_x, "first_step": first, "max_num_steps": max_steps,
                   **(options or {})}
        kwargs = dict(rtol=rtol, atol=atol)
    try:
        xs = torchdiffeq.odeint(func, x_T, t_x, method=method, options=options, **kwargs)
    except AssertionError as err:
        t, samples, nonfinite = field.failure_point()
        if nonfinite:
            raise SolverError(f"the probability-flow ODE solve stopped: the score turned "
                              f"non-finite at t = {t:.6g} in "
                              f"{describe_samples(samples, x_T.shape[0])}; check the model near "
                              "this time", samples=samples, t=t, setting=None) from None
        failure = ode_failure(err, what="the probability-flow ODE solve", t=t, samples=samples,
                              batch=x_T.shape[0], rtol=rtol, atol=atol, max_steps=max_steps)
        if failure is None:
            raise
        raise failure from None
    log = StepLog(return_trajectory, callback)
    for i, (t, x) in enumerate(zip(on_grid.times, xs)):
        log.record(i, t, x)
    return log.result(xs[-1], field.score.nfe,
                      setting="rtol" if method in ADAPTIVE_METHODS else "steps")
