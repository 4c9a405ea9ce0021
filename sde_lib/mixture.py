"""A Gaussian mixture whose density and score are exact at every noise level of a linear SDE.

Under x_t = alpha(t) x_0 + sigma(t) z, component k, N(mu_k, S_k), becomes
N(alpha mu_k, alpha^2 S_k + sigma^2 I), so p_t is again a mixture with the same weights.
That makes it the oracle of this project: samplers, likelihoods and losses are tested against it.

Covariances are diagonal (stds) or full (covs, over the flattened event). A full S_k is kept as its
eigendecomposition S_k = U_k diag(l_k) U_k^T: since alpha^2 S_k + sigma^2 I = U_k diag(alpha^2 l_k +
sigma^2) U_k^T, every noised density is a diagonal Gaussian in the component's own basis, at the cost
of one rotation per component and no factorisation per time. `condition` gives the exact posterior
under a linear-Gaussian measurement, which is again such a mixture.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from score_sde.sde_lib.base import SDE
from score_sde.sde_lib.tensors import append_dims, batch_times, check_int


class GaussianMixture:
    """Mixture of K Gaussians with diagonal, isotropic or full covariances over events of shape D.

    Args:
        means: (K, *D) component means.
        stds: (K,) isotropic or (K, *D) diagonal component standard deviations, all > 0.
        weights: (K,) non-negative mixture weights (normalised here); default uniform.
        covs: instead of stds, (K, N, N) full covariances of the flattened event (N = prod D),
            symmetric positive semi-definite. Singular ones (an exactly observed coordinate) are
            allowed: the noised densities (t > 0) are proper, the clean one is not.

    The parameters keep their dtype; every method computes in the dtype of its input x, so
    float64 inputs get float64 answers.
    """

    def __init__(self, means: Tensor, stds: Tensor | float | None = None,
                 weights: Tensor | None = None, *, covs: Tensor | None = None):
        means = torch.as_tensor(means)
        if means.ndim < 2 or not means.is_floating_point():
            raise ValueError(f"means must be a float tensor of shape (K, *D), got "
                             f"{tuple(means.shape)} {means.dtype}")
        if not bool(torch.isfinite(means).all()):
            raise ValueError("means must be finite")
        k, n = means.shape[0], means[0].numel()
        if (stds is None) == (covs is None):
            raise ValueError("pass exactly one of stds (diagonal) and covs (full covariances)")
        self.stds: Tensor | None = None
        self.basis: Tensor | None = None  # (K, N, N) eigenvectors U_k of full covariances
        if covs is None:
            stds = torch.as_tensor(stds, dtype=means.dtype, device=means.device)
            if stds.ndim == 0:
                stds = stds.expand(k)
            if stds.shape not in ((k,), means.shape):
                raise ValueError(f"stds must have shape (K,) = ({k},) or that of means "
                                 f"{tuple(means.shape)}, got {tuple(stds.shape)}")
            if not bool(((stds > 0) & torch.isfinite(stds)).all()):
                raise ValueError("stds must all be finite and > 0")
            self.stds = append_dims(stds, means.ndim).expand_as(means)  # (K, *D)
            self.variances = self.stds.flatten(1) ** 2  # (K, N)
        else:
            covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
            if covs.shape != (k, n, n):
                raise ValueError(f"covs must have shape (K, N, N) = ({k}, {n}, {n}), got "
                                 f"{tuple(covs.shape)}")
            if not bool(torch.isfinite(covs).all()):
                raise ValueError("covs must be finite")
            covs = (covs + covs.transpose(1, 2)) / 2
            lam, basis = torch.linalg.eigh(covs)
            tol = 1e-10 * lam.abs().amax(-1, keepdim=True).clamp_min(1.0)
            if bool((lam < -tol).any()):
                raise ValueError(f"covs must be positive semi-definite; smallest eigenvalue "
                                 f"{lam.min().item():.3g}")
            self.variances, self.basis = lam.clamp_min(0.0), basis  # (K, N), (K, N, N)
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
        if (weights.shape != (k,) or not bool(((weights >= 0) & torch.isfinite(weights)).all())
                or not weights.sum() > 0):
            raise ValueError(f"weights must be ({k},) finite and non-negative with a positive sum, "
                             f"got shape {tuple(weights.shape)}")
        self.means = means
        self.weights = weights / weights.sum()
        self.event_shape = means.shape[1:]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def covariances(self) -> Tensor:
        """The component covariances of the flattened event, (K, N, N)."""
        if self.basis is None:
            return torch.diag_embed(self.variances)
        return self.basis @ torch.diag_embed(self.variances) @ self.basis.transpose(1, 2)

    def _flat(self, x: Tensor) -> Tensor:
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"x must have shape (B, *{tuple(self.event_shape)}), got "
                             f"{tuple(x.shape)}")
        return x.flatten(1)

    def _to_basis(self, v: Tensor) -> Tensor:
        """(B, K, N) vectors into each component's eigenbasis (identity for diagonal ones)."""
        return v if self.basis is None else torch.einsum("kji,bkj->bki", self.basis.to(v), v)

    def _from_basis(self, v: Tensor) -> Tensor:
        return v if self.basis is None else torch.einsum("kij,bkj->bki", self.basis.to(v), v)

    # -- moments and sampling --------------------------------------------------------------------
    def mean(self) -> Tensor:
        """The mixture mean, shape D."""
        return torch.einsum("k,k...->...", self.weights, self.means)

    def covariance(self) -> Tensor:
        """The mixture covariance of the flattened event, (prod D, prod D)."""
        mu = self.means.flatten(1)
        centred = mu - self.mean().flatten()
        w = self.weights
        return torch.einsum("k,kij->ij", w, self.covariances()) + (centred.T * w) @ centred

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               return_components: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """n samples (n, *D) (and their component indices (n,) if return_components)."""
        check_int("n", n)
        dev = self.means.device
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, self.means[0].numel()), generator=generator, dtype=self.means.dtype,
                        device=dev)
        step = self.variances[k].sqrt() * z
        if self.basis is not None:
            step = torch.einsum("bij,bj->bi", self.basis[k], step)
        x = self.means[k] + step.reshape(n, *self.event_shape)
        return (x, k) if return_components else x

    # -- exact densities, clean (t=None) or noised by an SDE -------------------------------------
    def _noised(self, x: Tensor, t: float | Tensor | None, sde: SDE | None
                ) -> tuple[Tensor, Tensor]:
        """x - (noised) component means in each component's basis (B, K, N), and the noised
        variances there (B, K, N)."""
        xf = self._flat(x)
        mu = self.means.flatten(1).to(x)
        var = self.variances.to(x)
        if (t is None) != (sde is None):
            raise ValueError("pass both t and sde for the noised density, or neither")
        if t is None:
            return self._to_basis(xf[:, None, :] - mu), var.expand(xf.shape[0], -1, -1)
        t = batch_times(x, t, sde.T)
        a, s = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
        return self._to_basis(xf[:, None, :] - a * mu), a**2 * var + s**2

    def component_log_prob(self, x: Tensor, t: float | Tensor | None = None,
                           sde: SDE | None = None) -> Tensor:
        """log(w_k N_k,t(x)) for every component: (B, *D) -> (B, K)."""
        diff, var = self._noised(x, t, sde)
        log_n = -0.5 * ((diff**2 / var).sum(-1) + torch.log(var).sum(-1)
                        + diff.shape[-1] * math.log(2 * math.pi))
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
        diff, var = self._noised(x, t, sde)
        log_n = -0.5 * ((diff**2 / var).sum(-1) + torch.log(var).sum(-1))
        resp = torch.softmax(torch.log(self.weights.to(x)) + log_n, dim=-1)  # (B, K)
        return (-(resp[:, :, None] * self._from_basis(diff / var)).sum(1)).reshape(x.shape)

    # -- the exact posterior under a linear-Gaussian measurement ---------------------------------
    def condition(self, A: Tensor, y: Tensor, noise_std: float) -> GaussianMixture:
        """The exact posterior p(x | y) for y = A x + n, n ~ N(0, noise_std^2 I), as a mixture.

        Per component (Kalman): with C_k = A S_k A^T + noise_std^2 I and G_k = S_k A^T C_k^-1,
            w_k' ~ w_k N(y; A mu_k, C_k),  mu_k' = mu_k + G_k (y - A mu_k),  S_k' = S_k - G_k A S_k.

        Args:
            A: (M, N) the measurement matrix on the flattened event (N = prod D).
            y: (M,) the measurement.
            noise_std: the measurement noise, >= 0 (0: exact observations, then A S_k A^T must be
                invertible and the posterior covariances are singular).

        Returns:
            A GaussianMixture with full covariances over the same event shape.
        """
        n = self.means[0].numel()
        A = torch.as_tensor(A, dtype=self.means.dtype, device=self.means.device)
        y = torch.as_tensor(y, dtype=self.means.dtype, device=self.means.device).flatten()
        if A.ndim != 2 or A.shape[1] != n or y.shape != (A.shape[0],):
            raise ValueError(f"A must be (M, N) with N = {n} and y (M,); got A "
                             f"{tuple(A.shape)}, y {tuple(y.shape)}")
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
        if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(y).all())):
            raise ValueError("A and y must be finite")
        mu, cov = self.means.flatten(1), self.covariances()  # (K, N), (K, N, N)
        c = A @ cov @ A.T + noise_std**2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        chol, info = torch.linalg.cholesky_ex(c)
        if bool((info > 0).any()):
            raise ValueError("A S_k A^T + noise_std^2 I is singular for some component: give "
                             "noise_std > 0 or drop redundant rows of A")
        resid = y - mu @ A.T  # (K, M)
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_n = -0.5 * ((white**2).sum(-1) + A.shape[0] * math.log(2 * math.pi)) - torch.log(
            torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        gain = torch.cholesky_solve(A @ cov, chol).transpose(1, 2)  # (K, N, M) = S A^T C^-1
        means = mu + (gain @ resid[..., None])[..., 0]
        covs = cov - gain @ A @ cov
        log_w = torch.log(self.weights) + log_n
        weights = torch.softmax(log_w, dim=0)
        return GaussianMixture(means.reshape(self.means.shape), weights=weights, covs=covs)

    def __repr__(self) -> str:
        return (f"GaussianMixture(K={self.num_components}, event_shape="
                f"{tuple(self.event_shape)}, dtype={self.means.dtype})")
