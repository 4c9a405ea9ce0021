"""diffusers checkpoints as score models (models.from_diffusers), with diffusers as the oracle: a tiny
random-init UNet2DModel saved with save_pretrained must give, through our SDE and samplers, what
diffusers' own schedulers give from the same x_T."""

import os

import pytest
import torch

from score_sde import solvers
from score_sde.models import PretrainedUNet, from_diffusers
from score_sde.sde_lib import VESDE
from score_sde.solvers.divergence import exact_divergence

diffusers = pytest.importorskip("diffusers")

D64 = torch.float64
N = 1000
SHAPE = (6, 2, 8, 8)


def _unet(**kwargs) -> "diffusers.UNet2DModel":
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, **kwargs)


def _save(folder, unet, scheduler) -> str:
    """A pipeline folder (model_index.json, unet/, scheduler/), as diffusers writes it."""
    pipeline = (diffusers.ScoreSdeVePipeline if isinstance(scheduler, diffusers.ScoreSdeVeScheduler)
                else diffusers.DDPMPipeline)
    pipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    """(folder, scheduler config) of an eps-prediction model on DDPM's linear betas."""
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="linear")
    return _save(tmp_path_factory.mktemp("ddpm"), _unet(), sched), sched.config


def _x_T(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _load(folder, **kwargs):
    sde, model = from_diffusers(folder, **kwargs)
    return sde, model.double()


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to tol of the samples' scale: diffusers computes its step coefficients in float32, and
    a random UNet's samples reach |x| ~ 100 (x0_hat = (x - sigma eps) / alpha with alpha(1) ~ 6e-3)."""
    scale = theirs.abs().max()
    torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=tol)


def _eps(unet, x, k):
    """The UNet's raw output at diffusers' timestep k (an int, as its pipelines call it)."""
    with torch.no_grad():
        return unet(x, k).sample


def test_score_is_minus_eps_over_sigma_at_the_discrete_times(ddpm):
    folder, config = ddpm
    sde, model = _load(folder)
    abar = diffusers.DDPMScheduler.from_config(config).alphas_cumprod.to(D64)
    unet = model.net.unet
    x = _x_T()
    for k in (0, 1, 250, 777, 999):
        t = torch.full((SHAPE[0],), (k + 1) / N, dtype=D64)
        expected = -_eps(unet, x, k) / (1 - abar[k]).sqrt()
        with torch.no_grad():
            torch.testing.assert_close(model(x, t), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sde.alpha((torch.arange(N, dtype=D64) + 1) / N) ** 2, abar, rtol=1e-12, atol=0)


def _ddim_loop(sched, unet, x, steps):
    sched.set_timesteps(steps)
    ks = sched.timesteps.tolist()
    for k in ks:
        x = sched.step(_eps(unet, x, k), k, x).prev_sample
    return x, ks


def _ddim_grid(ks: list[int]) -> torch.Tensor:
    """Our times of diffusers' DDIM timesteps with set_alpha_to_one=False: step k at (k + 1) / N,
    ending at alphas_cumprod[0], t = 1 / N (a step from timestep 0 to there is the identity).
    diffusers' DDIM steps from k to k - N // steps, so the steps must divide N for "trailing"."""
    return torch.tensor([(k + 1) / N for k in ks] + ([1 / N] if ks[-1] != 0 else []), dtype=D64)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_matches_diffusers_ddim_scheduler(ddpm, spacing):
    folder, config = ddpm
    sde, model = _load(folder)
    sched = diffusers.DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False,
                                                timestep_spacing=spacing)
    x_T = _x_T(1)
    theirs, ks = _ddim_loop(sched, model.net.unet, x_T, 10)
    ours = solvers.ddim(sde, model, x_T, ts=_ddim_grid(ks))
    _assert_close(ours.x, theirs)


@pytest.mark.parametrize("order, steps", [(1, 8), (2, 8), (2, 20), (3, 10)])
def test_dpm_solver_multistep_matches_diffusers(ddpm, order, steps):
    """DPMSolverMultistepScheduler (dpmsolver++, midpoint, lower_order_final, final sigma zero) on
    its own timesteps k, at our t = (k + 1) / N, then t = 0 (sigma = 0: the step to x0_hat).
    Ours lowers the order on the last min(order, N - i) steps; diffusers lowers the last step always
    and the second-to-last below 15 steps, so order 3 matches below 15 steps."""
    folder, config = ddpm
    sde, model = _load(folder)
    sched = diffusers.DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=order, solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero")
    sched.set_timesteps(steps)
    ks = sched.timesteps.tolist()
    x_T = _x_T(2)
    x = x_T
    for k in ks:
        x = sched.step(_eps(model.net.unet, x, k), k, x).prev_sample
    ts = torch.tensor([(k + 1) / N for k in ks] + [0.0], dtype=D64)
    ours = solvers.dpm_solver_multistep(sde, model, x_T, ts=ts, order=order)
    assert ours.nfe == len(ks) == steps
    _assert_close(ours.x, x)


