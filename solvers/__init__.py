"""Samplers and exact likelihoods over any `sde_lib` SDE and any score function score_fn(x, t).

Every sampler is a stateless function with one call form,

    sampler(sde, score_fn, x_T, *, generator=None, **settings) -> SampleResult(x, nfe, trajectory, ts)

where x_T is (B, *D) at time T and all settings (grid via `steps`/`t_eps`/`grid` or an explicit
decreasing `ts`, eta, method, ...) are keywords with defaults, so hydra can build one with
`_target_: solvers.ddim` and `_partial_: true`. Samplers run under torch.no_grad().
"""

from score_sde.solvers import grids, operators
from score_sde.solvers.adaptive import adaptive_sde
from score_sde.solvers.ddim import ddim, ddpm_ancestral
from score_sde.solvers.edm import heun
from score_sde.solvers.exponential import dpm_solver_multistep, dpm_solver_singlestep
from score_sde.solvers.guidance import cfg, classifier_guidance
from score_sde.solvers.inpainting import impute
from score_sde.solvers.likelihood import bits_per_dim, log_likelihood, nll_bound
from score_sde.solvers.measurement import measurement_guidance
from score_sde.solvers.ode import probability_flow
from score_sde.solvers.result import CountingScore, SampleResult
from score_sde.solvers.sde_samplers import euler_maruyama, langevin_step, predictor_corrector
from score_sde.solvers.torchsde_adapter import torchsde_reverse
from score_sde.solvers.tuning import tune_grid

__all__ = [
    "SampleResult", "CountingScore", "grids", "operators",
    "euler_maruyama", "predictor_corrector", "langevin_step", "probability_flow", "ddim",
    "ddpm_ancestral", "torchsde_reverse", "dpm_solver_multistep", "dpm_solver_singlestep", "heun",
    "adaptive_sde", "tune_grid",
    "log_likelihood", "bits_per_dim", "nll_bound",
    "cfg", "classifier_guidance", "impute", "measurement_guidance",
]
