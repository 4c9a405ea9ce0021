"""Time grids: their ends, their spacing in the variable they promise, and DDPM sub-sequences that
are exactly diffusers' DDIM timesteps."""

import math

import pytest
import torch
from solver_oracles import discrete_vp, make_sdes

from score_sde import solvers
from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture
from score_sde.solvers import grids

SDES = {**make_sdes(), "vp-discrete": discrete_vp()}


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("make", [grids.uniform, grids.quadratic, grids.log_snr_uniform])
def test_grids_run_from_T_to_t_eps_strictly_decreasing(make, sde_name):
    sde = SDES[sde_name]
    ts = make(sde, 37, t_eps=2e-3)
    assert ts.dtype == torch.float64 and ts.shape == (38,)
    assert ts[0].item() == sde.T and ts[-1].item() == 2e-3
    assert bool((ts[1:] < ts[:-1]).all())


def test_uniform_and_quadratic_spacing():
    sde = VPSDE()
    assert torch.allclose(torch.diff(grids.uniform(sde, 10, t_eps=0.0)),
                          torch.full((10,), -0.1, dtype=torch.float64), atol=1e-15)
    ts = grids.quadratic(sde, 4, t_eps=0.0)  # (i / 4)^2, i = 4..0
    assert torch.allclose(ts, torch.tensor([1, 9 / 16, 1 / 4, 1 / 16, 0], dtype=torch.float64))


@pytest.mark.parametrize("sde_name", SDES)
def test_log_snr_grid_is_uniform_in_log_snr(sde_name):
    sde = SDES[sde_name]
    lam = sde.log_snr(grids.log_snr_uniform(sde, 20, t_eps=1e-3))
    steps = torch.diff(lam)
    assert bool((steps > 0).all())
    assert torch.allclose(steps, steps.mean().expand(20), rtol=1e-9, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 50, 999, 1000])
def test_ddpm_subsequence_is_diffusers_ddim_timesteps(spacing, steps):
    """DDPM step k (diffusers' timestep k - 1) sits at t = k T / N; the grid ends at t = 0."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    sde = VPSDE()
    ts = grids.ddpm_subsequence(sde, steps, num_train_steps=1000, spacing=spacing)
    expected = (sched.timesteps.to(torch.float64) + 1) * sde.T / 1000
    assert ts[-1].item() == 0.0 and torch.allclose(ts[:-1], expected, rtol=0, atol=1e-12)


def test_full_ddpm_grid():
    ts = grids.ddpm_subsequence(VPSDE(), 4, num_train_steps=4)
    assert ts.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"), (dict(steps=2.0), "steps"), (dict(steps=True), "steps"),
    (dict(steps=5, t_eps=1.0), "t_eps"), (dict(steps=5, t_eps=-1e-3), "t_eps"),
])
def test_grid_functions_reject_bad_settings(kwargs, match):
    for make in (grids.uniform, grids.quadratic, grids.log_snr_uniform):
        with pytest.raises(ValueError, match=match):
            make(VPSDE(), **kwargs)


def test_ddpm_subsequence_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        grids.ddpm_subsequence(VPSDE(), 11, num_train_steps=10)
    with pytest.raises(ValueError, match="spacing"):
        grids.ddpm_subsequence(VPSDE(), 5, spacing="karras")


def test_log_snr_grid_needs_a_finite_log_snr():
    with pytest.raises(ValueError, match="finite log-SNR"):
        grids.log_snr_uniform(VPSDE(), 5, t_eps=0.0)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("steps", [3, 5, 10, 20, 50])
def test_log_snr_window_grid(sde_name, steps):
    """One step from T into [lo, hi], uniform in log-SNR inside, one step out to t_eps; hi rises with
    the step count (1 + log2(steps / 5)) and the window is clipped to the SDE's log-SNR range."""
    sde = SDES[sde_name]
    ts = grids.log_snr_window(sde, steps, t_eps=1e-3)
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
    assert ts[0].item() == sde.T and ts[-1].item() == 1e-3 and bool((ts[1:] < ts[:-1]).all())
    lam = (0.5 * sde.log_snr(ts)).tolist()
    lo, hi = max(-3.0, lam[0]), min(1 + math.log2(steps / 5), lam[-1])
    inner = torch.tensor(lam[(lo > lam[0]):len(lam) - (hi < lam[-1])], dtype=torch.float64)
    assert inner[0].item() == pytest.approx(lo, abs=1e-9)
    assert inner[-1].item() == pytest.approx(hi, abs=1e-9)
    torch.testing.assert_close(inner.diff(), torch.full((len(inner) - 1,), (hi - lo) / (
        len(inner) - 1), dtype=torch.float64), rtol=0, atol=1e-9)


@pytest.mark.parametrize("steps", [1, 2])
def test_log_snr_window_with_too_few_steps_is_the_log_snr_grid(steps):
    sde = VPSDE()
    torch.testing.assert_close(grids.log_snr_window(sde, steps), grids.log_snr_uniform(sde, steps))


def test_log_snr_window_rejects_an_empty_window():
    with pytest.raises(ValueError, match="lo < hi"):
        grids.log_snr_window(VPSDE(), 10, lo=1.0, hi=0.5)


def test_log_snr_window_beats_the_plain_log_snr_grid_at_few_steps():
    """What the window is for: at 5 and 10 NFE in 16-D (a mixture other than the benchmark's),
    UniPC-3 on it is closer to the PF-ODE solution than on the plain log-SNR grid, on VP and VE."""
    g = torch.Generator().manual_seed(7)
    gm = GaussianMixture(2.0 * torch.randn(4, 16, generator=g, dtype=torch.float64),
                         0.2 + 0.4 * torch.rand(4, 16, generator=g, dtype=torch.float64))
    for sde in (VPSDE(), VESDE()):
        def score(x, t, sde=sde):
            return gm.score(x, t, sde)

        x_T = sde.prior_sample((200, 16), generator=g, dtype=torch.float64)
        ref = solvers.probability_flow(sde, score, x_T, rtol=1e-8, atol=1e-8, t_eps=1e-3).x
        for steps in (5, 10):
            err = {grid: (solvers.dpm_solver_multistep(sde, score, x_T, order=3, steps=steps,
                                                       corrector="unipc", grid=grid).x - ref)
                   .pow(2).mean().sqrt().item() for grid in ("log_snr", "log_snr_window")}
            assert err["log_snr_window"] < 0.8 * err["log_snr"], (type(sde).__name__, steps, err)
