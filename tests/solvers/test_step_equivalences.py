"""The samplers against the formulas of their papers, written out independently here, with the same
noise: DDIM eta=0 is Euler on dx_bar = eps d rho (docs/math.md, "DDIM is Euler's method"), DDIM
eta=1 on the full DDPM grid is DDPM's ancestral sampler with beta_tilde, the ancestral step is Ho
et al.'s, reverse diffusion is score_sde's, Euler-Maruyama and predictor-corrector use the actual
grid spacing and run predictor first. All in float64, equal to rounding."""

import pytest
import torch
from solver_oracles import exact_score, make_sdes, mixture_2d, noised_draw

from score_sde import solvers
from score_sde.solvers import grids

SDES = make_sdes()
D64 = torch.float64


def _setup(sde_name, n=64):
    sde, gm = SDES[sde_name], mixture_2d()
    return sde, exact_score(gm, sde), noised_draw(gm, sde, n, sde.T, seed=5)


def _coef(sde, t):
    tt = torch.tensor(t, dtype=D64)
    return sde.alpha(tt).item(), sde.sigma(tt).item()


def _t(x, t):
    return torch.full((x.shape[0],), t, dtype=x.dtype)


@pytest.mark.parametrize("sde_name", SDES)
def test_ddim_eta0_is_euler_on_x_bar_in_rho(sde_name):
    """x_bar = x / alpha, rho = sigma / alpha: x_bar_s = x_bar_t + (rho_s - rho_t) eps_hat."""
    sde, score, x_T = _setup(sde_name)
    ts = grids.quadratic(sde, 30)
    out = solvers.ddim(sde, score, x_T, ts=ts, eta=0.0).x
    x = x_T
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
        (a_t, s_t), (a_s, s_s) = _coef(sde, t), _coef(sde, s)
        eps = -s_t * score(x, _t(x, t))
        x_bar = x / a_t + (s_s / a_s - s_t / a_t) * eps
        x = a_s * x_bar
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sde_name", SDES)
def test_ddim_eta1_on_the_full_ddpm_grid_is_ddpm_ancestral_beta_tilde(sde_name):
    sde, score, x_T = _setup(sde_name)
    ts = grids.ddpm_subsequence(sde, 100, num_train_steps=100)
    a = solvers.ddim(sde, score, x_T, ts=ts, eta=1.0, generator=torch.Generator().manual_seed(3))
    b = solvers.ddpm_ancestral(sde, score, x_T, steps=100, variance="beta_tilde",
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.ts, b.ts) and a.nfe == b.nfe == 100
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_ancestral_is_ho_et_al_algorithm_2(variance):
    """x_{i-1} = (x_i - b_i / sqrt(1 - abar_i) eps) / sqrt(1 - b_i) + s_i z, z = 0 on the last
    step, with abar_i = alpha(t_i)^2 and b_i = 1 - abar_i / abar_{i-1} (docs/math.md, "DDPM's ancestral
    step")."""
    sde, score, x_T = _setup("vp")
    n = 50
    g = torch.Generator().manual_seed(4)
    out = solvers.ddpm_ancestral(sde, score, x_T, steps=n, variance=variance, generator=g).x
    ts = grids.ddpm_subsequence(sde, n, num_train_steps=n)
    abar = sde.alpha(ts) ** 2
    g = torch.Generator().manual_seed(4)
    x = x_T
    for i in range(n):
        ab_t, ab_s = abar[i].item(), abar[i + 1].item()
        b = 1 - ab_t / ab_s
        eps = -((1 - ab_t) ** 0.5) * score(x, _t(x, ts[i].item()))
        x = (x - b / (1 - ab_t) ** 0.5 * eps) / (1 - b) ** 0.5
        var = b if variance == "beta" else b * (1 - ab_s) / (1 - ab_t)
        if i < n - 1:
            x = x + var**0.5 * torch.randn(x.shape, generator=g, dtype=D64)
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_reverse_diffusion_predictor_is_score_sde_s(sde_name):
    """VP: x_s = (2 - sqrt(1 - b)) x + b score + sqrt(b) z; VE: x_s = x + (sigma_t^2 - sigma_s^2)
    score + sqrt(sigma_t^2 - sigma_s^2) z (score_sde's ReverseDiffusionPredictor)."""
    sde, score, x_T = _setup(sde_name)
    ts = grids.quadratic(sde, 20)
    out = solvers.predictor_corrector(sde, score, x_T, ts=ts, predictor="reverse_diffusion",
                                      corrector="none", generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    x = x_T
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
        (a_t, s_t), (a_s, s_s) = _coef(sde, t), _coef(sde, s)
        if sde_name == "vp":
            b = 1 - a_t**2 / a_s**2
            x_mean = (2 - (1 - b) ** 0.5) * x + b * score(x, _t(x, t))
        else:
            b = s_t**2 - s_s**2
            x_mean = x + b * score(x, _t(x, t))
        x = x_mean + b**0.5 * torch.randn(x.shape, generator=g, dtype=D64)
    torch.testing.assert_close(out.x, x, rtol=1e-10, atol=1e-10)
    assert out.nfe == 20


def _em_step(sde, score, x, t, s, g):
    """x - (f_t x - g_t^2 score) (t - s) + g_t sqrt(t - s) z, written out."""
    tt = torch.tensor(t, dtype=D64)
    f, g2 = sde.drift_coef(tt).item(), sde.diffusion(tt).item() ** 2
    return x - (f * x - g2 * score(x, _t(x, t))) * (t - s) + (g2 * (t - s)) ** 0.5 * torch.randn(
        x.shape, generator=g, dtype=D64)


def test_euler_maruyama_uses_the_actual_grid_spacing_and_tweedie_denoises():
    sde, score, x_T = _setup("subvp")
    ts = grids.quadratic(sde, 25)
    out = solvers.euler_maruyama(sde, score, x_T, ts=ts, denoise=True,
                                 generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    x = x_T
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x = _em_step(sde, score, x, t, s, g)
    a, s = _coef(sde, ts[-1].item())
    x = (x + s**2 * score(x, _t(x, ts[-1].item()))) / a
    torch.testing.assert_close(out.x, x, rtol=1e-10, atol=1e-10)
    assert out.nfe == 26


@pytest.mark.parametrize("sde_name", SDES)
def test_predictor_corrector_runs_predictor_first_then_langevin_at_the_new_time(sde_name):
    """Song et al.'s Algorithm 1 with the snr step size eps = 2 a (r ||z|| / ||s||)^2 (batch-mean
    norms) and a = alpha_t^2 / alpha_s^2 of the step just taken; sub-VP works too."""
    sde, score, x_T = _setup(sde_name)
    ts, snr, m = grids.uniform(sde, 6), 0.2, 2
    out = solvers.predictor_corrector(sde, score, x_T, ts=ts, predictor="euler_maruyama",
                                      snr=snr, n_steps=m,
                                      generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    x = x_T
    for t, s in zip(ts[:-1].tolist(), ts[1:].tolist()):
        x = _em_step(sde, score, x, t, s, g)
        ratio = _coef(sde, t)[0] ** 2 / _coef(sde, s)[0] ** 2
        for _ in range(m):
            grad = score(x, _t(x, s))
            z = torch.randn(x.shape, generator=g, dtype=D64)
            eps = 2 * ratio * (snr * z.norm(dim=1).mean() / grad.norm(dim=1).mean()) ** 2
            x = x + eps * grad + (2 * eps) ** 0.5 * z
    torch.testing.assert_close(out.x, x, rtol=1e-10, atol=1e-10)
    assert out.nfe == 6 * (1 + m)


def test_samplers_are_reproducible_from_the_generator_and_differ_across_seeds():
    sde, score, x_T = _setup("vp")
    for sampler in (solvers.euler_maruyama, solvers.ddpm_ancestral):
        a, b, c = (sampler(sde, score, x_T, steps=20, generator=torch.Generator().manual_seed(s))
                   for s in (1, 1, 2))
        assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)


def test_images_and_toy_data_share_the_broadcasting():
    """A (B, C, H, W) batch gives per-pixel the same answer as the same numbers as (B, C*H*W)."""
    sde = SDES["vp"]
    x_T = torch.randn(3, 2, 2, 2, dtype=D64, generator=torch.Generator().manual_seed(0))

    def score(x, t):
        return -x / (1 + t).reshape(-1, *([1] * (x.ndim - 1)))

    for sampler, kw in ((solvers.ddim, {}), (solvers.euler_maruyama, {}),
                        (solvers.probability_flow, {}), (solvers.predictor_corrector, {})):
        img = sampler(sde, score, x_T, generator=torch.Generator().manual_seed(1), steps=10, **kw)
        flat = sampler(sde, score, x_T.flatten(1), generator=torch.Generator().manual_seed(1),
                       steps=10, **kw)
        assert img.x.shape == x_T.shape
        torch.testing.assert_close(img.x.flatten(1), flat.x, rtol=1e-9, atol=1e-9)
