"""A peer as oracle: diffusers' DDIMScheduler, set up with the betas of our VP SDE
(`VPSDE.discrete_betas`) and fed the same analytic eps model, gives our DDIM's samples to 1e-5;
its UniPCMultistepScheduler gives our dpm_solver_multistep(corrector="unipc") on the same grid.

The cosine VP is used because its discrete betas are exact: prod_{j<=k} (1 - b_j) = alpha(k T/N)^2,
so both sides integrate the same discrete process. diffusers keeps alphas_cumprod in float32; we
hand it the same cumprod in float64 so that its rounding does not hide ours.
"""

import pytest
import torch
from solver_oracles import exact_score, mixture_2d, noised_draw

from score_sde import solvers
from score_sde.sde_lib import VPSDE
from score_sde.solvers import grids

diffusers = pytest.importorskip("diffusers")

N_TRAIN = 1000


def _scheduler(sde, spacing):
    betas = sde.discrete_betas(N_TRAIN)
    sched = diffusers.DDIMScheduler(num_train_timesteps=N_TRAIN, trained_betas=betas.numpy(),
                                    clip_sample=False, set_alpha_to_one=True,
                                    timestep_spacing=spacing, prediction_type="epsilon")
    sched.alphas_cumprod = torch.cumprod(1 - betas, dim=0)  # float64
    return sched


def test_cosine_discrete_betas_give_the_continuous_alpha():
    sde = VPSDE(schedule="cosine")
    abar = torch.cumprod(1 - sde.discrete_betas(N_TRAIN), dim=0)
    t = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) * sde.T / N_TRAIN
    torch.testing.assert_close(abar, sde.alpha(t) ** 2, rtol=1e-12, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_matches_diffusers_ddim_scheduler(spacing, eta, steps):
    sde, gm = VPSDE(schedule="cosine"), mixture_2d()
    score = exact_score(gm, sde)
    x_T = noised_draw(gm, sde, 256, sde.T, seed=0)
    ts = grids.ddpm_subsequence(sde, steps, num_train_steps=N_TRAIN, spacing=spacing)
    ours = solvers.ddim(sde, score, x_T, ts=ts, eta=eta, generator=torch.Generator().manual_seed(0))

    sched = _scheduler(sde, spacing)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = x_T
    for k in sched.timesteps.tolist():
        t = torch.full((x.shape[0],), (k + 1) * sde.T / N_TRAIN, dtype=x.dtype)
        eps = -sde.sigma(t)[:, None] * score(x, t)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype) if eta > 0 else None
        x = sched.step(eps, k, x, eta=eta, variance_noise=noise).prev_sample
    assert ours.nfe == len(sched.timesteps) == steps
    torch.testing.assert_close(ours.x, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [6, 15])
def test_unipc_matches_diffusers_unipc_scheduler(steps):
    """Our UniPC (DPM-Solver++ predictor + UniC corrector) on diffusers' own grid: its timesteps k at
    our t = (k + 1) T / N, then the final sigma_min = alphas_cumprod[0], our t = T / N. Order 2 only:
    UniP-2 (bh2) is DPM-Solver++ 2M, while UniP-3 differs from our 3M predictor."""
    order = 2
    sde, gm = VPSDE(schedule="cosine"), mixture_2d()
    score = exact_score(gm, sde)
    x_T = noised_draw(gm, sde, 256, sde.T, seed=0)
    betas = sde.discrete_betas(N_TRAIN)
    sched = diffusers.UniPCMultistepScheduler(num_train_timesteps=N_TRAIN, trained_betas=betas.numpy(),
                                              solver_order=order, solver_type="bh2",
                                              final_sigmas_type="sigma_min")
    abar = torch.cumprod(1 - betas, dim=0)
    sched.alphas_cumprod = abar
    sched.alpha_t, sched.sigma_t = abar.sqrt(), (1 - abar).sqrt()
    sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
    sched.set_timesteps(steps)
    ks = sched.timesteps.tolist()
    ts = torch.tensor([(k + 1) * sde.T / N_TRAIN for k in ks] + [sde.T / N_TRAIN], dtype=torch.float64)
    ours = solvers.dpm_solver_multistep(sde, score, x_T, ts=ts, order=order, corrector="unipc")
    x = x_T
    for k in ks:
        t = torch.full((x.shape[0],), (k + 1) * sde.T / N_TRAIN, dtype=x.dtype)
        x = sched.step(-sde.sigma(t)[:, None] * score(x, t), k, x).prev_sample
    assert ours.nfe == len(ks) == steps
    torch.testing.assert_close(ours.x, x, rtol=0, atol=1e-4)  # diffusers' sigmas are float32
    predictor_only = solvers.dpm_solver_multistep(sde, score, x_T, ts=ts, order=order)
    assert (predictor_only.x - x).abs().max() > 1e-3  # the corrector is what matches
