"""Measurement operators and training-free posterior sampling (`solvers.measurement_guidance`)
against the exact posterior `GaussianMixture.condition`.

Where a method is exact its guided score must equal the exact posterior's noised score at every
time: pseudoinverse guidance on an isotropic Gaussian prior (p(x_0 | x_t) is then the Gaussian it
assumes), replacement when the known and unknown coordinates are independent. Sampling with them
must reproduce the posterior. DPS is the d = 0 limit of pseudoinverse guidance; its bias on
mixtures is measured in bench/inverse_problems.py, not asserted here."""

from __future__ import annotations

import math

import pytest
import torch

from score_sde.sde_lib import GaussianMixture
from score_sde.solvers import (
    ddim,
    dpm_solver_multistep,
    euler_maruyama,
    heun,
    measurement_guidance,
    operators,
    probability_flow,
)
from score_sde.solvers import measurement as measurement_module
from tests.solvers.solver_oracles import D64, make_sdes

SDES = make_sdes()
IMAGE = (3, 2, 2)  # 12-D RGB images: every operator (grey needs 3 channels) acts on them


def _operators() -> dict[str, operators.LinearOperator]:
    g = torch.Generator().manual_seed(3)
    mask = torch.zeros(IMAGE)
    mask[:, 0, :] = 1
    return {
        "matrix": operators.matrix_operator(torch.randn(5, 12, generator=g, dtype=D64), IMAGE),
        "mask": operators.mask_operator(mask),
        "avg_pool": operators.avg_pool_operator(IMAGE, 2),
        "blur": operators.blur_operator(IMAGE, 3, 0.8),
        "grey": operators.grey_operator(IMAGE),
    }


OPS = _operators()


def _gaussian(std: float, shape: tuple[int, ...] = IMAGE, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    return GaussianMixture(torch.randn((1, *shape), generator=g, dtype=D64),
                           torch.full((1, *shape), std, dtype=D64))


def _measure(gm: GaussianMixture, op: operators.LinearOperator, noise_std: float,
             seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = gm.sample(1, generator=g)
    return op(x)[0] + noise_std * torch.randn(op.num_measurements, generator=g, dtype=D64)


@pytest.mark.parametrize("name", list(OPS))
def test_operator_matrix_transpose_and_gram(name):
    op = OPS[name]
    a = op.matrix()
    assert a.shape == (op.num_measurements, 12)
    x = torch.randn(4, *IMAGE, dtype=D64)
    torch.testing.assert_close(op(x), x.flatten(1) @ a.T, rtol=0, atol=1e-13)
    v = torch.randn(4, op.num_measurements, dtype=D64)
    torch.testing.assert_close(op.transpose(v).flatten(1), v @ a, rtol=0, atol=1e-13)
    by_autograd = operators.LinearOperator(op.forward, op.event_shape, op.num_measurements)
    torch.testing.assert_close(by_autograd.transpose(v), op.transpose(v), rtol=0, atol=1e-13)
    torch.testing.assert_close(op.gram(v), v @ (a @ a.T), rtol=0, atol=1e-13)
    if op.gram_scale is not None:
        torch.testing.assert_close(a @ a.T, op.gram_scale * torch.eye(len(a), dtype=D64))


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("noise_std", [0.0, 0.2])
def test_pigdm_is_exact_on_an_isotropic_gaussian_prior(sde_name, name, noise_std):
    sde, op, std = SDES[sde_name], OPS[name], 0.7
    gm = _gaussian(std)
    y = _measure(gm, op, noise_std)
    if noise_std == 0 and name == "blur":  # a full-rank blur leaves nothing to sample
        pytest.skip("noise-free full-rank measurement")
    posterior = gm.condition(op.matrix(), y, noise_std)
    guided = measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), op, y, noise_std,
                                  method="pigdm", data_std=std)
    x = 2 * torch.randn(6, *IMAGE, generator=torch.Generator().manual_seed(5), dtype=D64)
    for t in (0.05, 0.3, 0.9):
        tt = torch.full((6,), t, dtype=D64)
        want = posterior.score(x, tt, sde)
        torch.testing.assert_close(guided(x, tt), want, rtol=1e-8, atol=1e-8 * want.abs().max())


