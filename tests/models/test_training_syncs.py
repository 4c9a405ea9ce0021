"""A library training step, sample_time + dsm_loss(check=False) + backward + AdamW + EMA update,
makes no host sync after the first one (which caches the log-SNR range and builds the optimiser's
state). On CPU the counter keeps the calls the library makes (AdamW's own `.item()` reads its step
counters, which live on the host whatever the device); on CUDA the whole step runs under
`torch.cuda.set_sync_debug_mode("error")`."""

import pytest
import torch

from score_sde.models import EMA, MLP, ScoreModel
from score_sde.sde_lib import VPSDE, dsm_loss, sample_time

SETTINGS = [dict(weighting="likelihood", importance_sampling=True),
            dict(weighting="sigma2", importance_sampling=False),
            dict(weighting="sigma2", importance_sampling=False, num_classes=3)]
IDS = ["likelihood_is", "sigma2", "labels"]


def _training_step(device: str, settings: dict):
    settings = dict(settings)
    classes = settings.pop("num_classes", None)
    sde, gen = VPSDE(), torch.Generator(device).manual_seed(0)
    model = ScoreModel(MLP(2, hidden=16, depth=1, embed_dim=8, num_classes=classes).to(device), sde)
    opt, ema = torch.optim.AdamW(model.parameters(), lr=1e-3), EMA(model, 0.99)
    x0 = torch.randn(32, 2, generator=gen, device=device)
    y = None if classes is None else torch.randint(classes + 1, (32,), generator=gen, device=device)

    def score_fn(x, t):
        return model(x, t, y)

    def step():
        t = sample_time(sde, 32, t_eps=1e-3, importance=settings["importance_sampling"],
                        generator=gen)
        loss = dsm_loss(sde, score_fn, x0, t_eps=1e-3, t=t, generator=gen, check=False, **settings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)

    return step


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_a_training_step_makes_no_host_sync(settings, host_syncs):
    step = _training_step("cpu", settings)
    step()
    host_syncs.on(library_only=True)
    for _ in range(3):
        step()
    host_syncs.off()
    assert host_syncs.calls == []


def test_the_default_check_is_the_one_sync(host_syncs):
    """dsm_loss's default check (x0 finite, t in range) is one host sync a call."""
    sde = VPSDE()
    model = ScoreModel(MLP(2, hidden=8, depth=1, embed_dim=8), sde)
    x0 = torch.randn(8, 2)
    host_syncs.on(library_only=True)
    dsm_loss(sde, model, x0, t_eps=1e-3, generator=torch.Generator().manual_seed(0))
    assert host_syncs.calls == ["__bool__"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_a_training_step_makes_no_cuda_sync(settings):
    step = _training_step("cuda", settings)
    step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
