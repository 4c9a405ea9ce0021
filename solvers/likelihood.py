"""Exact log-likelihoods through the probability-flow ODE, with confidence intervals, and bits/dim
of 8-bit images. (The likelihood-weighted bound is `solvers.likelihood_bound.nll_bound`.)

Legend (docs/math.md; N = prod(D) dims per sample, s(x, t) the score function):
    v(x, t) = f(t) x - g(t)^2 / 2 s(x, t)       the probability-flow velocity
    div v(x, t) = f(t) N - g(t)^2 / 2 div s(x, t) only the score's divergence is computed
    log p_{t_eps}(x) = log pi(x(T)) + int_{t_eps}^T div v(x(t), t) dt,   x(t_eps) = x

The state (x, Delta) with dDelta/dt = div v is integrated by torchdiffeq from t_eps to T in one
batched solve (in log-SNR time when the SDE's coefficients jump in t, see `solvers.clock`);
z = x(T) is the latent and NLL = -(log pi(z) + Delta(T)) in nats. The NLL is that of
the model's time-t_eps marginal, the density the ODE defines; with the exact score and the exact
p_T as pi it is -log p_{t_eps}(x). The augmented field and the two error controls (per sample, or
score_sde_pytorch's batch as one vector) are in `solvers.likelihood_flow`. With method="unipc" the
same z and Delta(T) come from a fixed log-SNR grid instead, UniPC for x and a quadrature in
log-SNR for Delta (`solvers.likelihood_grid`): steps + 1 evaluations, no tolerance.

Error bars (P >= 2 Hutchinson probes). Redrawn at every evaluation (`redraw_probes`, see
`solvers.likelihood_flow`), each probe column is a sum of many independent node errors, close to
normal, so the P estimates' spread gives the standard error and Student's t with P - 1 degrees of
freedom the interval. Held fixed through the solve, a probe's estimate is sum_i c_i with
c_i = v_i (A^T v)_i, A the time-integrated Jacobian term; c_i has mean A_ii and variance
sum_{j != i} A_ji^2, so 2 sum_i var_probes(c_i) estimates the variance of an estimate,
2 |offdiag A|_F^2 (exact for a symmetric A, the Hessian of a log-density; larger otherwise), from
N (P - 1) terms rather than the P - 1 of the estimates' own spread, which a dominant direction of A
leaves near zero. The fixed probes' intervals use the critical values of `solvers.confidence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor

from score_sde.sde_lib import (
    SDE,
    ScoreFn,
    check_int,
    check_number,
    check_t_eps,
    describe_samples,
    nonfinite_samples,
)
from score_sde.solvers.clock import LogSNRClock
from score_sde.solvers.confidence import critical_value, student_t_critical
from score_sde.solvers.divergence import draw_probes
from score_sde.solvers.likelihood_flow import ERROR_CONTROLS, AugmentedFlow
from score_sde.solvers.likelihood_grid import solve_on_grid
from score_sde.solvers.ode import ADAPTIVE_METHODS, FIXED_METHODS, check_ode_settings, ode_failure

PriorLogp = Callable[[Tensor], Tensor]
DIVERGENCES = ("exact", "hutchinson")
GRID_METHODS = ("unipc",)  # fixed log-SNR grids (`solvers.likelihood_grid`)
STATE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LikelihoodResult:
    """The output of `log_likelihood`.

    Attributes:
        nll: (B,) negative log-likelihood in nats, -log p_{t_eps}(x) under the model (averaged over
            the probes for Hutchinson).
        z: (B, *D) the latent x(T) the flow maps x to.
        nfe: ODE function evaluations (each one score evaluation on the whole batch, plus the
            vector-Jacobian products the divergence takes).
        stderr: (B,) standard error of `nll` over the Hutchinson probes (probes > 1, from the
            probes' per-coordinate terms, module doc), else None.
        probes: Hutchinson probes per point (0 for the exact divergence).
        redrawn: the probes were redrawn at every evaluation (stderr from their spread).
    """

    nll: Tensor
    z: Tensor
    nfe: int
    stderr: Tensor | None = None
    probes: int = 0
    redrawn: bool = False

    def interval(self, level: float = 0.95) -> tuple[Tensor, Tensor]:
        """(lo, hi), each (B,): per point, an interval that holds the NLL the solve would give
        with the exact divergence with probability `level` over the probes.

        nll -+ c stderr: with redrawn probes c is Student's t critical value with probes - 1
        degrees of freedom; with fixed probes c = `solvers.confidence.critical_value(probes,
        level)`, exact when one direction dominates the estimator's variance (coverage on Gaussian
        mixtures: bench/README.md). The solver's own error (set by rtol, atol, or by steps on a
        grid) is not included: with redrawn probes it is as large as their noise at loose
        tolerances (64-D: 89.5-92.4% at rtol 1e-3), so tighten rtol for intervals. With the
        exact divergence the interval is (nll, nll).

        Raises:
            ValueError: one Hutchinson probe (no spread to measure) or error_bars=False, or level
                outside (0, 1).
        """
        return self._interval(self.nll, self.stderr, self._dof, level)

    def mean_interval(self, level: float = 0.95) -> tuple[float, float]:
        """(lo, hi) around nll.mean(), the data set's mean NLL, with probability `level` over the
        probes: the points' errors are independent, so the standard error is
        sqrt(sum stderr^2) / B and the critical value that of `interval` with its degrees of
        freedom (P - 1 redrawn, P fixed) times the effective number of points
        (sum stderr^2)^2 / sum stderr^4.

        Raises:
            ValueError: as `interval`.
        """
        mean = self.nll.mean().reshape(1)
        if self.stderr is None:
            lo, hi = self._interval(mean, None, 0, level)
            return lo.item(), hi.item()
        var = self.stderr.double().pow(2)
        points = (var.sum() ** 2 / var.pow(2).sum()).item() if var.sum() > 0 else 1.0
        se = (var.sum().sqrt() / len(var)).reshape(1).to(mean)
        lo, hi = self._interval(mean, se, self._dof * points, level)
        return lo.item(), hi.item()

    @property
    def _dof(self) -> int:
        return self.probes - 1 if self.redrawn else self.probes

    def _interval(self, center: Tensor, se: Tensor | None, dof: float, level: float
                  ) -> tuple[Tensor, Tensor]:
        if self.probes == 0:  # the exact divergence: no estimator noise
            critical_value(1.0, level)  # checks level
            return center.clone(), center.clone()
        if se is None:
            raise ValueError("interval needs probes >= 2 and error_bars=True (one Hutchinson "
                             "probe has no spread to measure); solve with probes=2 or more")
        c = student_t_critical(dof, level) if self.redrawn else critical_value(dof, level)
        half = c * se
        return center - half, center + half


@dataclass
class BitsPerDimResult:
    """The output of `bits_per_dim`.

    Attributes:
        bpd: (B,) bits per dim, an upper bound on -log2 P(image) / N averaged over the draws.
        nll: (B,) nats of the dequantized images in [-1, 1] coordinates, averaged over the draws.
        nfe: ODE function evaluations of the one solve over all draws.
        stderr: (B,) standard error of `bpd` over the dequantization draws (dequant_draws > 1), or
            over the Hutchinson probes for one draw; None if neither is random.
    """

    bpd: Tensor
    nll: Tensor
    nfe: int
    stderr: Tensor | None = None


# -- checks -------------------------------------------------------------------------------------
def check_batch(x: Tensor, name: str = "x") -> None:
    """Check x is a finite float32/float64 tensor of shape (B, *D), B >= 1, D non-empty.

    Raises:
        ValueError: naming the parameter, the bad value and what is expected.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, *D), got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"{name} must have shape (B, *D) with B >= 1 and at least one event "
                         f"dim, got {tuple(x.shape)}")
    bad = nonfinite_samples(x)
    if bad:
        raise ValueError(f"{name} has non-finite values in {describe_samples(bad, x.shape[0])}")


