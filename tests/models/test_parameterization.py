"""The pure eps / score / x0 / v conversions against their definitions, for VP, sub-VP and VE."""

import pytest
import torch

from score_sde.models.parameterization import PREDICTIONS, convert, eps_and_x0
from score_sde.sde_lib import VESDE, VPSDE, SubVPSDE

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=50.0)}
SHAPES = [(7, 2), (3, 2, 4, 4)]


def truth(sde, shape, seed=0):
    """x_t = alpha x0 + sigma eps from drawn x0, eps, and every quantity by its definition."""
    gen = torch.Generator().manual_seed(seed)
    b = shape[0]
    t = 1e-3 + (sde.T - 1e-3) * torch.rand(b, generator=gen, dtype=D64)
    x0 = torch.randn(shape, generator=gen, dtype=D64)
    eps = torch.randn(shape, generator=gen, dtype=D64)
    a = sde.alpha(t).reshape(b, *[1] * (len(shape) - 1))
    s = sde.sigma(t).reshape(b, *[1] * (len(shape) - 1))
    x_t = a * x0 + s * eps
    # score of p(x_t | x0): -(x_t - alpha x0) / sigma^2 = -eps / sigma
    quantities = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}
    return x_t, sde.alpha(t), sde.sigma(t), quantities


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SDES)
def test_every_conversion_matches_the_definitions(name, shape):
    """From the exact output of each kind, every other kind comes out as its definition says."""
    x_t, alpha, sigma, q = truth(SDES[name], shape)
    for source in PREDICTIONS:
        for target in PREDICTIONS:
            got = convert(q[source], x_t, alpha, sigma, source=source, target=target)
            torch.testing.assert_close(got, q[target], rtol=1e-10, atol=1e-10,
                                       msg=f"{name}: {source} -> {target}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", SDES)
def test_round_trips_are_exact_in_float64(name, shape):
    """An arbitrary output (not a consistent quadruple) survives source -> target -> source, and the
    (eps, x0) it stands for always satisfies x_t = alpha x0 + sigma eps."""
    x_t, alpha, sigma, _ = truth(SDES[name], shape, seed=1)
    out = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=D64)
    a = alpha.reshape(-1, *[1] * (len(shape) - 1))
    s = sigma.reshape(-1, *[1] * (len(shape) - 1))
    for source in PREDICTIONS:
        eps, x0 = eps_and_x0(out, x_t, alpha, sigma, source)
        torch.testing.assert_close(a * x0 + s * eps, x_t, rtol=1e-12, atol=1e-12)
        for target in PREDICTIONS:
            there = convert(out, x_t, alpha, sigma, source=source, target=target)
            back = convert(there, x_t, alpha, sigma, source=target, target=source)
            torch.testing.assert_close(back, out, rtol=1e-10, atol=1e-10,
                                       msg=f"{name}: {source} -> {target} -> {source}")


def test_v_on_vp_is_the_familiar_rotation():
    """With alpha^2 + sigma^2 = 1 (VP): x0 = alpha x_t - sigma v and v = alpha eps - sigma x0."""
    sde = VPSDE()
    x_t, alpha, sigma, q = truth(sde, (5, 3))
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-14)
    v = torch.randn(5, 3, dtype=D64)
    a, s = alpha[:, None], sigma[:, None]
    torch.testing.assert_close(convert(v, x_t, alpha, sigma, source="v", target="x0"), a * x_t - s * v)
    torch.testing.assert_close(convert(q["eps"], x_t, alpha, sigma, source="eps", target="v"), q["v"])


def test_ve_v_uses_alpha_one():
    """VE: v = eps - sigma x0, and the score from v is -eps / sigma."""
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    x_t, alpha, sigma, q = truth(sde, (6, 2))
    torch.testing.assert_close(alpha, torch.ones_like(alpha), rtol=0, atol=0)
    torch.testing.assert_close(q["v"], q["eps"] - sigma[:, None] * q["x0"], rtol=0, atol=0)
    torch.testing.assert_close(convert(q["v"], x_t, alpha, sigma, source="v", target="score"), q["score"])


def test_bad_arguments_raise():
    x = torch.zeros(4, 2)
    a = s = torch.ones(4)
    with pytest.raises(ValueError, match="source must be one of .* got 'noise'"):
        convert(x, x, a, s, source="noise", target="score")
    with pytest.raises(ValueError, match="target must be one of"):
        convert(x, x, a, s, source="eps", target="sample")
    with pytest.raises(ValueError, match=r"output must have the shape of x_t \(4, 2\)"):
        convert(torch.zeros(4, 3), x, a, s, source="eps", target="score")
