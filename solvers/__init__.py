"""Samplers and exact likelihoods over any `sde_lib` SDE and any score function score_fn(x, t).

Every sampler is a stateless function with one call form,

    sampler(sde, score_fn, x_T, *, generator=None, **settings) -> SampleResult(x, nfe, trajectory, ts)

where x_T is (B, *D) at time T and all settings (grid via `steps`/`t_eps`/`grid` or an explicit
decreasing `ts`, eta, method, ...) are keywords with defaults, so hydra can build one with
`_target_: solvers.ddim` and `_partial_: true`. Samplers run under torch.no_grad().
"""

from solvers import grids
from solvers.adaptive import adaptive_sde
from solvers.ddim import ddim, ddpm_ancestral
from solvers.edm import heun
from solvers.exponential import dpm_solver_multistep, dpm_solver_singlestep
from solvers.guidance import cfg, classifier_guidance
from solvers.inpainting import impute
from solvers.likelihood import bits_per_dim, log_likelihood, nll_bound
from solvers.ode import probability_flow
from solvers.result import CountingScore, SampleResult
from solvers.sde_samplers import euler_maruyama, langevin_step, predictor_corrector
from solvers.torchsde_adapter import torchsde_reverse
from solvers.tuning import tune_grid

__all__ = [
    "SampleResult", "CountingScore", "grids",
    "euler_maruyama", "predictor_corrector", "langevin_step", "probability_flow", "ddim",
    "ddpm_ancestral", "torchsde_reverse", "dpm_solver_multistep", "dpm_solver_singlestep", "heun",
    "adaptive_sde", "tune_grid",
    "log_likelihood", "bits_per_dim", "nll_bound",
    "cfg", "classifier_guidance", "impute",
]