def prior_log_prob(prior_logp: PriorLogp | None, sde: SDE, z: Tensor) -> Tensor:
    """log pi(z) (B,) by `prior_logp`, default the SDE's prior, checked for its shape."""
    logp = (sde.prior_logp if prior_logp is None else prior_logp)(z)
    if not isinstance(logp, Tensor) or logp.shape != (z.shape[0],):
        raise ValueError(f"prior_logp must map z of shape {tuple(z.shape)} to ({z.shape[0]},), "
                         f"got {getattr(logp, 'shape', type(logp).__name__)}")
    return logp


def _state_dtype(state_dtype: torch.dtype | str | None, x: Tensor) -> torch.dtype:
    if state_dtype is None:
        return x.dtype
    dtype = STATE_DTYPES.get(state_dtype, state_dtype) if isinstance(state_dtype, str) \
        else state_dtype
    if dtype not in (torch.float32, torch.float64) or dtype.itemsize < x.dtype.itemsize:
        raise ValueError(f"state_dtype must be None (x's dtype), float32 or float64 and no "
                         f"narrower than x ({x.dtype}), got {state_dtype!r}")
    return dtype


# -- the likelihood -----------------------------------------------------------------------------
def log_likelihood(sde: SDE, score_fn: ScoreFn, x: Tensor, *, divergence: str = "exact",
                   probes: int = 1, redraw_probes: bool | None = None, error_bars: bool = True,
                   noise: str = "rademacher",
                   method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, t_eps: float = 1e-5,
                   error_control: str = "per_sample",
                   state_dtype: torch.dtype | str | None = None,
                   prior_logp: PriorLogp | None = None, generator: torch.Generator | None = None,
                   chunk_size: int | None = None, max_steps: int = 10_000,
                   step_size: float | None = None, steps: int = 32, order: int = 4
                   ) -> LikelihoodResult:
    """Negative log-likelihood of x under the probability-flow ODE of (sde, score_fn), in nats.

    Args:
        sde: the forward SDE.
        score_fn: s(x, t) -> like x, with x (B, *D) and t (B,); evaluated per sample.
        x: (B, *D) float32 or float64 data, treated as a sample at time t_eps.
        divergence: "exact" (N vmapped vector-Jacobian products per evaluation) or "hutchinson"
            (one per probe; unbiased, for large N).
        probes: Hutchinson probes per sample; with probes > 1 their estimates are averaged, and
            `stderr` and `interval` report the error.
        redraw_probes: draw the probes afresh at every evaluation: the nodes' errors average out
            instead of one probe's error lasting the whole solve. In a torchdiffeq solve the
            tolerance then bounds the estimator's noise too (steps shrink until it is within
            rtol, atol: cheap at loose tolerances, many evaluations at tight ones;
            `solvers.likelihood_flow`). False holds them fixed through the solve
            (score_sde_pytorch's and FFJORD's estimator: its noise does not shrink with the
            tolerance). None (the default): redrawn with method="unipc", whose grid does not
            depend on them, fixed otherwise.
        error_bars: with probes > 1, report `stderr`: free with redrawn probes (their spread);
            with fixed probes it integrates their per-coordinate terms (P * B * N more state:
            1.2-1.3x the CPU time at 16 probes in 64-D, 1.5-2.5x in 3072-D, bench/README.md).
            False keeps only the averaged estimate (stderr None).
        noise: Hutchinson probe distribution, "rademacher" or "gaussian".
        method: a torchdiffeq method (`solvers.ode.ADAPTIVE_METHODS` or `FIXED_METHODS`):
            adaptive ("dopri5", ...) or fixed-step (needs step_size); or "unipc": `steps` steps
            uniform in log-SNR, UniPC for the path and a 4th-order quadrature in log-SNR for the
            divergence (`solvers.likelihood_grid`): steps + 1 evaluations and no error control,
            the cheapest route to a given mean error on trained networks (bench/README.md); a
            point whose path runs between modes can need far more steps than the rest (compare
            two step counts; the adaptive solve bounds every point).
        rtol: relative tolerance of the adaptive solver.
        atol: absolute tolerance of the adaptive solver.
        t_eps: the ODE runs from t_eps to T (log p_0 is singular for VP as t -> 0).
        error_control: "per_sample" (every sample's x and log-density within tolerance) or
            "batch" (the RMS over the batch as one flat vector, score_sde_pytorch's semantics:
            fewer steps, a looser log-density); see `solvers.likelihood_flow`.
        state_dtype: dtype of the ODE state (x, the divergence integral) and of the step control,
            e.g. torch.float64 (or "float64") with float32 data and model: the score still sees
            x's dtype. Default x's dtype.
        prior_logp: log pi(z), (B, *D) -> (B,); default `sde.prior_logp`. Pass the exact log p_T
            to remove the prior mismatch.
        generator: source of the Hutchinson probes.
        chunk_size: basis vectors per vmapped batch of the exact divergence (bounds its memory,
            chunk_size * B * N elements; default keeps a chunk under 2^24 elements).
        max_steps: adaptive steps allowed before the solve gives up.
        step_size: the step of a torchdiffeq fixed-step method.
        steps: the grid steps of method="unipc".
        order: UniPC's order with method="unipc", 1-4 (empirical global order of the NLL: about
            the order, tests/solvers/test_likelihood_grid.py).

    Returns:
        LikelihoodResult(nll (B,), z (B, *D) in the state's dtype, nfe, stderr (B,) or None,
        probes), with `interval(level)` and `mean_interval(level)`.

    Raises:
        ValueError: bad input (shape, dtype, non-finite x, unknown names, bad settings).
        SolverError: the solve hit max_steps or its step underflowed (names the sample that set
            the step, the time and the setting to change), or score_fn returned non-finite values.
    """
    check_batch(x)
    check_t_eps(sde, t_eps)
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if divergence == "exact" and probes != 1:
        raise ValueError(f"probes only applies to divergence='hutchinson', got probes={probes!r}"
                         " with divergence='exact'")
    if error_control not in ERROR_CONTROLS:
        raise ValueError(f"error_control must be one of {ERROR_CONTROLS}, got {error_control!r}")
    dtype = _state_dtype(state_dtype, x)
    if method not in GRID_METHODS:  # solve_on_grid checks steps and order
        if method not in ADAPTIVE_METHODS + FIXED_METHODS:
            known = ADAPTIVE_METHODS + FIXED_METHODS + GRID_METHODS
            raise ValueError(f"method must be one of {known}, got {method!r}")
        check_ode_settings(method, rtol, atol, max_steps)
    if method in FIXED_METHODS:
        check_number("step_size (required by fixed-step methods)", step_size)

    with torch.no_grad():
        x = x.detach()
        probe = (draw_probes(x, probes, noise, generator=generator)
                 if divergence == "hutchinson" else None)
        if redraw_probes is None:
            redraw_probes = method in GRID_METHODS
        redraw = probe is not None and redraw_probes
        per_coordinate = probe is not None and probes > 1 and error_bars and not redraw
        flow = AugmentedFlow(sde, score_fn, x, t_eps, probe, chunk_size,
                             per_coordinate=per_coordinate, error_control=error_control,
                             redraw=redraw, noise=noise, generator=generator)
        if method in GRID_METHODS:
            z, delta, coords = solve_on_grid(flow, x.to(dtype), steps=steps, order=order)
        else:
            z, delta, coords = _solve_torchdiffeq(flow, x.to(dtype), method=method, rtol=rtol,
                                                  atol=atol, max_steps=max_steps,
                                                  step_size=step_size)
        nlls = -(prior_log_prob(prior_logp, sde, z)[:, None] + delta)  # (B, P)
        stderr = None
        if per_coordinate:  # module doc: 2 sum_i var_probes(c_i) / P
            stderr = (2 * coords.var(0).sum(-1) / probes).sqrt()
        elif redraw and probes > 1 and error_bars:
            stderr = nlls.std(1) / math.sqrt(probes)
        return LikelihoodResult(nll=nlls.mean(1), z=z, nfe=flow.nfe, stderr=stderr,
                                probes=0 if probe is None else probes, redrawn=redraw)


