"""Real learning checks: small networks trained with dsm_loss learn the exact score of Gaussian
data (MLP on 2-D points, U-Net on 8x8 images)."""

import pytest
import torch

from score_sde.models import EMA, MLP, ScoreModel, UNet
from score_sde.sde_lib import VPSDE, GaussianMixture, dsm_loss


def relative_error(model, gm, sde, gen, per_time=100):
    """E ||sigma (s_theta - s)||^2 / E ||sigma s||^2 = E||eps_theta - eps*||^2 / E||eps*||^2 in
    three bands of t (t < 0.25, t < 0.55, t >= 0.55), with x ~ p_t drawn exactly; 1 for a model
    that outputs zero."""
    t = torch.linspace(0.05, 1.0, 20).repeat_interleave(per_time)
    n = t.shape[0]
    x = gm.sample(n, generator=gen)
    x = sde.alpha(t).reshape(-1, *[1] * (x.ndim - 1)) * x + sde.sigma(t).reshape(
        -1, *[1] * (x.ndim - 1)) * torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        est = model(x, t)
    exact = gm.score(x, t, sde)
    sigma = sde.sigma(t).reshape(-1, *[1] * (x.ndim - 1))
    err = (sigma * (est - exact)).pow(2).flatten(1).sum(1)
    ref = (sigma * exact).pow(2).flatten(1).sum(1)
    return [(err[band].mean() / ref[band].mean()).item()
            for band in (slice(0, 4 * per_time), slice(4 * per_time, 10 * per_time),
                         slice(10 * per_time, n))]


def train(model, sde, gm, steps, batch, lr, ema=None):
    """Adam on the eps-weighted DSM loss of draws of gm, updating ema after each step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = dsm_loss(sde, model, gm.sample(batch, generator=gen), t_eps=1e-3, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)


def test_small_mlp_learns_the_exact_score_of_a_gaussian():
    """250 Adam steps of the eps-parameterised DSM loss on N((1, -0.5), 0.5^2 I) under the VP SDE:
    the learned score is within a few percent of the exact one at every noise level (t >= 0.05),
    and so is its EMA; untrained, the same measure is exactly 1."""
    torch.manual_seed(0)
    sde = VPSDE()
    gm = GaussianMixture(torch.tensor([[1.0, -0.5]]), 0.5)
    model = ScoreModel(MLP(2, hidden=64, depth=2, embed_dim=32), sde, prediction="eps")
    ema = EMA(model, decay=0.99, warmup=True)
    assert relative_error(model, gm, sde, torch.Generator().manual_seed(2)) == [1.0, 1.0, 1.0]

    train(model, sde, gm, 250, 256, 3e-3, ema)

    errors = relative_error(model, gm, sde, torch.Generator().manual_seed(2))
    assert max(errors) < 0.05, errors
    ema_errors = relative_error(ema.module, gm, sde, torch.Generator().manual_seed(2))
    assert max(ema_errors) < 0.05, ema_errors


@pytest.mark.slow
def test_small_unet_learns_the_exact_score_of_image_gaussians():
    """60 Adam steps on a two-component mixture of 8x8 images (smooth means, std 0.2) under the VP
    SDE, through every U-Net part (attention at 4x4 included): the eps error is a small fraction
    of the zero predictor's at every noise level (about 3-7% when written)."""
    torch.manual_seed(0)
    sde = VPSDE()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    gm = GaussianMixture(torch.stack([(xx * yy)[None], (xx + yy)[None] / 2]), 0.2)
    net = UNet(1, channels=16, num_res_blocks=1, attn_resolutions=(4,), image_size=8)
    model = ScoreModel(net, sde, prediction="eps")
    train(model, sde, gm, 60, 32, 2e-3)
    errors = relative_error(model, gm, sde, torch.Generator().manual_seed(2), per_time=20)
    assert max(errors) < 0.2, errors
