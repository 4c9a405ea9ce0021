"""ScoreModel against the Gaussian-mixture oracle, the DSM loss through it, and its validation."""

import pytest
import torch
from torch import nn

from score_sde.models import MLP, PREDICTIONS, ScoreModel
from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE, dsm_loss

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


def mixture(event_shape):
    gen = torch.Generator().manual_seed(3)
    means = 2 * torch.randn((3, *event_shape), generator=gen, dtype=D64)
    return GaussianMixture(means, torch.tensor([0.3, 0.5, 0.8], dtype=D64),
                           torch.tensor([0.2, 0.5, 0.3], dtype=D64))


def oracle(gm, sde, x, t):
    """Exact score of p_t and, from it alone, Tweedie's x0 and eps and v = alpha eps - sigma x0."""
    score = gm.score(x, t, sde)
    a = sde.alpha(t).reshape(-1, *[1] * (x.ndim - 1))
    s = sde.sigma(t).reshape(-1, *[1] * (x.ndim - 1))
    eps = -s * score
    x0 = (x + s**2 * score) / a
    return {"score": score, "eps": eps, "x0": x0, "v": a * eps - s * x0}


class FunctionNet(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, t):
        return self.fn(x, t)


class OracleNet(nn.Module):
    """A "network" that outputs the exact quantity of one kind, and records the t it is given."""

    def __init__(self, gm, sde, kind):
        super().__init__()
        self.gm, self.sde, self.kind, self.seen_t = gm, sde, kind, []

    def forward(self, x, t):
        self.seen_t.append(t)
        return oracle(self.gm, self.sde, x, t)[self.kind]


@pytest.mark.parametrize("event_shape", [(2,), (1, 3, 3)])
@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_exact_network_gives_the_exact_score(prediction, name, event_shape):
    """A net outputting the mixture's exact eps / score / x0 / v yields, through ScoreModel, the
    exact score of GaussianMixture.score, and Tweedie's x0 and eps; the net sees t unchanged."""
    sde, gm = SDES[name], mixture(event_shape)
    gen = torch.Generator().manual_seed(4)
    t = 0.01 + (sde.T - 0.01) * torch.rand(16, generator=gen, dtype=D64)
    ones = [1] * len(event_shape)
    x = sde.alpha(t).reshape(-1, *ones) * gm.sample(16, generator=gen) \
        + sde.sigma(t).reshape(-1, *ones) * torch.randn((16, *event_shape), generator=gen, dtype=D64)
    net = OracleNet(gm, sde, prediction)
    model = ScoreModel(net, sde, prediction=prediction)
    want = oracle(gm, sde, x, t)
    torch.testing.assert_close(model(x, t), gm.score(x, t, sde), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.score(x, t), want["score"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.x0(x, t), want["x0"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.eps(x, t), want["eps"], rtol=1e-9, atol=1e-9)
    pred = model.predict(x, t)
    torch.testing.assert_close(pred.output, want[prediction], rtol=0, atol=0)
    for kind in ("score", "x0", "eps"):
        torch.testing.assert_close(getattr(pred, kind), want[kind], rtol=1e-9, atol=1e-9)
    assert all(torch.equal(seen, t) for seen in net.seen_t)


def test_float_time_reaches_the_net_as_a_batch():
    sde, gm = SDES["vp"], mixture((2,))
    net = OracleNet(gm, sde, "eps")
    x = torch.randn(5, 2, dtype=D64)
    torch.testing.assert_close(ScoreModel(net, sde)(x, 0.3), gm.score(x, 0.3, sde))
    assert net.seen_t[-1].shape == (5,) and net.seen_t[-1].dtype == D64
    assert bool((net.seen_t[-1] == 0.3).all())


@pytest.mark.parametrize("name", SDES)
def test_eps_dsm_loss_with_sigma2_weighting_is_the_eps_mse(name, randomize):
    """dsm_loss(weighting="sigma2") of an eps-model is mean_b ||eps_theta(x_t, t) - z||^2 (DDPM)."""
    sde = SDES[name]
    net = randomize(MLP(2, hidden=32, depth=2, embed_dim=16).double())
    model = ScoreModel(net, sde, prediction="eps")
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(64, 2, generator=gen, dtype=D64)
    t = 1e-3 + (sde.T - 1e-3) * torch.rand(64, generator=gen, dtype=D64)
    z = torch.randn(64, 2, generator=gen, dtype=D64)
    loss = dsm_loss(sde, model, x0, weighting="sigma2", t=t, noise=z, t_eps=1e-3)
    mean, sigma = sde.marginal(x0, t)
    eps_pred = net(mean + sigma[:, None] * z, t)
    want = (eps_pred - z).pow(2).sum(1).mean()
    assert want > 0.1  # a non-trivial network, so the equality means something
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)


def test_labels_reach_the_net():
    net = MLP(2, hidden=16, depth=1, embed_dim=8, num_classes=3)
    model = ScoreModel(net, VPSDE())
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(model.eps(x, 0.5, y), net(x, torch.full((4,), 0.5), y))


def test_validation():
    sde = VPSDE()
    net = MLP(2, hidden=8, depth=1, embed_dim=8)
    with pytest.raises(ValueError, match="prediction must be one of .* got 'noise'"):
        ScoreModel(net, sde, prediction="noise")
    with pytest.raises(ValueError, match="sde must be an sde_lib.SDE"):
        ScoreModel(net, "vp")
    with pytest.raises(ValueError, match=r"net must return the shape of x \(3, 2\)"):
        ScoreModel(FunctionNet(lambda x, t: x[:, :1]), sde)(torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        ScoreModel(net, sde)(torch.zeros(3, 2), 1.5)
    with pytest.raises(ValueError, match=r"x must have shape \(B, dim\) = \(B, 2\)"):
        ScoreModel(net, sde)(torch.zeros(3, 5), 0.5)
