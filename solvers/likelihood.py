"""Exact log-likelihoods through the probability-flow ODE, bits/dim of 8-bit images, and the
likelihood-weighted variational bound (`nll_bound`) that the papers report beside the ODE's value.

Legend (docs/math.md; N = prod(D) dims per sample, s(x, t) the score function):
    v(x, t) = f(t) x - g(t)^2 / 2 s(x, t)       the probability-flow velocity
    div v(x, t) = f(t) N - g(t)^2 / 2 div s(x, t) only the score's divergence is computed
    log p_{t_eps}(x) = log pi(x(T)) + int_{t_eps}^T div v(x(t), t) dt,   x(t_eps) = x

The state (x, Delta) with dDelta/dt = div v is integrated by torchdiffeq from t_eps to T in one
batched solve (in log-SNR time when the SDE's coefficients jump in t, see `solvers.clock`);
z = x(T) is the latent and NLL = -(log pi(z) + Delta(T)) in nats. The NLL is that of
the model's time-t_eps marginal, the density the ODE defines; with the exact score and the exact
p_T as pi it is -log p_{t_eps}(x).

Error control is per sample: a step is accepted when, for every sample, both the RMS of its x error
and that of its Delta error are within atol + rtol |y|, so a sample's accuracy does not depend on
the batch it is in and the log-density is not drowned by the N components of x.
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
    SDEGrid,
    append_dims,
    check_int,
    check_number,
    check_t_eps,
    describe_samples,
    nonfinite_samples,
    sample_time,
    time_density,
)
from score_sde.solvers.clock import LogSNRClock
from score_sde.solvers.divergence import draw_probes, exact_divergence, hutchinson_divergence
from score_sde.solvers.errors import SolverError
from score_sde.solvers.ode import ADAPTIVE_METHODS, check_ode_settings, ode_failure

PriorLogp = Callable[[Tensor], Tensor]
DIVERGENCES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """The output of `log_likelihood`.

    Attributes:
        nll: (B,) negative log-likelihood in nats, -log p_{t_eps}(x) under the model (averaged over
            the probes for Hutchinson).
        z: (B, *D) the latent x(T) the flow maps x to.
        nfe: ODE function evaluations (each one score evaluation on the whole batch, plus the
            vector-Jacobian products the divergence takes).
        stderr: (B,) standard error of `nll` over the Hutchinson probes (probes > 1), else None.
    """

    nll: Tensor
    z: Tensor
    nfe: int
    stderr: Tensor | None = None


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
def _check_batch(x: Tensor, name: str = "x") -> None:
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


def _prior_log_prob(prior_logp: PriorLogp | None, sde: SDE, z: Tensor) -> Tensor:
    logp = (sde.prior_logp if prior_logp is None else prior_logp)(z)
    if not isinstance(logp, Tensor) or logp.shape != (z.shape[0],):
        raise ValueError(f"prior_logp must map z of shape {tuple(z.shape)} to ({z.shape[0]},), "
                         f"got {getattr(logp, 'shape', type(logp).__name__)}")
    return logp


# -- the augmented probability-flow ODE ---------------------------------------------------------
class _AugmentedFlow:
    """torchdiffeq's f(t, (x, Delta)) -> (v, div v), counting evaluations; also the per-sample
    error norm, remembering which sample asked for the smallest step."""

    def __init__(self, sde: SDE, score_fn: ScoreFn, x: Tensor, t_eps: float,
                 probes: Tensor | None, chunk_size: int | None):
        self.sde, self.score_fn, self.probes, self.chunk_size = sde, score_fn, probes, chunk_size
        self.t_lo, self.dtype, self.n = t_eps, x.dtype, x[0].numel()
        self.nfe, self.t_last = 0, t_eps
        self.worst: Tensor | int = 0  # the sample that set the last step (read after a failure)

    def __call__(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        t = t.to(self.dtype).clamp(self.t_lo, self.sde.T)  # the solver's float64 t may pass T by an ulp
        self.nfe, self.t_last = self.nfe + 1, t
        t_b = t.expand(x.shape[0])

        def score_at(y: Tensor) -> Tensor:
            return self.score_fn(y, t_b)

        if self.probes is None:
            score, div_s = exact_divergence(score_at, x, chunk_size=self.chunk_size)
            div_s = div_s[:, None]
        else:
            score, div_s = hutchinson_divergence(score_at, x, self.probes)
            div_s = div_s.T
        bad = nonfinite_samples(score)  # one host sync per evaluation, as the step control's
        if bad:
            raise SolverError(f"score_fn returned non-finite values at t = {t.item():.6g} in "
                              f"{describe_samples(bad, x.shape[0])}; check the model at this "
                              "time", samples=bad, t=t.item(), setting=None)
        velocity = self.sde.probability_flow_drift(x, t_b, score, check=False)
        f, g2 = self.sde.drift_coef(t, check=False), self.sde.diffusion(t, check=False) ** 2
        return velocity, f * self.n - 0.5 * g2 * div_s  # div v = f N - g^2 / 2 div s

    def norm(self, scaled_error: tuple[Tensor, Tensor]) -> Tensor:
        """max over samples of max(RMS of x error, RMS of Delta error), both already / tolerance."""
        ex, ed = scaled_error
        per_sample = torch.maximum(ex.flatten(1).pow(2).mean(1).sqrt(), ed.pow(2).mean(1).sqrt())
        ratio, self.worst = per_sample.max(0)  # a tensor: read only after a failure
        return ratio


def log_likelihood(sde: SDE, score_fn: ScoreFn, x: Tensor, *, divergence: str = "exact",
                   probes: int = 1, noise: str = "rademacher", method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, t_eps: float = 1e-5,
                   prior_logp: PriorLogp | None = None, generator: torch.Generator | None = None,
                   chunk_size: int | None = None, max_steps: int = 10_000,
                   step_size: float | None = None) -> LikelihoodResult:
    """Negative log-likelihood of x under the probability-flow ODE of (sde, score_fn), in nats.

    Args:
        sde: the forward SDE.
        score_fn: s(x, t) -> like x, with x (B, *D) and t (B,); evaluated per sample.
        x: (B, *D) float32 or float64 data, treated as a sample at time t_eps.
        divergence: "exact" (N vmapped vector-Jacobian products per evaluation) or "hutchinson"
            (one per probe; unbiased, for large N).
        probes: Hutchinson probes per sample, drawn once per solve and held fixed through it; with
            probes > 1 their estimates are averaged and `stderr` reports the spread.
        noise: Hutchinson probe distribution, "rademacher" or "gaussian".
        method: a torchdiffeq method (`solvers.ode.ADAPTIVE_METHODS` or `FIXED_METHODS`):
            adaptive ("dopri5", ...) or fixed-step (needs step_size).
        rtol: relative tolerance of the adaptive solver, per sample.
        atol: absolute tolerance of the adaptive solver, per sample.
        t_eps: the ODE runs from t_eps to T (log p_0 is singular for VP as t -> 0).
        prior_logp: log pi(z), (B, *D) -> (B,); default `sde.prior_logp`. Pass the exact log p_T
            to remove the prior mismatch.
        generator: source of the Hutchinson probes.
        chunk_size: basis vectors per vmapped batch of the exact divergence (bounds its memory,
            chunk_size * B * N elements; default keeps a chunk under 2^24 elements).
        max_steps: adaptive steps allowed before the solve gives up.
        step_size: the step of a fixed-step method.

    Returns:
        LikelihoodResult(nll (B,), z (B, *D), nfe, stderr (B,) or None).

    Raises:
        ValueError: bad input (shape, dtype, non-finite x, unknown names, bad settings).
        SolverError: the solve hit max_steps or its step underflowed (names the sample that set
            the step, the time and the setting to change), or score_fn returned non-finite values.
    """
    _check_batch(x)
    check_t_eps(sde, t_eps)
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if divergence == "exact" and probes != 1:
        raise ValueError(f"probes only applies to divergence='hutchinson', got probes={probes!r}"
                         " with divergence='exact'")
    check_ode_settings(method, rtol, atol, max_steps)
    if method not in ADAPTIVE_METHODS:
        check_number("step_size (required by fixed-step methods)", step_size)

    with torch.no_grad():
        x = x.detach()
        b = x.shape[0]
        probe = (draw_probes(x, probes, noise, generator=generator)
                 if divergence == "hutchinson" else None)
        flow = _AugmentedFlow(sde, score_fn, x, t_eps, probe, chunk_size)
        ts = torch.tensor([t_eps, sde.T], dtype=x.dtype, device=x.device)
        func = flow
        if method in ADAPTIVE_METHODS:
            if not sde.smooth_coefficients:  # beta jumps in t: integrate in log-SNR time
                clock = LogSNRClock(sde, t_eps, sde.T)
                func, ts = clock.field(flow), clock.u(ts)
            options = {"norm": flow.norm, "max_num_steps": max_steps,
                       "step_t": ts[1:].to(torch.float64)}  # stop exactly at T, never beyond
        else:
            options = {"step_size": step_size}
        state0 = (x, x.new_zeros(b, 1 if probe is None else probes))
        try:
            xs, deltas = torchdiffeq.odeint(func, state0, ts, rtol=rtol, atol=atol,
                                            method=method, options=options)
        except AssertionError as err:
            failure = ode_failure(err, what="the likelihood's probability-flow ODE solve",
                                  t=float(flow.t_last), samples=[int(flow.worst)], batch=b,
                                  rtol=rtol, atol=atol, max_steps=max_steps)
            if failure is None:
                raise
            raise failure from None
        z, delta = xs[-1], deltas[-1]
        nlls = -(_prior_log_prob(prior_logp, sde, z)[:, None] + delta)  # (B, P)
        stderr = nlls.std(1) / math.sqrt(nlls.shape[1]) if nlls.shape[1] > 1 else None
        return LikelihoodResult(nll=nlls.mean(1), z=z, nfe=flow.nfe, stderr=stderr)


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
        _check_batch(x)
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


# -- the likelihood-weighted variational bound --------------------------------------------------
@dataclass
class BoundResult:
    """The output of `nll_bound`.

    Attributes:
        bound: (B,) the Monte-Carlo estimate of the bound, in nats.
        stderr: (B,) its standard error over the time draws.
        nfe: score evaluations per sample (2 per time draw: an antithetic pair).
    """

    bound: Tensor
    stderr: Tensor
    nfe: int


def nll_bound(sde: SDE, score_fn: ScoreFn, x: Tensor, *, time_samples: int = 256,
              t_eps: float = 1e-5, importance: bool = True, prior_logp: PriorLogp | None = None,
              generator: torch.Generator | None = None, chunk_size: int | None = None
              ) -> BoundResult:
    """The likelihood-weighted bound of Song, Durkan, Murray, Ermon (2021) on the NLL, in nats.

    What it bounds: -log p^SDE(x), the density at x of the model's time-t_eps marginal when the
    reverse SDE dx = [f x - g^2 s(x, t)] dt + g dw_bar runs from pi at T down to t_eps; the SDE
    twin of the density `log_likelihood` computes by the ODE, and equal to it, -log p_{t_eps}(x),
    for the exact score with pi = p_T. With s = t_eps, x_t = a_{t|s} x + sigma_{t|s} z the forward
    process from x at time s (a_{t|s} = alpha_t / alpha_s, sigma_{t|s}^2 = sigma_t^2 - a_{t|s}^2
    sigma_s^2) and N = prod(D), Theorem 2 of the paper (denoising form) reads
        -log p^SDE(x) <= E[-log pi(x_T)] - N log a_{T|s}
                         + 1/2 int_s^T g_t^2 E[ ||s(x_t, t)||^2 + 2 s(x_t, t) . z / sigma_{t|s} ] dt,
    the drift's divergence term int_s^T -div f dt = -N log a_{T|s} in closed form. Conditioning on
    x at t_eps itself covers all of [t_eps, T], so there is no end term left to add (the paper's
    code instead bounds -log p_0 of a model with a Gaussian decoder from t_eps to 0, a different
    density from the ODE's, and pays for it with an extra Jensen term). Averaged over
    data x ~ p_{t_eps} the bound exceeds the entropy by exactly KL(p_T || pi) + 1/2 int_s^T g_t^2
    E ||s - grad log p_t||^2 dt, so it is tight for the exact score and pi = p_T.

    Estimator: t from `sde_lib.sample_time(importance=...)` (uniform in log-SNR: density
    proportional to g^2 / sigma^2), reweighted by `time_density`; z and -z (antithetic) at each t,
    which removes the 1/sigma_{t|s} blow-up of the s . z term as t -> t_eps. The prior term is in
    closed form for the default Gaussian prior, else by the same antithetic draws.

    Args:
        sde, score_fn: as for `log_likelihood`.
        x: (B, *D) float32 or float64 data, treated as a sample at time t_eps.
        time_samples: time draws per sample (each with an antithetic pair of noises).
        t_eps: the lower end of the time integral.
        importance: sample t by importance (True) or uniformly on [t_eps, T].
        prior_logp: log pi(z), (B, *D) -> (B,); default `sde.prior_logp`.
        generator: the source of t and z.
        chunk_size: time draws per score call (the call sees chunk_size * B samples); default
            keeps a call under 2^22 elements.

    Returns:
        BoundResult(bound (B,), stderr (B,), nfe).
    """
    _check_batch(x)
    check_t_eps(sde, t_eps)
    check_int("time_samples", time_samples, 2)
    b, n, dt = x.shape[0], x[0].numel(), x.dtype
    if chunk_size is None:
        chunk_size = max(1, min(time_samples, 2**22 // x.numel()))
    check_int("chunk_size", chunk_size)

    def kernel(t: Tensor) -> tuple[Tensor, Tensor]:
        """a_{t|s}, sigma_{t|s} from s = t_eps, in float64; sigma_{t|s} > 0 at t = s too."""
        a, sig = sde.transition(t_eps, t, check=False)
        return a, sig.clamp_min(torch.finfo(dt).tiny ** 0.5)

    with torch.no_grad():
        x = x.detach()
        ends = SDEGrid(sde, torch.tensor([sde.T, t_eps], dtype=torch.float64))
        a_T, sig_T = ends.kernel_scale.item(), ends.kernel_std.item()
        drift_term = -n * math.log(a_T)
        if prior_logp is None:  # E[-log N(a x + sigma z; 0, p^2 I)] exactly
            prior = -sde.prior_logp(a_T * x) + n * sig_T**2 / (2 * sde.prior_std**2)
        values = []
        for start in range(0, time_samples, chunk_size):
            c = min(chunk_size, time_samples - start)
            t = sample_time(sde, c * b, t_eps=t_eps, importance=importance, generator=generator,
                            dtype=torch.float64, device=x.device)
            a, sig = kernel(t)
            weight = sde.diffusion(t, check=False) ** 2 / time_density(
                sde, t, t_eps=t_eps, importance=importance, check=False)
            xc = x.repeat(c, *([1] * (x.ndim - 1)))
            z = torch.randn(xc.shape, generator=generator, dtype=dt, device=x.device)
            mean, sig_b = append_dims(a.to(dt), x.ndim) * xc, append_dims(sig.to(dt), x.ndim)
            tc = t.to(dt)
            s_plus, s_minus = score_fn(mean + sig_b * z, tc), score_fn(mean - sig_b * z, tc)
            if s_plus.shape != xc.shape:
                raise ValueError(f"score_fn must return a tensor shaped like x {tuple(xc.shape)},"
                                 f" got {tuple(s_plus.shape)}")
            sq = 0.5 * (s_plus.flatten(1).pow(2).sum(1) + s_minus.flatten(1).pow(2).sum(1))
            cross = ((s_plus - s_minus) * z).flatten(1).sum(1) / sig.to(dt)
            value = 0.5 * weight.to(dt) * (sq + cross) + drift_term
            if prior_logp is None:
                value = value + prior.repeat(c)
            else:
                z_T = torch.randn(xc.shape, generator=generator, dtype=dt, device=x.device)
                m_T = a_T * xc
                value = value - 0.5 * (_prior_log_prob(prior_logp, sde, m_T + sig_T * z_T)
                                       + _prior_log_prob(prior_logp, sde, m_T - sig_T * z_T))
            values.append(value.view(c, b))
        values = torch.cat(values)
        return BoundResult(bound=values.mean(0), stderr=values.std(0) / math.sqrt(time_samples),
                           nfe=2 * time_samples)
