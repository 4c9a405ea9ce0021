"""Imputation (inpainting, for images) through the SDE by replacement (Song et al. 2021, score_sde's
method).

Given known values x_known and a mask (1 = known), the sampler runs on the whole state and, at
each grid time t_i, the known part is overwritten by a fresh forward-noised draw of it,

    x[mask] <- alpha(t_i) x_known + sigma(t_i) z,   z ~ N(0, I),

so the unknown part evolves under the score of the joint p_t while seeing data consistent with
x_known. At the end the known part is set to x_known exactly.

Design: `impute` wraps any grid-based sampler without copying it. It resolves the grid ts once (an
`sde_lib.SDEGrid`, whose alpha, sigma and transition kernel the replacement and RePaint's jumps
read) and runs the sampler on each two-point sub-grid [t_i, t_{i+1}], replacing the known part
between the calls, so a one-step scheme (Euler-Maruyama, predictor-corrector, DDIM, DDPM ancestral, Heun, ...)
takes exactly the steps it would take on ts, and the NFE adds up exactly. Multistep schemes
(dpm_solver_multistep) restart on each sub-grid and so run at their first order; samplers with
their own inner steps (probability_flow, torchsde_reverse) take them inside each sub-grid; a
sampler without a grid (adaptive_sde) is refused.

The replacement method is approximate: at time t the unknown part follows the score of
p_t(x_unknown | x_t^known) for a fresh draw of x_t^known, not that of p_t(x_unknown | x_0^known).
It is exact when the known and unknown parts are independent, and biased when they are
correlated: for x2 | x1 = 1 on a 2-D mixture with conditional mean 1.00, Euler-Maruyama with
replacement gives 0.68 (tests/solvers/test_imputation.py). Two remedies remove most of it there:
Langevin corrector steps (`predictor_corrector`, n_steps=5: 0.99), which let the unknown part relax
at each time, and RePaint's resampling (`resample=10`: 1.01), which noises each step back and
redoes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, check_int, describe_samples, randn_like
from score_sde.solvers import grids
from score_sde.solvers.errors import SolverError
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state
from score_sde.solvers.sde_samplers import euler_maruyama

Sampler = Callable[..., SampleResult]


def _event_tensor(name: str, value: Tensor, x: Tensor) -> Tensor:
    """value checked to have shape (B, *D) or (*D) of x, cast to x's dtype and device."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a tensor of shape (B, *D) or (*D), got "
                         f"{type(value).__name__}")
    if value.shape not in (x.shape, x.shape[1:]):
        raise ValueError(f"{name} must have the shape of x_T {tuple(x.shape)} or of one event "
                         f"{tuple(x.shape[1:])}, got {tuple(value.shape)}")
    return value.to(dtype=x.dtype, device=x.device).expand_as(x)


