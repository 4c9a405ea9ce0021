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


def window_parts(sde, ts, lo=-3.0, hi=None):
    """lambda = log(alpha / sigma) on the grid ts, split into head (up to lo), window, tail (from hi),
    each with its ends; hi defaults to the grid's rule 1 + log2(steps / 5)."""
    steps = len(ts) - 1
    lam = (0.5 * sde.log_snr(ts)).tolist()
    lo, hi = max(lo, lam[0]), min(1 + math.log2(steps / 5) if hi is None else hi, lam[-1])
    i = min(range(len(lam)), key=lambda k: abs(lam[k] - lo))
    j = min(range(len(lam)), key=lambda k: abs(lam[k] - hi))
    assert lam[i] == pytest.approx(lo, abs=1e-9) and lam[j] == pytest.approx(hi, abs=1e-9)
    return [torch.tensor(part, dtype=torch.float64) for part in (lam[:i + 1], lam[i:j + 1], lam[j:])]


def assert_uniform(part):
    if len(part) > 1:
        torch.testing.assert_close(part.diff(), part.diff().mean().expand(len(part) - 1),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("steps", [3, 5, 10, 20, 50, 200])
@pytest.mark.parametrize("stretch", [math.inf, 3.0, 1.5])
def test_log_snr_window_grid(sde_name, steps, stretch):
    """Uniform in lambda on the head [lambda(T), lo], the window [lo, hi] and the tail [hi,
    lambda(t_eps)], each end on the grid; hi rises with the step count (1 + log2(steps / 5)), the
    window is clipped to the SDE's range, and the outer steps are at most about `stretch` times the
    window's (one each at stretch = inf)."""
    sde = SDES[sde_name]
    ts = grids.log_snr_window(sde, steps, t_eps=1e-3, stretch=stretch)
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
    assert ts[0].item() == sde.T and ts[-1].item() == 1e-3 and bool((ts[1:] < ts[:-1]).all())
    parts = window_parts(sde, ts)
    for part in parts:
        assert_uniform(part)
    h_window = parts[1].diff().mean().item()
    for part in (parts[0], parts[2]):
        if len(part) > 2 and steps >= 20:  # refined: about stretch x the window's, rounded
            ratio = part.diff().mean().item() / h_window
            assert stretch / 1.6 <= ratio <= stretch * 1.6, (ratio, stretch)
        elif stretch == math.inf:
            assert len(part) <= 2


def test_log_snr_window_refines_its_head_with_the_budget():
    """VP from T = 1 (lambda = -5.0) to lo = -3: one head step at 5 and 10 steps (the few-step grid),
    then more in proportion to the budget; stretch = inf keeps one at every budget."""
    sde = VPSDE()
    heads = {k: len(window_parts(sde, grids.log_snr_window(sde, k))[0]) - 1 for k in (5, 10, 20, 50, 200)}
    assert heads[5] == heads[10] == 1 and heads[20] >= 2 and heads[50] > heads[20] and heads[200] > heads[50]
    assert all(len(window_parts(sde, grids.log_snr_window(sde, k, stretch=math.inf))[0]) == 2
               for k in (5, 10, 20, 50, 200))
    torch.testing.assert_close(grids.log_snr_window(sde, 10),
                               grids.log_snr_window(sde, 10, stretch=math.inf), rtol=0, atol=0)


@pytest.mark.parametrize("steps", [1, 2])
def test_log_snr_window_with_too_few_steps_is_the_log_snr_grid(steps):
    sde = VPSDE()
    torch.testing.assert_close(grids.log_snr_window(sde, steps), grids.log_snr_uniform(sde, steps))


def test_log_snr_window_rejects_bad_settings():
    with pytest.raises(ValueError, match="lo < hi"):
        grids.log_snr_window(VPSDE(), 10, lo=1.0, hi=0.5)
    for bad in (0.5, True, "3"):
        with pytest.raises(ValueError, match="stretch"):
            grids.log_snr_window(VPSDE(), 10, stretch=bad)


def unipc3_errors(gm, n, g, tol, grids_for):
    """{(SDE name, key): RMS error of UniPC-3 on the grid ts against the PF-ODE solution at rtol =
    atol = tol}, on VP and VE from n prior draws (generator g), for grids_for(sde) -> {key: ts}."""
    err = {}
    for sde in (VPSDE(), VESDE()):
        def score(x, t, sde=sde):
            return gm.score(x, t, sde)

        x_T = sde.prior_sample((n, gm.means.shape[1]), generator=g, dtype=torch.float64)
        ref = solvers.probability_flow(sde, score, x_T, rtol=tol, atol=tol, t_eps=1e-3).x
        for key, ts in grids_for(sde).items():
            x = solvers.dpm_solver_multistep(sde, score, x_T, order=3, corrector="unipc", ts=ts).x
            err[type(sde).__name__, key] = (x - ref).pow(2).mean().sqrt().item()
    return err


def test_log_snr_window_beats_the_plain_log_snr_grid_at_few_steps():
    """What the window is for: at 5 and 10 NFE in 16-D (a mixture other than the benchmark's),
    UniPC-3 on it is closer to the PF-ODE solution than on the plain log-SNR grid, on VP and VE."""
    g = torch.Generator().manual_seed(7)
    gm = GaussianMixture(2.0 * torch.randn(4, 16, generator=g, dtype=torch.float64),
                         0.2 + 0.4 * torch.rand(4, 16, generator=g, dtype=torch.float64))
    err = unipc3_errors(gm, 200, g, 1e-8, lambda sde: {
        (make, steps): getattr(grids, make)(sde, steps) for steps in (5, 10)
        for make in ("log_snr_uniform", "log_snr_window")})
    for name in ("VPSDE", "VESDE"):
        for steps in (5, 10):
            assert err[name, ("log_snr_window", steps)] < 0.8 * err[name, ("log_snr_uniform", steps)]


def test_log_snr_window_converges_because_its_head_is_refined():
    """UniPC-3 against a 1e-10 PF-ODE solution, 50 and 200 steps: with the head refined in proportion
    the error falls by >= 16x (order >= 2); crossing the head in one step (stretch = inf) leaves a
    floor that more steps never remove (< 5x)."""
    g = torch.Generator().manual_seed(5)
    gm = GaussianMixture(3.0 * torch.randn(3, 4, generator=g, dtype=torch.float64),
                         0.2 + 0.3 * torch.rand(3, 4, generator=g, dtype=torch.float64))
    err = unipc3_errors(gm, 50, g, 1e-10, lambda sde: {
        (stretch, steps): grids.log_snr_window(sde, steps, stretch=stretch)
        for stretch in (3.0, math.inf) for steps in (50, 200)})
    for name in ("VPSDE", "VESDE"):
        assert err[name, (3.0, 50)] > 16 * err[name, (3.0, 200)], err
        assert err[name, (math.inf, 50)] < 5 * err[name, (math.inf, 200)], err