def _solve_torchdiffeq(flow: AugmentedFlow, x: Tensor, *, method: str, rtol: float, atol: float,
                       max_steps: int, step_size: float | None
                       ) -> tuple[Tensor, Tensor, Tensor | None]:
    """The flow from t_eps to T by torchdiffeq (x in the state's dtype): (z (B, *D), Delta (B, P),
    the per-coordinate integrals (P, B, N) or None)."""
    sde, b = flow.sde, x.shape[0]
    ts = torch.tensor([flow.t_lo, sde.T], dtype=x.dtype, device=x.device)
    func = flow
    if method in ADAPTIVE_METHODS:
        if not sde.smooth_coefficients:  # beta jumps in t: integrate in log-SNR time
            clock = LogSNRClock(sde, flow.t_lo, sde.T)
            func, ts = clock.field(flow), clock.u(ts)
        options = {"norm": flow.norm, "max_num_steps": max_steps,
                   "step_t": ts[1:].to(torch.float64)}  # stop exactly at T, never beyond
    else:
        options = {"step_size": step_size}
    probes = 1 if flow.probes is None else len(flow.probes)
    state0 = (x, x.new_zeros(b, probes))
    if flow.per_coordinate:
        state0 += (x.new_zeros(probes, b, x[0].numel()),)
    try:
        solution = torchdiffeq.odeint(func, state0, ts, rtol=rtol, atol=atol, method=method,
                                      options=options)
    except AssertionError as err:
        failure = ode_failure(err, what="the likelihood's probability-flow ODE solve",
                              t=float(flow.t_last), samples=[int(flow.worst)], batch=b,
                              rtol=rtol, atol=atol, max_steps=max_steps)
        if failure is None:
            raise
        raise failure from None
    return (solution[0][-1], solution[1][-1],
            solution[2][-1] if flow.per_coordinate else None)


