"""Every sampler reports exactly the number of score calls it made, takes the shared call form,
and rejects bad input with a ValueError that names the parameter."""

import pytest
import torch
import torchsde

from score_sde import solvers
from score_sde.sde_lib import VESDE, VPSDE, SubVPSDE
from score_sde.solvers import grids

D64 = torch.float64


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, t):
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        self.calls += 1
        return -x


X = torch.randn(8, 3, dtype=D64, generator=torch.Generator().manual_seed(0))

# (sampler, settings, expected NFE)
CASES = [
    (solvers.euler_maruyama, dict(steps=17), 17),
    (solvers.euler_maruyama, dict(steps=17, denoise=True), 18),
    (solvers.euler_maruyama, dict(ts=grids.log_snr_uniform(VPSDE(), 9)), 9),
    (solvers.predictor_corrector, dict(steps=10, n_steps=2), 30),
    (solvers.predictor_corrector, dict(steps=10, corrector="none", denoise=True), 11),
    (solvers.predictor_corrector, dict(steps=10, predictor="ancestral", n_steps=0), 10),
    (solvers.probability_flow, dict(method="euler", steps=13), 13),
    (solvers.probability_flow, dict(method="midpoint", steps=13), 26),
    (solvers.probability_flow, dict(method="rk4", steps=13), 52),
    (solvers.ddim, dict(steps=23, eta=0.3), 23),
    (solvers.ddim, dict(ts=grids.ddpm_subsequence(VPSDE(), 7)), 7),
    (solvers.ddpm_ancestral, dict(steps=40), 40),
    (solvers.ddpm_ancestral, dict(ts=grids.quadratic(VPSDE(), 12), variance="beta"), 12),
    # torchsde evaluates the drift once more, to check its shape; reversible Heun once at the start
    (solvers.torchsde_reverse, dict(method="euler", steps=30, entropy=1), 31),
    (solvers.torchsde_reverse, dict(method="midpoint", steps=30, entropy=1), 61),
    (solvers.torchsde_reverse, dict(method="reversible_heun", steps=30, entropy=1), 32),
    (solvers.torchsde_reverse, dict(method="euler", steps=1000,  # t + k dt rounds past ts[-1]
                                    bm=torchsde.BrownianInterval(-1.0, -1e-3, (8, 3), dtype=D64)),
     1001),
]


@pytest.mark.parametrize("sampler, settings, nfe", CASES)
@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_nfe_is_the_exact_number_of_score_calls(sampler, settings, nfe, sde):
    score = Counter()
    out = sampler(sde, score, X, generator=torch.Generator().manual_seed(0), **settings)
    assert out.nfe == score.calls == nfe
    assert out.x.shape == X.shape and out.x.dtype == X.dtype


def test_adaptive_nfe_is_counted_too():
    score = Counter()
    out = solvers.probability_flow(VPSDE(), score, X, rtol=1e-6, atol=1e-6)
    assert out.nfe == score.calls > 10


@pytest.mark.parametrize("sampler", [
    solvers.euler_maruyama, solvers.predictor_corrector, solvers.probability_flow, solvers.ddim,
    solvers.ddpm_ancestral, pytest.param(solvers.torchsde_reverse, marks=pytest.mark.slow)])
def test_shared_call_form_and_trajectory(sampler):
    """sampler(sde, score_fn, x_T, generator=g) works with defaults alone (hydra's _partial_), and
    the trajectory holds one state per grid time, from x_T to x."""
    sde = VPSDE()
    out = sampler(sde, lambda x, t: -x, X, generator=torch.Generator().manual_seed(0))
    assert out.x.shape == X.shape and out.nfe > 0
    small = dict(steps=5) if sampler is not solvers.probability_flow else dict(method="rk4",
                                                                                steps=5)
    if sampler is solvers.torchsde_reverse:
        small["ts"] = grids.uniform(sde, 5)
    seen = []
    out = sampler(sde, lambda x, t: -x, X, generator=torch.Generator().manual_seed(0),
                  return_trajectory=True, callback=lambda i, t, x: seen.append((i, t)), **small)
    assert out.trajectory.shape == (6, *X.shape)
    torch.testing.assert_close(out.trajectory[0], X)
    torch.testing.assert_close(out.trajectory[-1], out.x)
    assert [i for i, _ in seen] == list(range(6)) and seen[0][1] == 1.0


def test_score_keeps_the_device_and_dtype_of_x_float32():
    x = X.float()
    for sampler in (solvers.ddim, solvers.euler_maruyama, solvers.probability_flow):
        out = sampler(VPSDE(), Counter(), x, steps=5)
        assert out.x.dtype == torch.float32


BAD = [
    (solvers.euler_maruyama, dict(steps=0), "steps"),
    (solvers.euler_maruyama, dict(t_eps=1.5), "t_eps"),
    (solvers.euler_maruyama, dict(grid="cosine"), "grid"),
    (solvers.euler_maruyama, dict(ts=torch.tensor([0.1, 0.5])), "decreasing"),
    (solvers.ddim, dict(ts=torch.tensor([2.0, 0.5])), r"\[0, T\]"),
    (solvers.ddim, dict(eta=-0.1), "eta"),
    (solvers.ddim, dict(eta=3.0), "eta"),
    (solvers.ddpm_ancestral, dict(variance="fixed_large"), "variance"),
    (solvers.ddpm_ancestral, dict(steps=0), "steps"),
    (solvers.predictor_corrector, dict(predictor="heun"), "predictor"),
    (solvers.predictor_corrector, dict(corrector="ald"), "corrector"),
    (solvers.predictor_corrector, dict(snr=0.0), "snr"),
    (solvers.predictor_corrector, dict(n_steps=-1), "n_steps"),
    (solvers.probability_flow, dict(method="rk45"), "method"),
    (solvers.probability_flow, dict(rtol=0.0), "rtol"),
    (solvers.probability_flow, dict(method="rk4", steps=0), "steps"),
    (solvers.torchsde_reverse, dict(method="rk4"), "method"),
    (solvers.torchsde_reverse, dict(dt=-0.1), "dt"),
    (solvers.torchsde_reverse, dict(steps=0), "steps"),
]


