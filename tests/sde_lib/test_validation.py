"""Bad input is rejected with a ValueError that names the parameter."""

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE, dsm_loss


@pytest.mark.parametrize("make, match", [
    (lambda: VPSDE(beta_min=20.0, beta_max=0.1), "beta_max"),
    (lambda: VPSDE(beta_min=0.0), "beta_min"),
    (lambda: VPSDE(schedule="quadratic"), "schedule"),
    (lambda: VPSDE(T=0.0), "T"),
    (lambda: VPSDE(T=float("nan")), "T"),
    (lambda: VPSDE(schedule="cosine", T=1.0), "T"),
    (lambda: SubVPSDE(beta_min=1.0, beta_max=1.0), "beta_max"),
    (lambda: VESDE(sigma_min=0.0), "sigma_min"),
    (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
    (lambda: VESDE(T=-1.0), "T"),
    (lambda: VPSDE(beta_max=float("inf")), "beta_max must be a finite number"),
    (lambda: VPSDE(beta_min=float("nan")), "beta_min must be a finite number"),
    (lambda: VPSDE(schedule="cosine", cosine_s=float("inf")), "cosine_s"),
    (lambda: VESDE(sigma_max=float("inf")), "sigma_max must be a finite number"),
    (lambda: VESDE(sigma_min=float("nan")), "sigma_min"),
    (lambda: VPSDE(T=float("inf")), "T"),
    (lambda: GaussianMixture(torch.tensor([[0.0, float("nan")]]), 1.0), "means must be finite"),
    (lambda: GaussianMixture(torch.zeros(2, 3), torch.tensor([1.0, float("inf")])), "stds"),
    (lambda: GaussianMixture(torch.zeros(2, 3), 1.0, torch.tensor([1.0, float("inf")])),
     "weights"),
    (lambda: VPSDE().alpha(1.5), r"\[0, T\]"),
    (lambda: VPSDE().sigma(torch.tensor([0.5, -0.1])), r"\[0, T\]"),
    (lambda: VPSDE().diffusion(float("nan")), r"\[0, T\]"),
    (lambda: VPSDE().drift(torch.randn(3, 2), torch.rand(4)), "batch size"),
    (lambda: VPSDE().reverse_drift(torch.randn(3, 2), 0.5, torch.randn(3, 3)), "score"),
    (lambda: VPSDE().t_from_log_snr(100.0 if False else -50.0), "log_snr"),
    (lambda: VPSDE().discrete_betas(0), "n"),
    (lambda: VPSDE.from_discrete_betas(torch.tensor([0.1, 0.5, 0.2])), "linear"),
    (lambda: GaussianMixture(torch.zeros(2, 3), torch.ones(3)), "stds"),
    (lambda: GaussianMixture(torch.zeros(2, 3), torch.tensor([1.0, -1.0])), "stds"),
    (lambda: GaussianMixture(torch.zeros(2, 3), 1.0, torch.tensor([1.0])), "weights"),
    (lambda: GaussianMixture(torch.zeros(3), 1.0), "means"),
    (lambda: GaussianMixture(torch.zeros(2, 3), 1.0).log_prob(torch.zeros(4, 2)), "shape"),
    (lambda: GaussianMixture(torch.zeros(2, 3), 1.0).log_prob(torch.zeros(4, 3), t=0.5), "sde"),
    (lambda: GaussianMixture(torch.zeros(2, 3), 1.0).sample(0), "n"),
])
def test_bad_input_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _score(x, t):
    return -x


@pytest.mark.parametrize("kwargs, match", [
    ({"weighting": "snr"}, "weighting"),
    ({"t_eps": 1.0}, "t_eps"),
    ({"t_eps": -1e-3}, "t_eps"),
    ({"t": torch.rand(3)}, "t must have shape"),
    ({"t": torch.full((4,), 2.0)}, "t must lie"),
    ({"noise": torch.randn(4, 3)}, "noise"),
    ({"reduction": "sum"}, "reduction"),
    ({"x0": torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [0.0, 0.0], [1.0, 1.0]])},
     r"x0 has non-finite values in samples \[1\]"),
    ({"x0": torch.zeros(0, 2)}, "empty batch"),
    ({"x0": torch.zeros(4)}, "x0 must be a floating tensor of shape"),
])
def test_dsm_loss_rejects_bad_input(kwargs, match):
    kwargs = dict(kwargs)
    x0 = kwargs.pop("x0", torch.randn(4, 2))
    with pytest.raises(ValueError, match=match):
        dsm_loss(VPSDE(), _score, x0, **kwargs)


def test_dsm_loss_rejects_a_score_of_the_wrong_shape():
    with pytest.raises(ValueError, match="score_fn"):
        dsm_loss(VPSDE(), lambda x, t: x[:, :1], torch.randn(4, 2))