# -- bits per dim -------------------------------------------------------------------------------
def dequantize(x: Tensor, *, draws: int = 1, generator: torch.Generator | None = None,
               check: bool = True) -> Tensor:
    """Uniformly dequantize 8-bit images scaled to [-1, 1].

    An image with levels k in {0, ..., 255} is x = k / 127.5 - 1 (torchvision's [0, 1] times 2
    minus 1). Level k owns the cell [k/128 - 1, (k+1)/128 - 1) of width 1/128 per dim, so the 256
    cells tile [-1, 1); a draw is y = (k + u) / 128 - 1 with u ~ U[0, 1)^N.

    Args:
        x: (B, *D) images on the 8-bit grid in [-1, 1].
        draws: dequantization draws per image.
        generator: source of u.
        check: check that x is finite, in [-1, 1] and on the 8-bit grid (host syncs); a training
            loop passes False.

    Returns:
        (draws, B, *D) dequantized images.

    Raises:
        ValueError: x lies outside [-1, 1] or off the 8-bit grid (e.g. already dequantized).
    """
    check_int("dequant_draws", draws)
    levels = (x + 1) * 127.5
    k = levels.round()
    if check:
        check_batch(x)
        lo, hi = x.min().item(), x.max().item()
        if lo < -1 or hi > 1:
            raise ValueError(f"x must be 8-bit images scaled to [-1, 1], got values in "
                             f"[{lo:.6g}, {hi:.6g}]")
        off = (levels - k).abs().max().item()
        if off > 1e-3:
            raise ValueError(f"x must lie on the 8-bit grid k / 127.5 - 1, k = 0..255; a value is "
                             f"{off:.3g} levels off it (pass quantized images, not dequantized "
                             "ones)")
    u = torch.rand((draws, *x.shape), generator=generator, dtype=x.dtype, device=x.device)
    return (k + u) / 128 - 1


