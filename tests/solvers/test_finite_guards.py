"""Non-finite values are stopped where they enter, with messages that say where: x_T at entry, the
score at its first evaluation, a score that turns non-finite later at the end (naming the step,
the time and the samples), and solver failures as one error type, `SolverError`, that names the
samples, the time reached and the keyword to change."""

import math

import pytest
import torch

from score_sde import solvers
from score_sde.sde_lib import VPSDE
from score_sde.solvers import SolverError

D64 = torch.float64
SDE = VPSDE()
X = torch.randn(6, 2, dtype=D64, generator=torch.Generator().manual_seed(0))
BAD = 3  # the sample that goes wrong

SAMPLERS = {
    "euler_maruyama": (solvers.euler_maruyama, dict(steps=8)),
    "predictor_corrector": (solvers.predictor_corrector, dict(steps=8)),
    "ddim": (solvers.ddim, dict(steps=8)),
    "ddpm_ancestral": (solvers.ddpm_ancestral, dict(steps=8)),
    "dpm_solver_multistep": (solvers.dpm_solver_multistep, dict(steps=8, corrector="unipc")),
    "dpm_solver_singlestep": (solvers.dpm_solver_singlestep, dict(steps=4)),
    "heun": (solvers.heun, dict(steps=8)),
    "probability_flow_rk4": (solvers.probability_flow, dict(method="rk4", steps=8)),
    "probability_flow_dopri5": (solvers.probability_flow, dict(rtol=1e-4, atol=1e-4)),
    "torchsde_reverse": (solvers.torchsde_reverse, dict(steps=8, entropy=0)),
    "adaptive_sde": (solvers.adaptive_sde, dict(rtol=0.05, atol=0.05)),
    "impute": (solvers.impute, dict(steps=8, known=torch.zeros(2, dtype=D64),
                                    mask=torch.tensor([1, 0]))),
}


def _run(name, score_fn, x_T=X):
    sampler, settings = SAMPLERS[name]
    return sampler(SDE, score_fn, x_T, generator=torch.Generator().manual_seed(1), **settings)


def _nan_below(t_bad: float):
    """A score that turns NaN for sample BAD at times below t_bad."""

    def score_fn(x, t):
        score = -x
        wrong = (torch.arange(len(x)) == BAD) & (t < t_bad)
        return torch.where(wrong[:, None], float("nan"), score)

    return score_fn


@pytest.mark.parametrize("name", SAMPLERS)
def test_non_finite_x_T_is_refused_at_entry(name):
    x_T = X.clone()
    x_T[BAD, 1] = float("inf")
    with pytest.raises(ValueError, match=rf"x_T has non-finite values in samples \[{BAD}\]"):
        _run(name, lambda x, t: -x, x_T)


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_non_finite_first_score_is_refused(name):
    with pytest.raises(ValueError, match=rf"first evaluation, t = 1,.*samples \[{BAD}\]"):
        _run(name, _nan_below(2.0))


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_score_that_turns_non_finite_names_the_samples_and_the_time(name):
    with pytest.raises(SolverError) as err:
        _run(name, _nan_below(0.5))
    # Langevin's step size is a batch mean: there one NaN reaches every sample
    assert err.value.samples == ([BAD] if name != "predictor_corrector" else list(range(6)))
    assert err.value.t < 0.6  # the step (or attempt) where it appeared, not the end
    assert isinstance(err.value, ValueError)


def test_the_step_of_a_grid_sampler_is_named():
    """ddim on 8 uniform steps from 1 to 1e-3: the score turns NaN below t = 0.5; step 6, from
    ts[5] = 0.375625 to ts[6] = 0.25075, is the first to ask it there, so the state after step 6
    is the first non-finite one."""
    with pytest.raises(SolverError, match=r"at step 6 of 8 \(t = 0.25075\).*steps=") as err:
        _run("ddim", _nan_below(0.5))
    assert err.value.setting == "steps" and math.isclose(err.value.t, 0.25075)


def test_adaptive_sde_giving_up_names_the_setting():
    with pytest.raises(SolverError, match=r"max_attempts = 3.*rtol = 1e-06") as err:
        solvers.adaptive_sde(SDE, lambda x, t: -x, X, rtol=1e-6, atol=1e-6, max_attempts=3)
    assert err.value.setting == "rtol" and err.value.t > 0.99 and err.value.samples


def test_probability_flow_hitting_max_steps_names_the_setting():
    with pytest.raises(SolverError, match="max_steps = 2") as err:
        solvers.probability_flow(SDE, lambda x, t: -x, X, rtol=1e-9, atol=1e-9, max_steps=2)
    assert err.value.setting == "max_steps" and 0 < err.value.t < 1


def test_impute_refuses_non_finite_known_values():
    known = torch.tensor([float("nan"), 0.0], dtype=D64)
    with pytest.raises(ValueError, match="known has non-finite values"):
        solvers.impute(SDE, lambda x, t: -x, X, known=known, mask=torch.tensor([1, 0]), steps=4)
    # outside the mask a NaN is ignored
    solvers.impute(SDE, lambda x, t: -x, X, known=known, mask=torch.tensor([0, 1]), steps=4)