def test_pigdm_by_conjugate_gradients_equals_the_eigendecomposition(monkeypatch):
    sde, op, gm = SDES["vp"], OPS["blur"], _gaussian(0.7)
    y = _measure(gm, op, 0.1)
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    by_eigen = measurement_guidance(sde, score, op, y, 0.1, data_std=0.7)
    monkeypatch.setattr(measurement_module, "_EIGEN_MAX", 0)
    by_cg = measurement_guidance(sde, score, op, y, 0.1, data_std=0.7, cg_steps=40)
    x, t = torch.randn(5, *IMAGE, dtype=D64), torch.full((5,), 0.2, dtype=D64)
    torch.testing.assert_close(by_cg(x, t), by_eigen(x, t), rtol=1e-9, atol=1e-9)


def test_dps_is_pigdm_without_the_posterior_variance():
    sde, op, gm = SDES["ve"], OPS["matrix"], _gaussian(1.3)
    y = _measure(gm, op, 0.3)
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    dps = measurement_guidance(sde, score, op, y, 0.3, method="dps", scale=0.5)
    pigdm = measurement_guidance(sde, score, op, y, 0.3, method="pigdm", scale=0.5, data_std=0)
    x, t = torch.randn(4, *IMAGE, dtype=D64), torch.full((4,), 0.4, dtype=D64)
    torch.testing.assert_close(dps(x, t), pigdm(x, t), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(dps(x, t), score(x, t))


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("method", ["dps", "pigdm"])
def test_the_gaussian_jacobian_is_the_network_one_on_a_gaussian_prior(sde_name, method):
    """jacobian="gaussian" replaces d x0_hat / d x_t by the N(m, d^2 I) prior's: on that prior it
    is exact, so both guidance terms agree at every time, for every operator."""
    sde, std = SDES[sde_name], 0.7
    gm = _gaussian(std)
    score = lambda x, t: gm.score(x, t, sde)  # noqa: E731
    x = 2 * torch.randn(4, *IMAGE, generator=torch.Generator().manual_seed(3), dtype=D64)
    for op in OPS.values():
        y = _measure(gm, op, 0.2)
        network, gaussian = (measurement_guidance(sde, score, op, y, 0.2, method=method, scale=0.7,
                                                  data_std=std, jacobian=j)
                             for j in ("network", "gaussian"))
        for t in (0.05, 0.5, 0.999):
            tt = torch.full((4,), t, dtype=D64)
            want = network(x, tt)
            torch.testing.assert_close(gaussian(x, tt), want, rtol=1e-9, atol=1e-9 * want.abs().max())


def _independent_prior() -> tuple[GaussianMixture, operators.LinearOperator]:
    """Three modes in x_1, x_2 (unknown) times one Gaussian in x_3, x_4 (known): independent."""
    means = torch.tensor([[-2.0, 0.0, 0.5, -1.0], [2.0, 1.0, 0.5, -1.0], [0.0, -2.5, 0.5, -1.0]],
                         dtype=D64)
    stds = torch.tensor([[0.4, 0.3, 0.8, 0.6], [0.3, 0.6, 0.8, 0.6], [0.5, 0.5, 0.8, 0.6]],
                        dtype=D64)
    gm = GaussianMixture(means, stds, torch.tensor([1.0, 2.0, 1.0], dtype=D64))
    return gm, operators.mask_operator(torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("sde_name", list(SDES))
def test_replacement_is_exact_for_independent_coordinates(sde_name):
    sde = SDES[sde_name]
    gm, op = _independent_prior()
    y = torch.tensor([1.2, -0.3], dtype=D64)
    posterior = gm.condition(op.matrix(), y, 0.0)
    guided = measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), op, y, 0.0,
                                  method="replacement")
    x = 2 * torch.randn(8, 4, generator=torch.Generator().manual_seed(2), dtype=D64)
    for t in (0.05, 0.5, 1.0):
        tt = torch.full((8,), t, dtype=D64)
        torch.testing.assert_close(guided(x, tt), posterior.score(x, tt, sde), rtol=1e-9,
                                   atol=1e-9)


def _moments_close(x: torch.Tensor, gm: GaussianMixture, n_se: float = 5.0) -> None:
    """Sample mean and per-coordinate variance within n_se standard errors of the mixture's."""
    n, mean, cov = x.shape[0], gm.mean().flatten(), gm.covariance()
    var = torch.diagonal(cov)
    se_mean = torch.sqrt(var / n)
    assert ((x.mean(0) - mean).abs() <= n_se * se_mean + 1e-3).all(), (x.mean(0), mean)
    se_var = var * math.sqrt(2 / n) + 1e-12  # Gaussian-like tails
    assert ((x.var(0) - var).abs() <= n_se * se_var + 2e-3).all(), (x.var(0), var)


