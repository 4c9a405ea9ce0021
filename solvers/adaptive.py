"""Adaptive-step reverse-SDE solver in the spirit of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast").

Each attempt from t with step h takes an Euler-Maruyama step and a stochastic improved-Euler (Heun)
step with the same Brownian increment dW over [t - h, t], in reverse time (mu = f x - g^2 score):

    K1 = -h mu(x, t) + g(t) dW,   K2 = -h mu(x + K1, t - h) + g(t - h) dW,
    x' = x + K1 (EM),  x'' = x + (K1 + K2) / 2 (Heun, kept on acceptance),
    E  = max over samples of || (K2 - K1) / 2 / delta ||_RMS,  delta = max(atol, rtol max(|x'|, |x'_prev|)).

The step is accepted when E <= 1; then h <- min(t - t_eps, safety h E^(-exponent)).
One difference from the paper, for correctness: the Brownian path comes from a torchsde
BrownianInterval, so a rejected step is retried on the *same* path (Brownian-bridge refinement)
instead of with fresh noise. Redrawing the noise after a rejection selects against large increments
and biases the samples whatever the tolerance (on a VE mixture: 45% instead of 50% of the mass in the
largest component at rtol 1e-3). The step size is shared by the batch so that one path serves it.
2 NFE an attempt. The solve checks the error estimate on every attempt (one host sync each, as any
adaptive solver), so a non-finite state stops it at once with a `SolverError`.
"""

from __future__ import annotations

import math

import torch
import torchsde
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, SDEGrid, append_dims, check_int, check_number
from score_sde.sde_lib.tensors import describe_samples, nonfinite_samples
from score_sde.solvers.errors import SolverError
from score_sde.solvers.result import Callback, CountingScore, SampleResult, StepLog, initial_state


@torch.no_grad()
def adaptive_sde(sde: SDE, score_fn: ScoreFn, x_T: Tensor | tuple[int, ...], *,
                 rtol: float = 1e-2, atol: float = 7.8e-3, t_eps: float = 1e-3,
                 h_init: float = 1e-2, safety: float = 0.9, exponent: float = 0.9,
                 max_attempts: int = 10000, denoise: bool = False,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 return_trajectory: bool = False) -> SampleResult:
    """Sample the reverse SDE from T to t_eps with adaptive steps and error control.

    Args:
        sde, score_fn, x_T: the SDE, score_fn(x, t) with t (B,), and the (B, *D) state at T.
        rtol, atol: the error tolerance (atol = 1/128, half an 8-bit level on [-1, 1], by default).
        t_eps: the final time.
        h_init: the first step size.
        safety, exponent: the step-size controller h <- safety h E^(-exponent).
        max_attempts: a SolverError past this many attempts (loosen rtol / atol or raise it).
        denoise: end with Tweedie's denoiser at t_eps (one more NFE).
        generator: seeds the Brownian path.
        callback: callback(i, t_i, x_i) on the state after each accepted step (and at i = 0).
        return_trajectory: keep the states at the accepted times.

    Returns:
        SampleResult with x (B, *D), nfe = 2 x attempts (+ 1 with denoise), and ts the accepted
        times (T first).

    Raises:
        SolverError: the solve took more than max_attempts attempts, or its state became
            non-finite (naming the samples and the time reached).
    """
    x_T = initial_state(sde, x_T, generator)
    for name, v in (("rtol", rtol), ("atol", atol), ("h_init", h_init)):
        check_number(name, v)
    check_int("max_attempts", max_attempts)
    ends = SDEGrid(sde, torch.tensor([sde.T, t_eps], dtype=torch.float64))  # checks t_eps
    score, log = CountingScore(score_fn), StepLog(return_trajectory, callback)
    x, nd, b = x_T, x_T.ndim, x_T.shape[0]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))
    bm = torchsde.BrownianInterval(t0=t_eps, t1=sde.T, size=tuple(x.shape), dtype=x.dtype,
                                   device=x.device, entropy=seed, tol=1e-12)

    def increment(x: Tensor, t: float, h: float, dw: Tensor) -> Tensor:
        t_vec = torch.full((b,), t, dtype=x.dtype, device=x.device)
        mu = sde.reverse_drift(x, t_vec, score(x, t_vec), check=False)
        return -h * mu + append_dims(sde.diffusion(t_vec, check=False), nd) * dw

    t, h, x_prev, attempts = sde.T, min(h_init, sde.T - t_eps), x, 0
    err = x.new_zeros(b)  # the last attempt's error per sample
    log.record(0, t, x)
    while t > t_eps:
        attempts += 1
        if attempts > max_attempts:
            samples = (err > 1).nonzero().flatten().tolist()
            raise SolverError(
                f"adaptive_sde gave up after max_attempts = {max_attempts} attempts at t = "
                f"{t:.6g} (step {h:.3g}), held back by {describe_samples(samples, b)}; loosen "
                f"rtol = {rtol} / atol = {atol} or raise max_attempts", samples=samples, t=t,
                setting="rtol")
        t_next = max(t - h, t_eps)
        dw = bm(t_next, t)
        k1 = increment(x, t, h, dw)
        k2 = increment(x + k1, t_next, h, dw)
        x_em = x + k1
        delta = torch.maximum(rtol * torch.maximum(x_em.abs(), x_prev.abs()),
                              torch.full_like(x, atol))
        err = (0.5 * (k2 - k1) / delta).flatten(1).pow(2).mean(1).sqrt()  # (B,)
        worst = err.max().item()
        if not math.isfinite(worst):
            samples = nonfinite_samples(k2 - k1)
            raise SolverError(
                f"adaptive_sde's state became non-finite between t = {t:.6g} and {t_next:.6g} "
                f"in {describe_samples(samples, b)}: check the model near this time",
                samples=samples, t=t, setting=None)
        if worst <= 1:
            x, x_prev, t = x + 0.5 * (k1 + k2), x_em, t_next
            log.record(len(log.times), t, x)
        h = min(t - t_eps, safety * h * max(worst, 1e-10) ** -exponent)
    if denoise:
        x = ends.x0_from_score(x, score(x, ends.times_like(x)[1].expand(b)), 1)
    return log.result(x, score.nfe, setting="rtol")