def replace_known(grid: SDEGrid, i: int, x: Tensor, known: Tensor, mask: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """x with its known part replaced by a draw of its forward marginal at grid time ts[i],
    alpha_i known + sigma_i z (z from `generator`, one draw of x's shape).

    Args:
        grid: the SDE on the grid.
        i: the index of the grid time.
        x: (B, *D) the state at ts[i].
        known: (B, *D) the clean known values (only those under the mask are read).
        mask: (B, *D) boolean, True where known.

    Returns:
        (B, *D).
    """
    alpha, sigma = grid.floats("alpha")[i], grid.floats("sigma")[i]
    return torch.where(mask, alpha * known + sigma * randn_like(x, generator), x)


def forward_jump(grid: SDEGrid, i: int, x: Tensor, generator: torch.Generator | None = None
                 ) -> Tensor:
    """A draw of x_t given x_s = x for the step i from t = ts[i] down to s = ts[i + 1], by the
    forward transition: x_t = alpha_{t|s} x + sigma_{t|s} z (z from `generator`). (B, *D)."""
    return (grid.floats("kernel_scale")[i] * x
            + grid.floats("kernel_std")[i] * randn_like(x, generator))


def impute(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *, known: Tensor,
           mask: Tensor, sampler: Sampler = euler_maruyama, steps: int = 500,
           t_eps: float = 1e-3, grid: str = "uniform", ts: Tensor | None = None,
           resample: int = 0, generator: torch.Generator | None = None,
           callback: Callback | None = None, return_trajectory: bool = False,
           **settings) -> SampleResult:
    """Sample the unknown part of x given the known part, with any grid-based sampler.

    For 2-D data, known = (x1, anything) and mask = (1, 0) sample x2 from p(x2 | x1).

    Args:
        sde: the forward SDE.
        score_fn: score_fn(x, t) -> like x, the score of the (joint) data.
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        known: (B, *D) or (*D) the known values (entries outside the mask are ignored).
        mask: (B, *D) or (*D), 1 (True) where the value is known, 0 (False) where it is sampled.
        sampler: a sampler that takes an explicit grid, called as
            sampler(sde, score_fn, x, ts=ts[i:i + 2], generator=generator, **settings), e.g.
            `solvers.euler_maruyama` (default), `predictor_corrector`, `ddim`, `ddpm_ancestral`,
            `heun`.
        steps: number of steps when ts is not given.
        t_eps: last time of the default grid.
        grid: "uniform", "quadratic", "log_snr" or "karras", when ts is not given.
        ts: an explicit decreasing grid in [0, T]; overrides steps, t_eps and grid.
        resample: RePaint's extra jumps per step (U - 1 in Lugmayr et al. 2022): after the step
            t_i -> t_{i+1} and its replacement, the state is noised back to t_i by the forward
            transition and the step is redone, `resample` times, letting the unknown part
            harmonise with the known one at each noise level. Multiplies the NFE by
            1 + resample.
        generator: source of all noise, per step: the sampler's draws, then the known part's.
        callback: callback(i, t_i, x_i) on each state after its replacement (i = 0..N).
        return_trajectory: keep the len(ts) states.
        **settings: the sampler's own keyword settings (eta, predictor, n_steps, ...).

    Returns:
        SampleResult with x (B, *D) (equal to known under the mask) and nfe the number of score
        calls, the sum of the sampler's NFE over the N sub-grids.

    Raises:
        ValueError: a sampler without a `ts` argument, known or mask of the wrong shape, mask
            values other than 0 and 1, resample < 0, or denoise=True.
    """
    if not callable(sampler) or "ts" not in inspect.signature(sampler).parameters:
        raise ValueError(f"sampler must be a grid-based sampler(sde, score_fn, x_T, ts=...), got "
                         f"{getattr(sampler, '__name__', sampler)!r}")
    check_int("resample", resample, 0)
    if settings.get("denoise"):
        raise ValueError("denoise=True is not supported by impute: the known part is restored "
                         "exactly at the end; denoise the result yourself if needed")
    settings.pop("denoise", None)
    x = initial_state(sde, x_T, generator)
    mask = _event_tensor("mask", mask, x)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 (1 = known)")
    mask = mask.bool()
    if not (isinstance(known, Tensor) and known.is_floating_point()):
        raise ValueError(f"known must be a floating-point tensor, got "
                         f"{getattr(known, 'dtype', type(known).__name__)}")
    known = _event_tensor("known", known, x)
    if not bool(torch.isfinite(torch.where(mask, known, 0.0)).all()):
        raise ValueError("known has non-finite values under the mask; give finite known values")
    on_grid = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    # Each sampler call counts its own evaluations; this counter adds them up.
    score, log = CountingScore(score_fn), StepLog(return_trajectory, callback)
    n, times = on_grid.steps, on_grid.times
    x = replace_known(on_grid, 0, x, known, mask, generator)
    log.record(0, times[0], x)
    for i in range(n):
        for jump in range(resample + 1):
            if jump > 0:
                x = forward_jump(on_grid, i, x, generator)
            try:
                step = sampler(sde, score, x, ts=on_grid.ts[i:i + 2], generator=generator,
                               **settings)
            except SolverError as err:  # name this grid's step, not the sub-grid's
                raise SolverError(f"impute's state became non-finite at step {i + 1} of {n} "
                                  f"(t = {times[i + 1]:.6g}) in "
                                  f"{describe_samples(err.samples, x.shape[0])}: check the model "
                                  "near that time", samples=err.samples, t=times[i + 1],
                                  setting=err.setting) from None
            if i + 1 < n:
                x = replace_known(on_grid, i + 1, step.x, known, mask, generator)
            else:
                x = torch.where(mask, known, step.x)
        log.record(i + 1, times[i + 1], x)
    return log.result(x, score.nfe)