def test_sampling_with_pseudoinverse_guidance_reproduces_a_gaussian_posterior():
    sde, std = SDES["vp"], 0.8
    gm = _gaussian(std, (3,), seed=4)
    op = operators.matrix_operator(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, -1.0]], dtype=D64))
    y = _measure(gm, op, 0.3)
    posterior = gm.condition(op.matrix(), y, 0.3)
    guided = measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), op, y, 0.3,
                                  data_std=std)
    g = torch.Generator().manual_seed(0)
    x = euler_maruyama(sde, guided, sde.prior_sample((4000, 3), generator=g, dtype=D64),
                       steps=300, generator=g).x
    _moments_close(x, posterior)


def test_sampling_with_replacement_reproduces_the_mode_masses():
    sde = SDES["ve"]
    gm, op = _independent_prior()
    y = torch.tensor([1.2, -0.3], dtype=D64)
    posterior = gm.condition(op.matrix(), y, 0.0)
    guided = measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), op, y, 0.0,
                                  method="replacement")
    g = torch.Generator().manual_seed(1)
    x = euler_maruyama(sde, guided, sde.prior_sample((4000, 4), generator=g, dtype=D64),
                       steps=300, generator=g).x
    # the modes differ only in the unknown part: the prior's responsibilities tell them apart
    masses = gm.posterior(x).mean(0)
    se = torch.sqrt(posterior.weights * (1 - posterior.weights) / x.shape[0])
    assert ((masses - posterior.weights).abs() <= 5 * se).all(), (masses, posterior.weights)
    torch.testing.assert_close(x[:, 2:], y.expand(4000, 2), rtol=0, atol=0.05)


@pytest.mark.parametrize("sampler", [euler_maruyama, ddim, dpm_solver_multistep, heun,
                                     probability_flow])
@pytest.mark.parametrize("method", ["dps", "pigdm", "replacement"])
def test_every_sampler_takes_the_guided_score(sampler, method):
    sde = SDES["vp"]
    gm, op = _independent_prior()
    y = torch.tensor([1.2, -0.3], dtype=D64)
    guided = measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), op, y, 0.1,
                                  method=method)
    settings = {} if sampler is probability_flow else {"steps": 8}
    x_T = sde.prior_sample((16, 4), generator=torch.Generator().manual_seed(0), dtype=D64)
    res = sampler(sde, guided, x_T, **settings)
    assert res.x.shape == x_T.shape and bool(torch.isfinite(res.x).all()) and res.nfe > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "magic"}, "method must be one of"),
    ({"method": "dps", "noise_std": 0.0}, "needs noise_std > 0"),
    ({"method": "replacement", "operator": "matrix"}, "needs a coordinate mask"),
    ({"method": "replacement", "scale": 2.0}, "scale has no meaning"),
    ({"scale": -1.0}, "scale must be"),
    ({"noise_std": float("nan")}, "noise_std must be"),
    ({"y": torch.zeros(3)}, "y must be finite with 2 entries"),
    ({"jacobian": "exact"}, "jacobian must be one of"),
    ({"jacobian": "gaussian", "data_std": 0.0}, "jacobian='gaussian' needs data_std > 0"),
])
def test_bad_settings_are_named(kwargs, match):
    sde = SDES["vp"]
    gm, mask = _independent_prior()
    args = {"operator": mask, "y": torch.zeros(2), "noise_std": 0.1, "method": "pigdm"}
    args.update(kwargs)
    if args["operator"] == "matrix":
        args["operator"] = torch.eye(4, dtype=D64)[2:]
    with pytest.raises(ValueError, match=match):
        measurement_guidance(sde, lambda x, t: gm.score(x, t, sde), **args)


def test_operators_reject_what_they_cannot_act_on():
    with pytest.raises(ValueError, match="divides H"):
        operators.avg_pool_operator((1, 5, 4), 2)
    with pytest.raises(ValueError, match="3 channels"):
        operators.grey_operator((1, 4, 4))
    with pytest.raises(ValueError, match="keeps no coordinate"):
        operators.mask_operator(torch.zeros(3))
    with pytest.raises(ValueError, match="event_shape"):
        operators.matrix_operator(torch.ones(2, 5), (2, 2))
    with pytest.raises(ValueError, match="acts on events of shape"):
        OPS["grey"](torch.zeros(2, 12))
    guided = measurement_guidance(SDES["vp"], lambda x, t: -x, OPS["mask"],
                                  torch.zeros(3, OPS["mask"].num_measurements), 0.1)
    with pytest.raises(ValueError, match="holds 3 measurements but x has batch size 2"):
        guided(torch.zeros(2, *IMAGE), torch.full((2,), 0.5))
