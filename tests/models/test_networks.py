"""MLP and U-Net: shapes, dtypes, time features, class conditioning, gradients, validation."""

import math

import pytest
import torch

from score_sde.models import MLP, UNet
from score_sde.models.embeddings import GaussianFourierFeatures, SinusoidalFeatures
from score_sde.models.unet import AttentionBlock

D64 = torch.float64


def tiny_unet(**kw):
    kw = {"channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, **kw}
    return UNet(kw.pop("in_channels", 1), **kw)


@pytest.mark.parametrize("time_embedding", ["fourier", "sinusoidal"])
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_mlp_shape(dim, time_embedding):
    net = MLP(dim, hidden=32, depth=2, embed_dim=16, time_embedding=time_embedding)
    assert net(torch.randn(7, dim), torch.rand(7)).shape == (7, dim)


@pytest.mark.parametrize("in_channels, size, attn", [(1, 8, (4,)), (3, 32, (16,)), (1, 8, ())])
def test_unet_shape(in_channels, size, attn):
    net = tiny_unet(in_channels=in_channels, attn_resolutions=attn,
                    image_size=size if attn else None)
    x = torch.randn(2, in_channels, size, size)
    assert net(x, torch.rand(2)).shape == x.shape
    # attention after each res block at that resolution (1 down + 2 up), plus one in the middle
    n_attn = sum(isinstance(m, AttentionBlock) for m in net.modules())
    assert n_attn == (1 + 3 * len(attn))


def test_unet_places_attention_at_the_named_resolution():
    """For 32x32 inputs with channel_mult (1, 2, 2), resolution 16 is level 1 (32 channels)."""
    net = tiny_unet(channel_mult=(1, 2, 2), attn_resolutions=(16,), image_size=32)
    widths = [m.qkv.in_channels for m in net.down.modules() if isinstance(m, AttentionBlock)]
    assert widths == [32]
    attn = net.down[2].attn  # level 0: res, down; level 1: res + attention
    seen = []
    attn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[-2:]))
    net(torch.randn(1, 1, 32, 32), torch.rand(1))
    assert seen == [(16, 16)]


