"""Oracles shared by the sampler tests: Gaussian mixtures with exact scores, and a moment check
whose tolerances come from the sample size."""

from __future__ import annotations

import torch

from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture, SubVPSDE, beta_table

D64 = torch.float64


def make_sdes() -> dict[str, SDE]:
    return {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


def discrete_vp() -> VPSDE:
    """The VP SDE of DDPM's 1000-step table (diffusers' "linear" betas): beta jumps at every knot."""
    return VPSDE.from_betas(beta_table("linear"))


def mixture_2d(dtype: torch.dtype = D64) -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=dtype)
    stds = torch.tensor([[0.4, 0.25], [0.3, 0.6], [0.5, 0.5]], dtype=dtype)
    return GaussianMixture(means, stds, torch.tensor([1.0, 2.0, 1.0], dtype=dtype))


def mixture_nd(dim: int = 16, dtype: torch.dtype = D64) -> GaussianMixture:
    g = torch.Generator().manual_seed(1234)
    means = 1.5 * torch.randn(3, dim, generator=g, dtype=dtype)
    stds = 0.3 + 0.5 * torch.rand(3, dim, generator=g, dtype=dtype)
    return GaussianMixture(means, stds, torch.tensor([0.5, 0.3, 0.2], dtype=dtype))


def exact_score(gm: GaussianMixture, sde: SDE):
    """The exact score of the noised mixture, score_fn(x, t) -> like x, for a batch at one time.

    Equal to `gm.score(x, t, sde)` (tested in test_sampler_oracles.py) but written with matmuls
    over the components, about 10x faster on 10k samples; samplers always call it with t constant
    over the batch.
    """
    mu, s2 = gm.means.flatten(1), gm.stds.flatten(1) ** 2  # (K, d)
    log_w = torch.log(gm.weights)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t0 = t[:1]
        if not bool((t == t0).all()):
            return gm.score(x, t, sde)
        a, s = sde.alpha(t0).to(x), sde.sigma(t0).to(x)
        m, inv_v = a * mu.to(x), 1.0 / (a**2 * s2.to(x) + s**2)  # (K, d)
        xf = x.flatten(1)
        quad = (xf**2) @ inv_v.T - 2 * xf @ (m * inv_v).T + (m**2 * inv_v).sum(1)  # (B, K)
        logits = log_w.to(x) + 0.5 * torch.log(inv_v).sum(1) - 0.5 * quad
        resp = torch.softmax(logits, dim=1)
        return (resp @ (m * inv_v) - xf * (resp @ inv_v)).reshape(x.shape)

    return score_fn


def noised_draw(gm: GaussianMixture, sde: SDE, n: int, t: float, seed: int) -> torch.Tensor:
    """n exact draws from the mixture noised to time t: alpha(t) x0 + sigma(t) z."""
    g = torch.Generator().manual_seed(seed)
    x0 = gm.sample(n, generator=g)
    tt = torch.tensor(t, dtype=x0.dtype)
    return sde.alpha(tt) * x0 + sde.sigma(tt) * torch.randn(x0.shape, generator=g, dtype=x0.dtype)


def mixture_z_scores(x: torch.Tensor, gm: GaussianMixture, sde: SDE, t: float
                     ) -> dict[str, torch.Tensor]:
    """How many standard errors the samples' component masses, means and covariances lie from
    those of the exact noised mixture p_t.

    Uses exact identities under x ~ p_t with responsibilities r_k(x) = p_t(k | x):
        E[r_k] = w_k,  E[r_k x] = w_k m_k,  E[r_k (x - m_k)(x - m_k)^T] = w_k C_k,
    m_k = alpha mu_k, C_k = alpha^2 diag(s_k^2) + sigma^2 I. Each estimate is a sample mean, so its
    standard error is the sample std of its summands / sqrt(n).

    Returns:
        {"mass": (K,), "mean": (K, d), "cov": (K, d, d)} absolute z-scores.
    """
    x = x.to(D64).flatten(1)
    n, d = x.shape
    tt = torch.tensor(t, dtype=D64)
    alpha, sigma = sde.alpha(tt), sde.sigma(tt)
    r = gm.posterior(x.reshape(n, *gm.event_shape), t, sde).to(D64)  # (n, K)
    w = gm.weights.to(D64)
    mu = alpha * gm.means.to(D64).flatten(1)  # (K, d)
    cov = torch.diag_embed(alpha**2 * gm.stds.to(D64).flatten(1) ** 2 + sigma**2)  # (K, d, d)

    def z(summands: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        est, se = summands.mean(0), summands.std(0) / n**0.5
        return (est - exact).abs() / se.clamp_min(1e-12)

    diff = x[:, None, :] - mu  # (n, K, d)
    return {
        "mass": z(r, w),
        "mean": z(r[:, :, None] * x[:, None, :] / w[:, None], mu),
        "cov": z(r[:, :, None, None] * diff[..., :, None] * diff[..., None, :]
                 / w[:, None, None], cov),
    }
