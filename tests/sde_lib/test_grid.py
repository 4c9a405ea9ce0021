"""SDEGrid: the SDE on a time grid, checked once; its tables against the SDE's own methods and
exact identities of the forward transition, its denoiser against a Gaussian's exact posterior
mean."""

import pytest
import torch

from score_sde.sde_lib import VESDE, VPSDE, SDEGrid, SubVPSDE

D64 = torch.float64
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "cosine": VPSDE(schedule="cosine"),
        "ve": VESDE(sigma_min=0.01, sigma_max=10.0)}


@pytest.mark.parametrize("name", SDES)
def test_tables_are_the_sde_on_the_grid(name):
    sde = SDES[name]
    ts = torch.linspace(sde.T, 0.0, 9, dtype=D64)
    grid = SDEGrid(sde, ts)
    for table, method in (("alpha", sde.alpha), ("sigma", sde.sigma), ("log_snr", sde.log_snr),
                          ("f", sde.drift_coef)):
        torch.testing.assert_close(getattr(grid, table), method(ts), rtol=0, atol=0)
    torch.testing.assert_close(grid.g2, sde.diffusion(ts) ** 2, rtol=0, atol=0)
    torch.testing.assert_close(grid.lam, 0.5 * sde.log_snr(ts), rtol=0, atol=0)
    torch.testing.assert_close(grid.h, ts[:-1] - ts[1:], rtol=0, atol=0)
    assert grid.steps == 8 and grid.times == ts.tolist()
    assert grid.floats("sigma") == grid.sigma.tolist()


@pytest.mark.parametrize("name", SDES)
def test_transition_kernel_identities(name):
    """x_t | x_s ~ N(a_{t|s} x_s, v_{t|s}): a_{t|s} = alpha_t / alpha_s, the marginal composes
    (sigma_t^2 = a^2 sigma_s^2 + v), and so do two steps (Chapman-Kolmogorov); the fraction is
    v / sigma_t^2."""
    sde = SDES[name]
    ts = torch.tensor([sde.T, 0.6, 0.31, 0.05, 1e-3], dtype=D64)
    grid = SDEGrid(sde, ts)
    a, v = grid.kernel_scale, grid.kernel_std**2
    alpha, sigma = sde.alpha(ts), sde.sigma(ts)
    torch.testing.assert_close(a, alpha[:-1] / alpha[1:], rtol=1e-13, atol=0)
    torch.testing.assert_close(sigma[:-1] ** 2, a**2 * sigma[1:] ** 2 + v, rtol=1e-12, atol=0)
    two = SDEGrid(sde, ts[::2])  # T -> 0.31 -> 1e-3: two steps of the grid each
    torch.testing.assert_close(two.kernel_scale, a[::2] * a[1::2], rtol=1e-13, atol=0)
    torch.testing.assert_close(two.kernel_std**2, a[::2] ** 2 * v[1::2] + v[::2], rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(grid.kernel_fraction, v / sigma[:-1] ** 2, rtol=1e-13, atol=0)
    assert bool(((grid.kernel_fraction > 0) & (grid.kernel_fraction <= 1)).all())


def test_the_kernel_is_accurate_where_the_variances_cancel():
    """Two times 1e-9 apart on VP: sigma_t^2 - a^2 sigma_s^2 would lose every digit; the kernel's
    variance is g(t)^2 (t - s) to first order."""
    sde, t = VPSDE(), 0.5
    grid = SDEGrid(sde, torch.tensor([t, t - 1e-9], dtype=D64))
    g2 = sde.diffusion(torch.tensor(t, dtype=D64)).item() ** 2
    assert abs(grid.kernel_std.item() ** 2 / (g2 * 1e-9) - 1) < 1e-6


@pytest.mark.parametrize("name", SDES)
def test_x0_from_score_is_the_exact_posterior_mean_of_a_gaussian(name):
    """For x0 ~ N(mu, s0^2 I): E[x0 | x_t] = mu + alpha s0^2 / (alpha^2 s0^2 + sigma^2) (x_t - alpha mu),
    and the score is -(x_t - alpha mu) / (alpha^2 s0^2 + sigma^2)."""
    sde = SDES[name]
    grid = SDEGrid(sde, torch.tensor([sde.T, 0.4, 0.02], dtype=D64))
    mu, s0 = torch.tensor([0.5, -1.0], dtype=D64), 0.7
    x = torch.randn(5, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        a, s = grid.alpha[i].item(), grid.sigma[i].item()
        var = a**2 * s0**2 + s**2
        score = -(x - a * mu) / var
        want = mu + a * s0**2 / var * (x - a * mu)
        torch.testing.assert_close(grid.x0_from_score(x, score, i), want, rtol=1e-12, atol=1e-12)


def test_the_grid_is_a_float64_copy():
    ts = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float32)
    grid = SDEGrid(VPSDE(), ts)
    assert grid.ts.dtype == D64 and grid.times == [1.0, 0.5, 0.0]
    grid.ts[0] = 0.7
    assert ts[0].item() == 1.0
    x = torch.zeros(3, 2, dtype=torch.float32)
    assert grid.times_like(x).dtype == torch.float32


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([1.0]), "at least 2"),
    (torch.tensor([[1.0, 0.5]]), "1-D"),
    (torch.tensor([0.5, 1.0]), "strictly decreasing"),
    (torch.tensor([1.0, 0.5, 0.5]), "strictly decreasing"),
    (torch.tensor([1.5, 0.5]), r"\[0, T\]"),
    (torch.tensor([1.0, -0.1]), r"\[0, T\]"),
    (torch.tensor([1.0, float("nan")]), "finite"),
])
def test_bad_grids_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        SDEGrid(VPSDE(), bad)


def test_not_an_sde_is_rejected():
    with pytest.raises(ValueError, match="sde must be an sde_lib.SDE"):
        SDEGrid(object(), torch.tensor([1.0, 0.0]))
