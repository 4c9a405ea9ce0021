"""DiffusersUNet: diffusers' UNet2DModel built as the Score SDE paper's DDPM++ / NCSN++, trained
through our ScoreModel and dsm_loss."""

import pytest
import torch

from score_sde.models import DiffusersUNet, ScoreModel
from score_sde.sde_lib import VESDE, VPSDE, dsm_loss

pytest.importorskip("diffusers")

SMALL = dict(channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), norm_groups=8)


@pytest.mark.parametrize("arch, sde, channels", [
    ("ddpmpp", VPSDE(), 16), ("ncsnpp", VESDE(sigma_min=0.01, sigma_max=50.0), 32)])
def test_two_training_steps_on_random_32x32_images(arch, sde, channels):
    """A small variant of each architecture (the paper's layout at channels 16 / 32, one residual
    block a level, two levels) takes two Adam steps of the DSM loss: finite losses, every trained
    weight moved, the loss on the first batch went down."""
    torch.manual_seed(0)
    net = DiffusersUNet(3, 32, arch=arch, channels=channels, **SMALL)
    model = ScoreModel(net, sde, prediction="eps")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    t, noise = torch.rand(4, generator=gen) * 0.9 + 0.05, torch.randn(x0.shape, generator=gen)
    losses = []
    for _ in range(2):
        loss = dsm_loss(sde, model, x0, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, torch.tensor(losses)))
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    model.eval()
    with torch.no_grad():
        assert dsm_loss(sde, model, x0, t=t, noise=noise).item() < losses[0]


def test_labels_and_the_null_label():
    """y = None is the null label num_classes; real labels change the output."""
    torch.manual_seed(0)
    net = DiffusersUNet(1, 8, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                        norm_groups=4, num_classes=3, dropout=0.0).double()
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([0.3, 0.7], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([3, 3])), rtol=0, atol=0)
        assert (net(x, t, torch.tensor([0, 1])) - net(x, t)).abs().min() > 0
    assert net.num_classes == 3
    with pytest.raises(ValueError, match="y must lie"):
        net(x, t, torch.tensor([0, 4]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="ncsnpp", in_channels=1), "in_channels must be 3"),
    (dict(arch="ncsnpp", channels=48), "multiple of 32"),
    (dict(arch="ddpm"), "arch must be one of"),
    (dict(attn_resolutions=(12,)), "attn_resolutions"),
    (dict(image_size=30), "image_size"),
    (dict(image_size=None), "image_size"),
    (dict(time_scale=0.0), "time_scale"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusersUNet(**{**dict(channels=32, **SMALL), **kwargs})


def test_bad_input_is_rejected():
    net = DiffusersUNet(3, 32, channels=16, **SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, 32, 32\)"):
        net(torch.zeros(2, 3, 16, 16), 0.5)
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.zeros(2, 3, 32, 32), 0.5, torch.tensor([0, 1]))