def test_unet_runs_in_float64_and_matches_float32(randomize):
    net = randomize(tiny_unet(attn_resolutions=(4,), image_size=8, dropout=0.1)).eval()
    x, t = torch.randn(3, 1, 8, 8, dtype=D64), torch.rand(3, dtype=D64)
    out32 = net(x.float(), t.float())
    out64 = net.double()(x, t)
    assert out64.dtype == D64 and torch.isfinite(out64).all()
    torch.testing.assert_close(out64.float(), out32, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("make", [lambda: MLP(3, hidden=16, depth=2, embed_dim=8),
                                  lambda: tiny_unet(attn_resolutions=(4,), image_size=8)])
def test_samples_do_not_interact(make, randomize):
    """Each output depends only on its own input (no batch statistics): needed for likelihoods
    and for sharding a batch across devices."""
    net = randomize(make()).double().eval()
    shape = (4, 3) if isinstance(net, MLP) else (4, 1, 8, 8)
    x, t = torch.randn(shape, dtype=D64), torch.rand(4, dtype=D64)
    full = net(x, t)
    for i in range(4):
        torch.testing.assert_close(net(x[i:i + 1], t[i:i + 1]), full[i:i + 1], rtol=1e-12,
                                   atol=1e-12)


def test_time_features_match_their_formulas():
    t = torch.tensor([0.0, 0.25, 1.0], dtype=D64)
    sin = SinusoidalFeatures(8)(t)
    w = 10000.0 ** (-torch.arange(4, dtype=D64) / 4)
    torch.testing.assert_close(sin, torch.cat([torch.sin(1000 * t[:, None] * w),
                                               torch.cos(1000 * t[:, None] * w)], 1))
    fourier = GaussianFourierFeatures(8, scale=16.0).double()
    arg = 2 * math.pi * t[:, None] * fourier.freqs
    torch.testing.assert_close(fourier(t), torch.cat([torch.sin(arg), torch.cos(arg)], 1))
    assert "freqs" in fourier.state_dict()  # the random frequencies are saved with the weights


@pytest.mark.parametrize("time_embedding", ["fourier", "sinusoidal"])
@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_time_changes_the_output(kind, time_embedding, randomize):
    """The time embedding reaches the output (a shift added before a one-channel group norm
    would be erased by it)."""
    if kind == "mlp":
        net, x = MLP(2, hidden=16, depth=2, embed_dim=8, time_embedding=time_embedding), \
            torch.randn(3, 2, dtype=D64)
    else:
        net, x = tiny_unet(time_embedding=time_embedding), torch.randn(3, 1, 8, 8, dtype=D64)
    net = randomize(net).double()
    a, b = net(x, torch.full((3,), 0.2, dtype=D64)), net(x, torch.full((3,), 0.7, dtype=D64))
    assert (a - b).abs().amax() > 1e-3 * a.abs().amax()


@pytest.mark.parametrize("make, shape", [
    (lambda: MLP(2, hidden=16, depth=2, embed_dim=8, num_classes=4), (5, 2)),
    (lambda: tiny_unet(num_classes=4), (5, 1, 8, 8))])
def test_class_conditioning(make, shape, randomize):
    """Labels change the output; y=None is exactly the null label num_classes."""
    net = randomize(make()).double()
    x, t = torch.randn(shape, dtype=D64), torch.rand(5, dtype=D64)
    out_none = net(x, t)
    torch.testing.assert_close(net(x, t, torch.full((5,), 4)), out_none, rtol=0, atol=0)
    y0, y1 = net(x, t, torch.zeros(5, dtype=torch.long)), net(x, t, torch.ones(5, dtype=torch.long))
    assert (y0 - y1).abs().amax() > 1e-3 and (y0 - out_none).abs().amax() > 1e-3
    # mixed labels in one batch: each row is its own label's output
    mixed = net(x, t, torch.tensor([0, 1, 4, 0, 1]))
    torch.testing.assert_close(mixed[[0, 3]], y0[[0, 3]])
    torch.testing.assert_close(mixed[[1, 4]], y1[[1, 4]])
    torch.testing.assert_close(mixed[2], out_none[2])
    for bad in (torch.tensor([0, 1, 5, 0, 1]), torch.tensor([-1, 0, 0, 0, 0])):
        with pytest.raises(ValueError, match=r"y must lie in \[0, num_classes\) = \[0, 4\)"):
            net(x, t, bad)
    with pytest.raises(ValueError, match="y must be an integer tensor of shape"):
        net(x, t, torch.zeros(5))
    with pytest.raises(ValueError, match=r"y must be an integer tensor of shape \(B,\) = \(5,\)"):
        net(x, t, torch.zeros(4, dtype=torch.long))


def test_unconditional_net_rejects_labels():
    with pytest.raises(ValueError, match="network is unconditional"):
        MLP(2, hidden=8, depth=1, embed_dim=8)(torch.zeros(2, 2), torch.rand(2), torch.zeros(2))


@pytest.mark.parametrize("make, shape", [
    (lambda: MLP(2, hidden=16, depth=2, embed_dim=8, num_classes=3), (4, 2)),
    (lambda: tiny_unet(attn_resolutions=(4,), image_size=8, num_classes=3), (4, 1, 8, 8))])
def test_gradients_reach_every_parameter_and_the_input(make, shape, randomize):
    net = randomize(make())
    x = torch.randn(shape, requires_grad=True)
    net(x, torch.rand(4), torch.tensor([0, 1, 2, 3])).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_zero_initialised_output_still_trains():
    """At the default init the output layer is zero (output 0) but receives a gradient."""
    net = MLP(2, hidden=16, depth=1, embed_dim=8)
    x = torch.randn(4, 2)
    out = net(x, torch.rand(4))
    assert torch.equal(out, torch.zeros_like(out))
    (out - x).pow(2).sum().backward()
    assert net.out[-1].weight.grad.abs().sum() > 0


def test_mlp_validation():
    with pytest.raises(ValueError, match=r"x must have shape \(B, dim\) = \(B, 2\), got \(3, 3\)"):
        MLP(2)(torch.zeros(3, 3), torch.rand(3))
    with pytest.raises(ValueError, match=r"t must be a float or a \(B,\) tensor with B = 3"):
        MLP(2)(torch.zeros(3, 2), torch.rand(4))
    with pytest.raises(ValueError, match="time_embedding must be one of .* got 'learned'"):
        MLP(2, time_embedding="learned")
    with pytest.raises(ValueError, match="embed_dim must be an even int >= 2, got 7"):
        MLP(2, embed_dim=7)
    with pytest.raises(ValueError, match="depth must be an int >= 1, got 0"):
        MLP(2, depth=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 1 or None, got 0"):
        MLP(2, num_classes=0)


def test_unet_validation():
    with pytest.raises(ValueError, match=r"x must have shape \(B, in_channels, H, W\) = \(B, 1,"):
        tiny_unet()(torch.zeros(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="divisible by 2\\^\\(len\\(channel_mult\\) - 1\\) = 2, "
                                         "got 7x7"):
        tiny_unet()(torch.zeros(2, 1, 7, 7), torch.rand(2))
    with pytest.raises(ValueError, match="x must be 8x8 \\(image_size\\), got 16x16"):
        tiny_unet(image_size=8)(torch.zeros(2, 1, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="pass image_size"):
        tiny_unet(attn_resolutions=(4,))
    with pytest.raises(ValueError, match=r"among the U-Net's resolutions \(8, 4\) .* got \[16\]"):
        tiny_unet(attn_resolutions=(16,), image_size=8)
    with pytest.raises(ValueError, match="channel_mult must be a non-empty tuple"):
        tiny_unet(channel_mult=())
    with pytest.raises(ValueError, match="dropout must lie in \\[0, 1\\), got 1.5"):
        tiny_unet(dropout=1.5)


@pytest.mark.parametrize("make, shape", [
    (lambda: MLP(2, hidden=16, depth=2, embed_dim=8), (3, 2)),
    (lambda: tiny_unet(attn_resolutions=(2,), image_size=4), (2, 1, 4, 4))])
def test_jacobian_under_torch_func_matches_autograd(make, shape, randomize):
    """What exact likelihoods do: vmap a torch.func vector-Jacobian product over basis vectors.
    The per-sample Jacobian traces equal those of torch.autograd's full Jacobian."""
    net = randomize(make()).double().eval()
    x, t = torch.randn(shape, dtype=D64), torch.rand(shape[0], dtype=D64)
    _, vjp_fn = torch.func.vjp(lambda z: net(z, t), x)
    n = x[0].numel()
    basis = torch.eye(n, dtype=D64).reshape(n, 1, *shape[1:]).expand(n, *shape)
    rows = torch.func.vmap(lambda v: vjp_fn(v)[0])(basis).reshape(n, shape[0], n)
    traces = rows.diagonal(dim1=0, dim2=2).sum(-1)
    jac = torch.autograd.functional.jacobian(lambda z: net(z, t), x).reshape(
        shape[0], n, shape[0], n)
    want = torch.stack([jac[i, :, i].trace() for i in range(shape[0])])
    torch.testing.assert_close(traces, want, rtol=1e-10, atol=1e-12)
