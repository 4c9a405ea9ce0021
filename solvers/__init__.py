"""Samplers and exact likelihoods over any `sde_lib` SDE and any score function score_fn(x, t).

Every sampler is a stateless function with one call form,

    sampler(sde, score_fn, x_T, *, generator=None, callback=None, return_trajectory=False,
            **settings) -> SampleResult(x, nfe, trajectory, ts)

where x_T is (B, *D) at time T (or a shape: a prior draw) and all settings (grid via
`steps`/`t_eps`/`grid` or an explicit decreasing `ts`, eta, method, ...) are keywords with
defaults, so hydra can build one with `_target_: score_sde.solvers.ddim` and `_partial_: true`.
Samplers run under torch.no_grad(), count the score evaluations of the call in `nfe`, check x_T
and the first score for finite values and the result at the end, and make no host sync per step
(the adaptive solvers excepted, whose step control reads the error). A failed solve raises
`SolverError` (a ValueError) naming the samples, the time reached and the setting to change.
"""

from score_sde.solvers import grids, operators
from score_sde.solvers.adaptive import adaptive_sde
from score_sde.solvers.ddim import ddim, ddpm_ancestral
from score_sde.solvers.errors import SolverError
from score_sde.solvers.exponential import dpm_solver_multistep, dpm_solver_singlestep
from score_sde.solvers.guidance import classifier_free_guidance, classifier_guidance
from score_sde.solvers.heun import heun
from score_sde.solvers.imputation import impute
from score_sde.solvers.likelihood import bits_per_dim, dequantize, log_likelihood
from score_sde.solvers.likelihood_bound import nll_bound
from score_sde.solvers.measurement import damped_pseudo_inverse, measurement_guidance
from score_sde.solvers.ode import probability_flow
from score_sde.solvers.result import CountingScore, SampleResult
from score_sde.solvers.sde_samplers import euler_maruyama, langevin_step, predictor_corrector
from score_sde.solvers.torchsde_adapter import torchsde_reverse
from score_sde.solvers.tuning import tune_grid

__all__ = [
    "SampleResult", "SolverError", "CountingScore", "grids", "operators",
    "euler_maruyama", "predictor_corrector", "langevin_step", "probability_flow", "ddim",
    "ddpm_ancestral", "torchsde_reverse", "dpm_solver_multistep", "dpm_solver_singlestep", "heun",
    "adaptive_sde", "tune_grid",
    "log_likelihood", "bits_per_dim", "nll_bound", "dequantize",
    "classifier_free_guidance", "classifier_guidance", "impute", "measurement_guidance",
    "damped_pseudo_inverse",
]
