"""Full-covariance mixtures and the exact posterior `GaussianMixture.condition` under y = A x + n.

Checked against brute-force quadrature in 2-D and against importance weights of prior draws in 16-D
(and 12-D for colour-to-grey), for a random matrix and the operators of `solvers.operators`: a
coordinate mask, average pooling, a blur and a colour-to-grey projection; noised scores of
full-covariance mixtures against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE
from score_sde.solvers import operators

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


def _random_full(k: int, shape: tuple[int, ...], seed: int, spread: float = 2.0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    means = spread * torch.randn((k, *shape), generator=g, dtype=D64)
    f = torch.randn(k, n, n, generator=g, dtype=D64) / n**0.5
    covs = 0.3 * f @ f.transpose(1, 2) + 0.05 * torch.eye(n, dtype=D64)
    weights = torch.rand(k, generator=g, dtype=D64) + 0.2
    return GaussianMixture(means, weights=weights, covs=covs)


def _mask(n: int, keep: list[int]) -> torch.Tensor:
    m = torch.zeros(n)
    m[keep] = 1
    return operators.mask_operator(m).matrix()


# -- full covariances --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SDES)
def test_full_covariance_score_is_gradient_of_log_prob(name):
    sde, gm = SDES[name], _random_full(3, (2, 2), seed=0)
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(64, 2, 2, generator=g, dtype=D64)
    t = torch.rand(64, generator=g, dtype=D64) * 0.99 + 0.01
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(gm.log_prob(xr, t, sde).sum(), xr)
    torch.testing.assert_close(gm.score(x, t, sde), auto, rtol=1e-10, atol=1e-10)


def test_full_covariance_matches_diagonal_mixture():
    g = torch.Generator().manual_seed(2)
    means, stds = torch.randn(3, 4, generator=g, dtype=D64), torch.rand(3, 4, generator=g, dtype=D64) + 0.3
    diag = GaussianMixture(means, stds)
    full = GaussianMixture(means, covs=torch.diag_embed(stds**2))
    x = torch.randn(32, 4, generator=g, dtype=D64)
    sde = VPSDE()
    for t in (None, 0.3):
        s = (t, sde) if t is not None else (None, None)
        torch.testing.assert_close(full.log_prob(x, *s), diag.log_prob(x, *s))
        torch.testing.assert_close(full.score(x, *s), diag.score(x, *s))


def test_full_covariance_samples_have_the_moments():
    gm = _random_full(2, (3,), seed=3)
    x = gm.sample(200_000, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(x.mean(0), gm.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), atol=0.03, rtol=0)


@pytest.mark.parametrize("name", SDES)
def test_noised_full_covariance_density_integrates_to_one(name):
    sde, gm = SDES[name], _random_full(2, (2,), seed=5)
    t = 0.05
    scale = float(sde.alpha(torch.tensor(t)) * 6 + sde.sigma(torch.tensor(t)) * 6) + 1
    grid = torch.linspace(-scale, scale, 801, dtype=D64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    mass = gm.log_prob(pts, t, sde).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1) < 1e-6


# -- the exact posterior -----------------------------------------------------------------------
def _quadrature_posterior(gm: GaussianMixture, A: torch.Tensor, y: torch.Tensor, noise: float):
    grid = torch.linspace(-9, 9, 1201, dtype=D64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    log_lik = -0.5 * ((pts @ A.T - y) ** 2).sum(-1) / noise**2
    log_post = gm.log_prob(pts) + log_lik
    w = torch.softmax(log_post, 0)
    mean = w @ pts
    cov = (w[:, None] * (pts - mean)).T @ (pts - mean)
    log_norm = torch.logsumexp(log_post, 0) + 2 * torch.log(grid[1] - grid[0])
    return pts, log_post - log_norm, mean, cov


@pytest.mark.parametrize("A", [
    torch.tensor([[0.8, -0.6]], dtype=D64),       # a random direction
    torch.tensor([[1.0, 0.0]], dtype=D64),        # mask: x1 observed
    torch.tensor([[0.5, 0.5]], dtype=D64),        # average pooling of the two pixels
    torch.tensor([[0.75, 0.25], [0.25, 0.75]], dtype=D64),  # a blur
], ids=["random", "mask", "avgpool", "blur"])
def test_condition_matches_quadrature_in_2d(A):
    gm = GaussianMixture(torch.tensor([[-2.0, 1.0], [2.0, -0.5], [0.0, 2.5]], dtype=D64),
                         torch.tensor([0.6, 0.9, 0.5], dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    y, noise = torch.full((A.shape[0],), 0.4, dtype=D64), 0.5
    post = gm.condition(A, y, noise)
    pts, log_q, mean, cov = _quadrature_posterior(gm, A, y, noise)
    keep = log_q > -20
    torch.testing.assert_close(post.log_prob(pts[keep]), log_q[keep], atol=1e-6, rtol=0)
    torch.testing.assert_close(post.mean(), mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(post.covariance(), cov, atol=1e-6, rtol=0)


def _importance(gm: GaussianMixture, A: torch.Tensor, y: torch.Tensor, noise: float, n: int):
    x, k = gm.sample(n, generator=torch.Generator().manual_seed(6), return_components=True)
    log_w = -0.5 * ((x.flatten(1) @ A.T - y) ** 2).sum(-1) / noise**2
    w = torch.softmax(log_w, 0)
    ess = 1 / (w**2).sum()
    mean = w @ x.flatten(1)
    cov = (w[:, None] * (x.flatten(1) - mean)).T @ (x.flatten(1) - mean)
    masses = torch.zeros(gm.num_components, dtype=D64).index_add_(0, k, w)
    return mean, cov, masses, ess


OPERATORS_16 = {
    "random": lambda: torch.randn(6, 16, generator=torch.Generator().manual_seed(7), dtype=D64) / 4,
    "mask": lambda: _mask(16, [0, 1, 4, 5, 10, 15]),
    "avgpool": lambda: operators.avg_pool_operator((1, 4, 4), 2).matrix(),
    "blur": lambda: operators.blur_operator((1, 4, 4), 3, 1.0).matrix()[::3],
}


@pytest.mark.parametrize("op", [*OPERATORS_16, "grey"])
def test_condition_matches_importance_weights(op):
    """Means, covariances and mode masses within 5-6 standard errors of the self-normalised
    importance estimates (prior draws weighted by the likelihood), on overlapping components so
    that several modes keep posterior mass."""
    shape = (3, 2, 2) if op == "grey" else (1, 4, 4)
    gm = _random_full(4, shape, seed=8, spread=0.7)
    A = operators.grey_operator((3, 2, 2)).matrix() if op == "grey" else OPERATORS_16[op]()
    noise = 0.5
    x_true = gm.sample(1, generator=torch.Generator().manual_seed(9)).flatten()
    y = A @ x_true + noise * torch.randn(A.shape[0], generator=torch.Generator().manual_seed(10),
                                         dtype=D64)
    post = gm.condition(A, y, noise)
    mean, cov, masses, ess = _importance(gm, A, y, noise, 400_000)
    assert ess > 5000
    assert int((post.weights > 0.05).sum()) >= 2  # a multimodal posterior
    cov_exact = post.covariance()
    sd, root = cov_exact.diagonal().sqrt(), ess.sqrt()
    assert ((post.mean().flatten() - mean) / (sd / root)).abs().max() < 5
    assert ((cov_exact - cov) / (sd[:, None] * sd[None] / root)).abs().max() < 6
    mass_se = (post.weights * (1 - post.weights)).sqrt() / root + 1e-12
    assert ((post.weights - masses) / mass_se).abs().max() < 5


def test_exact_mask_observation_pins_the_known_coordinates():
    gm = _random_full(3, (4,), seed=11)
    A, y = _mask(4, [0, 2]), torch.tensor([0.5, -1.0], dtype=D64)
    post = gm.condition(A, y, 0.0)
    x = post.sample(1000, generator=torch.Generator().manual_seed(12))
    torch.testing.assert_close(x[:, [0, 2]], y.expand(1000, 2), atol=1e-6, rtol=0)
    s = post.score(x, 0.1, VPSDE())  # the noised posterior is proper
    assert bool(torch.isfinite(s).all())


def test_condition_validates_its_inputs():
    gm = _random_full(2, (3,), seed=13)
    with pytest.raises(ValueError, match="A must be"):
        gm.condition(torch.eye(2, dtype=D64), torch.zeros(2, dtype=D64), 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        gm.condition(torch.eye(3, dtype=D64), torch.zeros(3, dtype=D64), -1.0)
    with pytest.raises(ValueError, match="singular"):
        gm.condition(torch.cat([torch.eye(3), torch.eye(3)]).to(D64), torch.zeros(6, dtype=D64), 0.0)
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture(torch.zeros(2, 3, dtype=D64))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture(torch.zeros(1, 2, dtype=D64), covs=-torch.eye(2, dtype=D64)[None])
