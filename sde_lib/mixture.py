"""A Gaussian mixture whose density and score are exact at every noise level of a linear SDE.

Under x_t = alpha(t) x_0 + sigma(t) z, component k, N(mu_k, diag(s_k^2)), becomes
N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)), so p_t is again a mixture with the same weights.
That makes it the oracle of this project: samplers, likelihoods and losses are tested against it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib._shapes import append_dims, time_for
from score_sde.sde_lib.base import SDE


class GaussianMixture:
    """Mixture of K Gaussians with diagonal (or isotropic) covariances over events of shape D.

    Args:
        means: (K, *D) component means.
        stds: (K,) isotropic or (K, *D) diagonal component standard deviations, all > 0.
        weights: (K,) non-negative mixture weights (normalised here); default uniform.

    The parameters keep their dtype; every method computes in the dtype of its input x, so
    float64 inputs get float64 answers.
    """

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None):
        means = torch.as_tensor(means)
        if means.ndim < 2 or not means.is_floating_point():
            raise ValueError(f"means must be a float tensor of shape (K, *D), got "
                             f"{tuple(means.shape)} {means.dtype}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
        if stds.ndim == 0:
            stds = stds.expand(k)
        if stds.shape not in ((k,), means.shape):
            raise ValueError(f"stds must have shape (K,) = ({k},) or that of means "
                             f"{tuple(means.shape)}, got {tuple(stds.shape)}")
        if not bool((stds > 0).all()):
            raise ValueError("stds must all be > 0")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if weights.shape != (k,) or not bool((weights >= 0).all()) or not weights.sum() > 0:
            raise ValueError(f"weights must be ({k},) non-negative with a positive sum, got "
                             f"shape {tuple(weights.shape)}")
        self.means = means
        self.stds = append_dims(stds, means.ndim).expand_as(means)  # (K, *D)
        self.weights = weights / weights.sum()
        self.event_shape = means.shape[1:]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _flat(self, x: Tensor) -> Tensor:
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"x must have shape (B, *{tuple(self.event_shape)}), got "
                             f"{tuple(x.shape)}")
        return x.flatten(1)

    # -- moments and sampling --------------------------------------------------------------------
    def mean(self) -> Tensor:
        """The mixture mean, shape D."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def covariance(self) -> Tensor:
        """The mixture covariance of the flattened event, (prod D, prod D)."""
        mu = self.means.flatten(1)
        centred = mu - self.mean().flatten()
        w = self.weights
        return torch.diag((w[:, None] * self.stds.flatten(1) ** 2).sum(0)) + (
            centred.T * w) @ centred

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               return_components: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """n samples (n, *D) (and their component indices (n,) if return_components)."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=self.means.dtype,
                        device=dev)
        x = self.means[k] + self.stds[k] * z
        return (x, k) if return_components else x

    # -- exact densities, clean (t=None) or noised by an SDE -------------------------------------
    def _noised(self, x: Tensor, t: float | Tensor | None, sde: SDE | None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Flattened x (B, N), component means (B, K, N) and variances (B, K, N) of p_t."""
        xf = self._flat(x)
        mu = self.means.flatten(1).to(x)
        var = self.stds.flatten(1).to(x) ** 2
        if (t is None) != (sde is None):
            raise ValueError("pass both t and sde for the noised density, or neither")
        if t is None:
            return xf, mu.expand(xf.shape[0], -1, -1), var.expand(xf.shape[0], -1, -1)
        t = time_for(x, t, sde.T)
        a, s = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
        return xf, a * mu, a**2 * var + s**2

    def component_log_prob(self, x: Tensor, t: float | Tensor | None = None,
                           sde: SDE | None = None) -> Tensor:
        """log(w_k N_k,t(x)) for every component: (B, *D) -> (B, K)."""
        xf, mu, var = self._noised(x, t, sde)
        diff = xf[:, None, :] - mu
        log_n = -0.5 * ((diff**2 / var).sum(-1) + torch.log(var).sum(-1)
                        + xf.shape[1] * math.log(2 * math.pi))
        return torch.log(self.weights.to(x)) + log_n

    def log_prob(self, x: Tensor, t: float | Tensor | None = None,
                 sde: SDE | None = None) -> Tensor:
        """Exact log p_t(x) (log p_0 of the mixture itself if t is None): (B, *D) -> (B,)."""
        return torch.logsumexp(self.component_log_prob(x, t, sde), dim=-1)

    def posterior(self, x: Tensor, t: float | Tensor | None = None,
                  sde: SDE | None = None) -> Tensor:
        """p_t(component k | x): (B, *D) -> (B, K), rows summing to 1."""
        return torch.softmax(self.component_log_prob(x, t, sde), dim=-1)

    def score(self, x: Tensor, t: float | Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """Exact grad_x log p_t(x): (B, *D) -> (B, *D)."""
        xf, mu, var = self._noised(x, t, sde)
        diff = xf[:, None, :] - mu
        log_n = -0.5 * ((diff**2 / var).sum(-1) + torch.log(var).sum(-1))
        resp = torch.softmax(torch.log(self.weights.to(x)) + log_n, dim=-1)  # (B, K)
        return (-(resp[:, :, None] * diff / var).sum(1)).reshape(x.shape)

    def __repr__(self) -> str:
        return (f"GaussianMixture(K={self.num_components}, event_shape="
                f"{tuple(self.event_shape)}, dtype={self.means.dtype})")
