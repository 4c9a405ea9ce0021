"""One broadcasting rule for (B, d) and (B, C, H, W): the pitfall where (B, 2) turns into (B, 1, B, 2)."""

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, SubVPSDE, append_dims


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("shape", [(5, 2), (5, 3, 4, 4), (1, 7)])
def test_vector_fields_keep_the_shape_of_x(sde, shape):
    x = torch.randn(shape)
    score = torch.randn(shape)
    t = torch.rand(shape[0]) * 0.9 + 0.05
    for out in (sde.drift(x, t), sde.reverse_drift(x, t, score),
                sde.probability_flow_drift(x, t, score), sde.marginal(x, t)[0]):
        assert out.shape == shape
    assert sde.marginal(x, t)[1].shape == (shape[0],)
    assert sde.prior_logp(x).shape == (shape[0],)
    assert sde.prior_sample(shape).shape == shape


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_reverse_and_probability_flow_drifts_equal_their_formulas(sde):
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64)
    score = torch.randn_like(x)
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    f = sde.drift_coef(t)[:, None, None, None]
    g2 = sde.diffusion(t)[:, None, None, None] ** 2
    torch.testing.assert_close(sde.reverse_drift(x, t, score), f * x - g2 * score)
    torch.testing.assert_close(sde.probability_flow_drift(x, t, score), f * x - 0.5 * g2 * score)
    # a float t means the same time for every sample
    torch.testing.assert_close(sde.drift(x, 0.3), sde.drift(x, torch.full((6,), 0.3, dtype=x.dtype)))


def test_prior_logp_is_the_gaussian_density():
    sde = VESDE(sigma_min=0.01, sigma_max=3.0)
    z = torch.randn(4, 5, dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 3.0).log_prob(z).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)


def test_prior_sample_is_reproducible_and_scaled():
    sde = VESDE(sigma_max=7.0)
    a = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(1))
    b = sde.prior_sample((20000, 2), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert abs(a.std().item() - 7.0) < 0.15  # SE of the std ~ 7 / sqrt(2 * 40000) = 0.025


def test_append_dims():
    assert append_dims(torch.ones(3), 4).shape == (3, 1, 1, 1)
    assert append_dims(torch.ones(3), 1).shape == (3,)
    with pytest.raises(ValueError):
        append_dims(torch.ones(3, 2), 1)
