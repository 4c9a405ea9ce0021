"""The likelihood-weighted variational bound of Song, Durkan, Murray, Ermon (2021) on the NLL
(`nll_bound`), the value the papers report beside the probability-flow ODE's exact likelihood."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from score_sde.sde_lib import (
    SDE,
    ScoreFn,
    SDEGrid,
    append_dims,
    check_int,
    check_t_eps,
    sample_time,
    time_density,
)
from score_sde.solvers.likelihood import PriorLogp, check_batch, prior_log_prob


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
    check_batch(x)
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
                value = value - 0.5 * (prior_log_prob(prior_logp, sde, m_T + sig_T * z_T)
                                       + prior_log_prob(prior_logp, sde, m_T - sig_T * z_T))
            values.append(value.view(c, b))
        values = torch.cat(values)
        return BoundResult(bound=values.mean(0), stderr=values.std(0) / math.sqrt(time_samples),
                           nfe=2 * time_samples)
