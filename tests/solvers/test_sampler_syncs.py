"""After a sampler's entry, its steps make no host sync: no `Tensor.__bool__`, `.item()`,
`.tolist()` (nor float() / int() of a tensor) between the state after the first step and the last
state, with a ScoreModel over a real network as the score. On CUDA the same window runs under
`torch.cuda.set_sync_debug_mode("error")`. The window is opened and closed by the samplers' own
callback, so the entry checks (x_T, the first score) and the check of the result stay outside."""

import pytest
import torch

from score_sde import solvers
from score_sde.models import MLP, ScoreModel, UNet
from score_sde.sde_lib import VPSDE

STEPS = 8
SAMPLERS = {
    "euler_maruyama": (solvers.euler_maruyama, {}),
    "euler_maruyama_denoise": (solvers.euler_maruyama, {"denoise": True}),
    "ddim": (solvers.ddim, {}),
    "ddim_eta": (solvers.ddim, {"eta": 0.5}),
    "ddpm_ancestral": (solvers.ddpm_ancestral, {}),
    "predictor_corrector": (solvers.predictor_corrector, {"n_steps": 2}),
    "dpm_solver_multistep": (solvers.dpm_solver_multistep, {"order": 3}),
    "dpm_solver_multistep_unipc": (solvers.dpm_solver_multistep,
                                   {"order": 3, "corrector": "unipc"}),
    "dpm_solver_singlestep": (solvers.dpm_solver_singlestep, {"order": 3}),
    "heun": (solvers.heun, {}),
    "heun_churn": (solvers.heun, {"churn": 4.0}),
}


def _model(image: bool, device: str) -> ScoreModel:
    torch.manual_seed(0)
    net = (UNet(1, channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=4) if image
           else MLP(2, hidden=16, depth=1, embed_dim=8))
    with torch.no_grad():  # no zero-initialised output layer: a score of 0 stalls Langevin
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return ScoreModel(net.to(device).eval(), VPSDE(), prediction="eps")


def _run(name, score_fn, x_T, generator, opened, closed):
    """Run sampler `name`; the callback calls opened() after step 1 and closed() at the end."""
    sampler, settings = SAMPLERS[name]

    def callback(i, t, x):
        if i == 1:
            opened()
        if i == STEPS:
            closed()

    return sampler(VPSDE(), score_fn, x_T, steps=STEPS, generator=generator, callback=callback,
                   **settings)


@pytest.mark.parametrize("name", SAMPLERS)
def test_the_steps_make_no_host_sync(name, host_syncs):
    model = _model(False, "cpu")
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    _run(name, model, x_T, torch.Generator().manual_seed(2), host_syncs.on, host_syncs.off)
    assert not host_syncs.counting and host_syncs.calls == []


def test_the_steps_of_an_image_model_make_no_host_sync(host_syncs):
    model = _model(True, "cpu")
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _run("euler_maruyama", model, x_T, torch.Generator().manual_seed(2), host_syncs.on,
         host_syncs.off)
    assert host_syncs.calls == []


def test_the_counter_sees_a_sync_in_the_window(host_syncs):
    """The check can fail: a score that reads t on the host is counted at every step."""
    model = _model(False, "cpu")

    def reads_t(x, t):
        t[0].item()
        return model(x, t)

    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    _run("ddim", reads_t, x_T, None, host_syncs.on, host_syncs.off)
    assert host_syncs.calls == ["item"] * (STEPS - 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SAMPLERS)
def test_the_steps_make_no_cuda_sync(name):
    """The same window under torch.cuda.set_sync_debug_mode("error"): any synchronising call
    (a device-to-host read, a blocking host-to-device copy) raises. The noise comes from a CUDA
    generator (a CPU one costs a copy to the device per draw)."""
    model = _model(False, "cuda")
    x_T = torch.randn(16, 2, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    try:
        _run(name, model, x_T, torch.Generator("cuda").manual_seed(2),
             lambda: torch.cuda.set_sync_debug_mode("error"),
             lambda: torch.cuda.set_sync_debug_mode("default"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