def test_exact_divergence_through_the_unet_under_no_grad(ddpm):
    """The likelihood's exact divergence (vmapped vector-Jacobian products, called under no_grad)
    through a diffusers UNet equals the trace of autograd's Jacobian."""
    _, model = _load(ddpm[0])
    x, t = _x_T()[:2], torch.full((2,), 0.3, dtype=D64)
    with torch.no_grad():
        _, div = exact_divergence(lambda y: model(y, t), x)
    jac = torch.autograd.functional.jacobian(lambda v: model(v[None], t[:1])[0], x[0])
    torch.testing.assert_close(div[0], jac.reshape(x[0].numel(), -1).trace(), rtol=1e-10, atol=1e-10)


def test_v_prediction_model_samples_as_diffusers_does(tmp_path):
    sched = diffusers.DDPMScheduler(num_train_timesteps=N, beta_schedule="scaled_linear",
                                    prediction_type="v_prediction")
    sde, model = _load(_save(tmp_path, _unet(), sched))
    assert model.prediction == "v"
    ddim = diffusers.DDIMScheduler.from_config(sched.config, clip_sample=False, set_alpha_to_one=False,
                                               timestep_spacing="trailing")
    x_T = _x_T(3)
    theirs, ks = _ddim_loop(ddim, model.net.unet, x_T, 10)
    _assert_close(solvers.ddim(sde, model, x_T, ts=_ddim_grid(ks)).x, theirs)


def test_ve_model_is_a_score_on_the_schedulers_vesde(tmp_path):
    """ScoreSdeVe: the UNet takes sigma and returns the score (its Fourier path divides by sigma);
    the VESDE's sigma(t) is the scheduler's sigma at its continuous timesteps t."""
    sched = diffusers.ScoreSdeVeScheduler(num_train_timesteps=N, sigma_min=0.01, sigma_max=50.0)
    sde, model = _load(_save(tmp_path, _unet(time_embedding_type="fourier"), sched))
    assert isinstance(sde, VESDE) and (sde.sigma_min, sde.sigma_max) == (0.01, 50.0)
    assert model.prediction == "score"
    sched.set_sigmas(20)
    torch.testing.assert_close(sde.sigma(sched.timesteps.to(D64)), sched.sigmas.to(D64), rtol=1e-5, atol=0)
    x, t = 10 * _x_T(4), torch.linspace(1e-3, 1, SHAPE[0], dtype=D64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), model.net.unet(x, sde.sigma(t)).sample, rtol=0, atol=0)
    gen = torch.Generator().manual_seed(0)
    out = solvers.predictor_corrector(sde, model, sde.prior_sample(SHAPE, generator=gen, dtype=D64), steps=5,
                                      generator=gen)
    assert out.x.shape == SHAPE and bool(torch.isfinite(out.x).all())


def test_class_conditional_model_takes_labels(tmp_path):
    sched = diffusers.DDPMScheduler(num_train_timesteps=N)
    folder = tmp_path / "unet"
    _unet(num_class_embeds=3).save_pretrained(folder)
    sde, model = _load(folder, scheduler=sched)  # a bare UNet folder, the scheduler as an object
    x, y, k = _x_T(5), torch.tensor([0, 1, 2, 0, 1, 2]), 500
    t = torch.full((SHAPE[0],), (k + 1) / N, dtype=D64)
    with torch.no_grad():
        eps = model.net.unet(x, k, class_labels=y).sample
        torch.testing.assert_close(model.eps(x, t, y), eps, rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="class-conditional"):
            model(x, t)
    assert isinstance(model.net, PretrainedUNet) and model.net.num_classes == 3


def test_layouts_and_weights_are_checked(tmp_path, ddpm):
    folder, config = ddpm
    bare = tmp_path / "bare"
    _unet().save_pretrained(bare)
    with pytest.raises(ValueError, match="pass scheduler="):
        from_diffusers(bare)
    sde, _ = from_diffusers(bare, scheduler=dict(config))  # the scheduler as a config dict
    sde_json, _ = from_diffusers(bare, scheduler=os.path.join(folder, "scheduler"))
    t = torch.rand(5, dtype=D64)
    torch.testing.assert_close(sde.alpha(t), sde_json.alpha(t), rtol=0, atol=0)
    pickled = tmp_path / "pickled"
    _unet().save_pretrained(pickled, safe_serialization=False)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        from_diffusers(pickled, scheduler=dict(config))
    assert from_diffusers(pickled, scheduler=dict(config), allow_pickle=True)[1].prediction == "eps"
    with pytest.raises(ValueError, match="no such folder"):
        from_diffusers(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither a diffusers pipeline folder"):
        from_diffusers(tmp_path)
    with pytest.raises(ValueError, match="must name a diffusers scheduler"):
        from_diffusers(bare, scheduler={"_class_name": "NoSuchScheduler"})


def test_offline_hub_id_names_the_folder_route(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 (huggingface_hub reads it at import, so its constant is set too) and an
    empty cache: a Hub id fails with a message that says offline and names the folder route."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"offline: HF_HUB_OFFLINE is set.*pass the folder DIR as source"):
        from_diffusers("google/ddpm-cifar10-32")