@pytest.mark.parametrize("sampler, settings, match", BAD)
def test_bad_settings_raise_value_errors_naming_the_parameter(sampler, settings, match):
    with pytest.raises(ValueError, match=match):
        sampler(VPSDE(), Counter(), X, **settings)


@pytest.mark.parametrize("sampler", [solvers.euler_maruyama, solvers.predictor_corrector,
                                     solvers.probability_flow, solvers.ddim,
                                     solvers.ddpm_ancestral, solvers.torchsde_reverse])
@pytest.mark.parametrize("x_T", [torch.randn(5), torch.zeros(0, 2), torch.ones(3, 2,
                                                                                dtype=torch.long)],
                         ids=["no-batch", "empty", "int"])
def test_bad_x_T_raises(sampler, x_T):
    with pytest.raises(ValueError, match="x_T"):
        sampler(VPSDE(), Counter(), x_T)


def test_a_score_of_the_wrong_shape_raises():
    with pytest.raises(ValueError, match="score_fn"):
        solvers.ddim(VPSDE(), lambda x, t: x[:, :1], X, steps=3)


def test_ddim_needs_a_linear_sde():
    class NotLinear:
        T = 1.0

    with pytest.raises(ValueError, match="sde"):
        solvers.ddim(NotLinear(), Counter(), X)


@pytest.mark.parametrize("sampler", [solvers.euler_maruyama, solvers.ddim,
                                     solvers.probability_flow, solvers.torchsde_reverse])
def test_a_shape_for_x_T_means_a_prior_draw_from_the_generator(sampler):
    sde = VESDE()
    a = sampler(sde, Counter(), (6, 2), generator=torch.Generator().manual_seed(3), steps=4)
    g = torch.Generator().manual_seed(3)
    x_T = sde.prior_sample((6, 2), generator=g)
    b = sampler(sde, Counter(), x_T, generator=g, steps=4)
    assert a.x.shape == (6, 2)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="x_T"):
        sampler(sde, Counter(), (6,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [7, 999, 1000])
def test_torchsde_takes_exactly_the_asked_steps_in_float32_too(dtype, steps):
    """Summing dt in float32 would add a tiny extra step; the adapter keeps times in float64."""
    out = solvers.torchsde_reverse(VPSDE(), Counter(), X.to(dtype), steps=steps,
                                   bm=torchsde.BrownianInterval(-1.0, -1e-3, (8, 3), dtype=dtype))
    assert out.nfe == steps + 1 and out.x.dtype == dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sampler", [solvers.euler_maruyama, solvers.predictor_corrector,
                                     solvers.probability_flow, solvers.ddim,
                                     solvers.ddpm_ancestral, solvers.torchsde_reverse])
def test_samplers_run_on_cuda_with_a_cpu_generator(sampler):
    """Coefficient tables never sit on the wrong device; CPU and CUDA give the same samples."""
    cpu = sampler(VPSDE(), lambda x, t: -x, X, generator=torch.Generator().manual_seed(0), steps=8)
    gpu = sampler(VPSDE(), lambda x, t: -x, X.cuda(), generator=torch.Generator().manual_seed(0),
                  steps=8)
    assert gpu.x.device.type == "cuda"
    torch.testing.assert_close(gpu.x.cpu(), cpu.x, rtol=1e-9, atol=1e-9)


EVERY_SAMPLER = [
    (solvers.euler_maruyama, dict(steps=5)),
    (solvers.predictor_corrector, dict(steps=5, n_steps=2)),
    (solvers.probability_flow, dict(method="rk4", steps=5)),
    (solvers.probability_flow, dict(rtol=1e-3, atol=1e-3)),
    (solvers.ddim, dict(steps=5)),
    (solvers.ddpm_ancestral, dict(steps=5)),
    (solvers.torchsde_reverse, dict(steps=5, entropy=1)),
    (solvers.dpm_solver_multistep, dict(steps=5, order=3, corrector="unipc")),
    (solvers.dpm_solver_singlestep, dict(steps=3, order=3)),
    (solvers.heun, dict(steps=5, churn=2.0)),
    (solvers.adaptive_sde, dict(rtol=0.1, atol=0.1)),
    (solvers.impute, dict(steps=5, known=torch.zeros(3, dtype=D64), mask=torch.tensor([1, 0, 0]),
                          sampler=solvers.heun)),
]


@pytest.mark.parametrize("sampler, settings", EVERY_SAMPLER,
                         ids=lambda v: getattr(v, "__name__", ""))
def test_nfe_counts_this_calls_evaluations_with_a_pre_used_counter(sampler, settings):
    """A CountingScore that has counted 5 calls already: nfe is this call's count alone."""
    score = Counter()
    pre_used = solvers.CountingScore(score)
    for _ in range(5):
        pre_used(X, torch.full((8,), 0.5, dtype=D64))
    out = sampler(VPSDE(), pre_used, X, generator=torch.Generator().manual_seed(0), **settings)
    assert out.nfe > 0 and pre_used.nfe == score.calls == 5 + out.nfe