def bits_per_dim(sde: SDE, score_fn: ScoreFn, x: Tensor, *, dequant_draws: int = 1,
                 generator: torch.Generator | None = None, **likelihood_kwargs
                 ) -> BitsPerDimResult:
    """Bits per dim of 8-bit images scaled to [-1, 1], with uniform dequantization.

    Change of variables: the discrete model P(k) = int_{cell k} p(y) dy over cells of volume
    128^-N in [-1, 1] coordinates (see `dequantize`); writing y = (k + u)/128 - 1 and Jensen,
        -log P(k) = -log E_u[p(y) 128^-N] <= E_u[-log p(y)] + N log 128,
    so bpd = (E_u[-log p(y)] / N + log 128) / log 2, the formula of docs/math.md; no further offset.

    Args:
        sde, score_fn: as for `log_likelihood`.
        x: (B, *D) images on the grid k / 127.5 - 1, k = 0..255.
        dequant_draws: u draws per image, averaged (solved together as one batch of draws * B).
        generator: source of the dequantization noise (and of Hutchinson probes).
        **likelihood_kwargs: passed to `log_likelihood` (divergence, probes, rtol, ...).

    Returns:
        BitsPerDimResult(bpd (B,), nll (B,), nfe, stderr (B,) or None).
    """
    y = dequantize(x, draws=dequant_draws, generator=generator)
    b, n = x.shape[0], x[0].numel()
    res = log_likelihood(sde, score_fn, y.flatten(0, 1), generator=generator, **likelihood_kwargs)
    nll = res.nll.view(dequant_draws, b)
    bpd = (nll / n + math.log(128)) / math.log(2)
    if dequant_draws > 1:
        stderr = bpd.std(0) / math.sqrt(dequant_draws)
    else:
        stderr = None if res.stderr is None else res.stderr / (n * math.log(2))
    return BitsPerDimResult(bpd=bpd.mean(0), nll=nll.mean(0), nfe=res.nfe, stderr=stderr)
