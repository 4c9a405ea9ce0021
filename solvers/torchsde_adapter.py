"""The reverse-time SDE through torchsde.sdeint, for its solvers, adaptive steps and Brownian paths.

torchsde integrates forward in time on (B, d) states, so the reverse SDE runs in negated time
s = -t from -T to -t_eps, on x flattened to (B, prod D):

    dx = -[f(t) x - g(t)^2 score(x, t)] ds + g(t) dW_s,   t = -s.

The noise g(t) does not depend on x (additive noise), so the Ito and Stratonovich forms are the same
SDE and every torchsde method applies: Stratonovich-only ones (reversible_heun, midpoint, heun,
euler_heun) are run with sde_type "stratonovich", the others with "ito".
"""

from __future__ import annotations

import math
import warnings

import torch
import torchsde
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, append_dims, check_number, check_t_eps
from score_sde.solvers.grids import check_steps
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state

ITO_METHODS = ("euler", "milstein", "srk")
STRATONOVICH_METHODS = ("reversible_heun", "midpoint", "heun", "euler_heun", "log_ode_midpoint")


class ReverseTimeSDE(torch.nn.Module):
    """torchsde's view of the reverse SDE: f(s, y), g(s, y) on y (B, d) with s = -t (0-d).

    Attributes:
        noise_type: "diagonal".
        sde_type: "ito" or "stratonovich" (equal here, since the noise is additive).
        score: the NFE-counting score function.
    """

    noise_type = "diagonal"

    def __init__(self, sde: SDE, score_fn: ScoreFn, shape: torch.Size, sde_type: str):
        super().__init__()
        self.sde, self.shape, self.sde_type = sde, shape, sde_type
        self.score = CountingScore(score_fn)

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.reshape(self.shape)
        t = (-s).to(x.dtype).expand(x.shape[0])
        return -self.sde.reverse_drift(x, t, self.score(x, t), check=False).flatten(1)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        g = self.sde.diffusion((-s).to(y.dtype).expand(y.shape[0]), check=False)
        return append_dims(g, y.ndim).expand_as(y)


class SeededBrownianInterval(torchsde.BrownianInterval):
    """torchsde's BrownianInterval on the dyadic tree (halfway_tree=True), so that the path is a
    function of `entropy` alone: solves with any step count or adaptive steps see the same path.

    Query times are rounded to the tree's resolution `tol` first; torchsde's halfway tree only
    terminates on times it can reach by rounded bisection.
    """

    def __init__(self, t0: float, t1: float, size: tuple[int, ...], *, entropy: int,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 tol: float = 1e-6, levy_area_approximation: str = "none"):
        super().__init__(t0=t0, t1=t1, size=size, dtype=dtype, device=device, entropy=entropy,
                         tol=tol, halfway_tree=True,
                         levy_area_approximation=levy_area_approximation)
        self._ndigits = round(-math.log10(tol))

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        ta = round(float(ta), self._ndigits)
        tb = None if tb is None else round(float(tb), self._ndigits)
        return super().__call__(ta, tb, return_U=return_U, return_A=return_A)


def brownian_interval(sde: SDE, x_T: Tensor, t_end: float, *, entropy: int,
                      tol: float = 1e-6) -> SeededBrownianInterval:
    """The Brownian motion of the reverse SDE on s in [-T, -t_end], of x_T's flattened shape.

    It always carries the space-time Levy area (which srk needs): torchsde draws a different path
    from the same entropy with and without it, and one entropy must mean one path for every method.
    """
    return SeededBrownianInterval(
        -sde.T, -t_end, (x_T.shape[0], x_T[0].numel()), entropy=entropy, dtype=x_T.dtype,
        device=x_T.device, tol=tol, levy_area_approximation="space-time")


