"""The U-Net's image condition (extra input channels): it reaches the output, cond=None is the
all-zero condition, rows do not mix, labels keep working beside it, the output keeps the data's
shape, and ScoreModel passes it through every conversion."""

import pytest
import torch

from score_sde.models import ScoreModel, UNet
from score_sde.sde_lib import VPSDE

D64 = torch.float64


def cond_unet(**kw):
    return UNet(1, channels=16, channel_mult=(1, 2), num_res_blocks=1, cond_channels=2, **kw)


def test_the_condition_reaches_the_output(randomize):
    net = randomize(cond_unet()).double()
    x, t = torch.randn(4, 1, 8, 8, dtype=D64), torch.rand(4, dtype=D64)
    c1, c2 = torch.randn(4, 2, 8, 8, dtype=D64), torch.randn(4, 2, 8, 8, dtype=D64)
    out1 = net(x, t, cond=c1)
    assert out1.shape == x.shape  # the data's channels, not the condition's
    assert (out1 - net(x, t, cond=c2)).abs().amax() > 1e-3
    torch.testing.assert_close(net(x, t), net(x, t, cond=torch.zeros_like(c1)), rtol=0, atol=0)
    # one row's condition changes only that row
    c3 = c1.clone()
    c3[2] = c2[2]
    out3 = net(x, t, cond=c3)
    torch.testing.assert_close(out3[[0, 1, 3]], out1[[0, 1, 3]])
    assert (out3[2] - out1[2]).abs().amax() > 1e-3


def test_labels_keep_working_beside_the_condition(randomize):
    net = randomize(cond_unet(num_classes=3)).double()
    x, t = torch.randn(2, 1, 8, 8, dtype=D64), torch.rand(2, dtype=D64)
    c = torch.randn(2, 2, 8, 8, dtype=D64)
    y0, y1 = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    assert (net(x, t, y0, cond=c) - net(x, t, y1, cond=c)).abs().amax() > 1e-3
    torch.testing.assert_close(net(x, t, cond=c), net(x, t, torch.full((2,), 3), cond=c))


def test_score_model_passes_the_condition(randomize):
    net = randomize(cond_unet(num_classes=3)).double()
    model = ScoreModel(net, VPSDE())
    x, c, y = torch.randn(3, 1, 8, 8, dtype=D64), torch.randn(3, 2, 8, 8, dtype=D64), torch.arange(3)
    t = torch.full((3,), 0.4, dtype=D64)
    eps = net(x, t, y, cond=c)
    torch.testing.assert_close(model.eps(x, 0.4, y, cond=c), eps)
    torch.testing.assert_close(model.predict(x, 0.4, y, cond=c).eps, eps)
    sigma = VPSDE().sigma(t)[0]
    torch.testing.assert_close(model(x, 0.4, y, cond=c), -eps / sigma)
    assert (model(x, 0.4, y, cond=c) - model(x, 0.4, y)).abs().amax() > 1e-3


def test_condition_validation():
    net = cond_unet()
    x, t = torch.zeros(2, 1, 8, 8), torch.rand(2)
    with pytest.raises(ValueError, match=r"cond must have shape .* = \(2, 2, 8, 8\) .* got \(2, 1, 8, 8\)"):
        net(x, t, cond=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"got \(2, 2, 4, 4\)"):
        net(x, t, cond=torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match="takes no condition .cond_channels=0."):
        UNet(1, channels=8, channel_mult=(1,), num_res_blocks=1)(x, t, cond=torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="cond_channels must be an int >= 0"):
        UNet(1, cond_channels=-1)
