"""diffusers as a peer oracle for the parameterisation: its DDPM scheduler's velocity and its
x0 estimate from "epsilon", "sample" and "v_prediction" outputs must equal ours, with alpha_t and
sigma_t taken from its own alphas_cumprod (alpha^2 = abar, sigma^2 = 1 - abar)."""

import pytest
import torch

from score_sde.models.parameterization import convert

diffusers = pytest.importorskip("diffusers")

KINDS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}


def scheduler(kind):
    return diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=False,
                                   prediction_type=kind)


def test_velocity_matches_diffusers():
    sched = scheduler("v_prediction")
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 2, 4, 4, generator=gen), torch.randn(6, 2, 4, 4, generator=gen)
    steps = torch.tensor([0, 10, 250, 500, 900, 999])
    abar = sched.alphas_cumprod[steps]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    x_t = sched.add_noise(x0, eps, steps)
    torch.testing.assert_close(convert(eps, x_t, alpha, sigma, source="eps", target="v"),
                               sched.get_velocity(x0, eps, steps), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", [5, 300, 999])
def test_x0_estimate_matches_diffusers(kind, step):
    sched = scheduler(kind)
    gen = torch.Generator().manual_seed(step)
    x_t, out = torch.randn(3, 1, 8, 8, generator=gen), torch.randn(3, 1, 8, 8, generator=gen)
    abar = sched.alphas_cumprod[step].expand(3)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    theirs = sched.step(out, step, x_t, generator=gen).pred_original_sample
    ours = convert(out, x_t, alpha, sigma, source=KINDS[kind], target="x0")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