@torch.no_grad()
def torchsde_reverse(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, method: str = "euler",
                     steps: int = 1000, dt: float | None = None, t_eps: float = 1e-3,
                     ts: Tensor | None = None, adaptive: bool = False, rtol: float = 1e-5,
                     atol: float = 1e-4, entropy: int | None = None, brownian_tol: float = 1e-6,
                     bm: torchsde.BrownianInterval | None = None,
                     generator: torch.Generator | None = None, callback: Callback | None = None,
                     return_trajectory: bool = False) -> SampleResult:
    """Sample the reverse SDE from ts[0] (T) to ts[-1] (t_eps) with torchsde.sdeint.

    Args:
        sde: the forward SDE.
        score_fn: score_fn(x, t) -> like x, t of shape (B,).
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        method: a torchsde method: one of ITO_METHODS or STRATONOVICH_METHODS.
        steps: fixed step size (ts[0] - ts[-1]) / steps, unless dt is given.
        dt: the (initial, if adaptive) step size in t (> 0).
        t_eps: end time when ts is not given.
        ts: decreasing output times in [0, T] (default [T, t_eps]); torchsde steps by dt from
            ts[0] and reports the intermediate output times by linear interpolation.
        adaptive: adaptive stepping with rtol, atol (torchsde's error control).
        rtol, atol: tolerances of adaptive stepping.
        entropy: the seed of the Brownian path; by default drawn from `generator`. One entropy
            gives one path, whatever the step count.
        brownian_tol: the time resolution of the seeded Brownian path (smaller is slower).
        bm: a ready torchsde Brownian motion on [-ts[0], -ts[-1]] of size (B, prod D); overrides
            entropy.
        generator: draws the entropy when neither entropy nor bm is given.
        callback: callback(i, t_i, x_i) on the solution at each output time, after the solve.
        return_trajectory: keep the solution at every output time.

    Returns:
        SampleResult with x (B, *D) at ts[-1] and nfe, the number of score calls: one per drift
        call, including the one torchsde makes to check shapes (euler: steps + 1).
    """
    x_T = initial_state(sde, x_T, generator)
    if method in ITO_METHODS:
        sde_type = "ito"
    elif method in STRATONOVICH_METHODS:
        sde_type = "stratonovich"
    else:
        raise ValueError(f"method must be one of {ITO_METHODS + STRATONOVICH_METHODS}, "
                         f"got {method!r}")
    if ts is None:
        check_t_eps(sde, t_eps)
        ts = torch.tensor([sde.T, t_eps], dtype=torch.float64)
    on_grid = SDEGrid(sde, ts)
    span = on_grid.times[0] - on_grid.times[-1]
    setting = "rtol" if adaptive else "steps" if dt is None else "dt"
    if dt is None:
        check_steps(steps)
        dt = span / steps * (1 + 1e-9)  # exactly `steps` steps despite rounding in t + k dt
    else:
        check_number("dt", dt)
    if bm is None:
        if entropy is None:
            device = None if generator is None else generator.device
            entropy = int(torch.randint(2**62, (), generator=generator, device=device).item())
        bm = brownian_interval(sde, x_T, on_grid.times[-1], entropy=entropy, tol=brownian_tol)
    drift = ReverseTimeSDE(sde, score_fn, x_T.shape, sde_type)
    s = (-on_grid.ts).to(device=x_T.device)  # float64 times: float32 sums of dt would add a step
    with warnings.catch_warnings():
        # torchsde warns that adaptive Euler needs additive noise; ours is (declared "diagonal"
        # only so that g stays (B, d) rather than torchsde's additive (B, d, d)).
        warnings.filterwarnings("ignore", message=".*adaptive time-stepping with the Euler")
        ys = torchsde.sdeint(drift, x_T.flatten(1), s, bm=bm, method=method, dt=dt,
                             adaptive=adaptive, rtol=rtol, atol=atol)
    log = StepLog(return_trajectory, callback)
    for i, (t, x) in enumerate(zip(on_grid.times, ys.reshape(-1, *x_T.shape))):
        log.record(i, t, x)
    return log.result(ys[-1].reshape(x_T.shape), drift.score.nfe, setting=setting)
