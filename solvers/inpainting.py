"""Inpainting and imputation through the SDE by replacement (Song et al. 2021, score_sde's method).

Given known values x_known and a mask (1 = known), the sampler runs on the whole state and, at
each grid time t_i, the known part is overwritten by a fresh forward-noised draw of it,

    x[mask] <- alpha(t_i) x_known + sigma(t_i) z,   z ~ N(0, I),

so the unknown part evolves under the score of the joint p_t while seeing data consistent with
x_known. At the end the known part is set to x_known exactly.

Design: `impute` wraps any grid-based sampler without copying it. It resolves the grid ts once and
runs the sampler on each two-point sub-grid [t_i, t_{i+1}], replacing the known part between the
calls, so a one-step scheme (Euler-Maruyama, predictor-corrector, DDIM, DDPM ancestral, Heun, ...)
takes exactly the steps it would take on ts, and the NFE adds up exactly. Multistep schemes
(dpm_solver_multistep) restart on each sub-grid and so run at their first order; samplers with
their own inner steps (probability_flow, torchsde_reverse) take them inside each sub-grid; a
sampler without a grid (adaptive_sde) is refused.

The replacement method is approximate: at time t the unknown part follows the score of
p_t(x_unknown | x_t^known) for a fresh draw of x_t^known, not that of p_t(x_unknown | x_0^known).
It is exact when the known and unknown parts are independent, and biased when they are
correlated: for x2 | x1 = 1 on a 2-D mixture with conditional mean 1.00, Euler-Maruyama with
replacement gives 0.68 (tests/solvers/test_inpainting.py). Two remedies remove most of it there:
Langevin corrector steps (`predictor_corrector`, n_steps=5: 0.99), which let the unknown part relax
at each time, and RePaint's resampling (`resample=10`: 1.01), which noises each step back and
redoes it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, append_dims
from score_sde.solvers import grids
from score_sde.solvers.result import (
    Callback,
    CountingScore,
    SampleResult,
    ScoreFn,
    Trajectory,
    initial_state,
    randn_like,
)

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


def replace_known(sde: SDE, x: Tensor, t: float, known: Tensor, mask: Tensor,
                  generator: torch.Generator | None = None) -> Tensor:
    """x with its known part replaced by alpha(t) known + sigma(t) z (z from `generator`).

    Args:
        sde: the forward SDE.
        x: (B, *D) the state at time t.
        t: the time.
        known: (B, *D) the clean known values (only those under the mask are read).
        mask: (B, *D) boolean, True where known.
        generator: source of z, one draw of x's shape.

    Returns:
        (B, *D).
    """
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    alpha, sigma = append_dims(sde.alpha(tt), x.ndim), append_dims(sde.sigma(tt), x.ndim)
    return torch.where(mask, alpha * known + sigma * randn_like(x, generator), x)


def forward_jump(sde: SDE, x: Tensor, s: float, t: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """A draw of x_t given x_s = x, s < t, from the forward SDE's transition:

        x_t = (alpha_t / alpha_s) x + sqrt(sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2) z.

    Args:
        sde: the forward SDE.
        x: (B, *D) the state at time s.
        s, t: the times, s < t.
        generator: source of z, one draw of x's shape.

    Returns:
        (B, *D).
    """
    times = torch.tensor([s, t], dtype=torch.float64)
    alpha, sigma = sde.alpha(times).tolist(), sde.sigma(times).tolist()
    a = alpha[1] / alpha[0]
    std = max(sigma[1] ** 2 - a**2 * sigma[0] ** 2, 0.0) ** 0.5
    return a * x + std * randn_like(x, generator)


def impute(sampler: Sampler, sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...],
           known: Tensor, mask: Tensor, *, steps: int = 500, t_eps: float = 1e-3,
           grid: str = "uniform", ts: Tensor | None = None,
           generator: torch.Generator | None = None, callback: Callback | None = None,
           return_trajectory: bool = False, resample: int = 0, **settings) -> SampleResult:
    """Sample the unknown part of x given the known part, with any grid-based sampler.

    For 2-D data, known = (x1, anything) and mask = (1, 0) sample x2 from p(x2 | x1).

    Args:
        sampler: a sampler that takes an explicit grid, called as
            sampler(sde, score_fn, x, ts=ts[i:i + 2], generator=generator, **settings), e.g.
            `solvers.euler_maruyama`, `predictor_corrector`, `ddim`, `ddpm_ancestral`, `heun`.
        sde: the forward SDE.
        score_fn: score_fn(x, t) -> like x, the score of the (joint) data.
        x_T: (B, *D) the start at ts[0], or a shape (B, *D): a prior draw from `generator`.
        known: (B, *D) or (*D) the known values (entries outside the mask are ignored).
        mask: (B, *D) or (*D), 1 (True) where the value is known, 0 (False) where it is sampled.
        steps: number of steps when ts is not given.
        t_eps: last time of the default grid.
        grid: "uniform", "quadratic", "log_snr" or "karras", when ts is not given.
        ts: an explicit decreasing grid in [0, T]; overrides steps, t_eps and grid.
        generator: source of all noise, per step: the sampler's draws, then the known part's.
        callback: callback(i, t_i, x_i) on each state after its replacement (i = 0..N).
        return_trajectory: keep the len(ts) states.
        resample: RePaint's extra jumps per step (U - 1 in Lugmayr et al. 2022): after the step
            t_i -> t_{i+1} and its replacement, the state is noised back to t_i by the forward
            transition and the step is redone, `resample` times, letting the unknown part
            harmonise with the known one at each noise level. Multiplies the NFE by
            1 + resample.
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
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 0:
        raise ValueError(f"resample must be an int >= 0, got {resample!r}")
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
    ts = grids.resolve_grid(sde, ts=ts, steps=steps, t_eps=t_eps, grid=grid)
    # Count every call here; the sampler gets the bound method (not a CountingScore, which it
    # would reuse and whose running total it would report) and counts its own steps.
    score = CountingScore(score_fn)
    t_list = ts.tolist()
    n_steps = len(t_list) - 1
    record = Trajectory(return_trajectory, callback)
    x = replace_known(sde, x, t_list[0], known, mask, generator)
    record.record(0, t_list[0], x)
    for i in range(n_steps):
        for jump in range(resample + 1):
            if jump > 0:
                x = forward_jump(sde, x, t_list[i + 1], t_list[i], generator)
            step = sampler(sde, score.__call__, x, ts=ts[i:i + 2], generator=generator,
                           **settings)
            if i + 1 < n_steps:
                x = replace_known(sde, step.x, t_list[i + 1], known, mask, generator)
            else:
                x = torch.where(mask, known, step.x)
        record.record(i + 1, t_list[i + 1], x)
    return SampleResult(x=x, nfe=score.nfe, trajectory=record.stacked(), ts=ts)
