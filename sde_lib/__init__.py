"""Forward SDEs of score-based diffusion, their marginals and reverses, the denoising score-matching
loss, and a Gaussian mixture with exact noised densities. Depends on torch only."""

from score_sde.sde_lib._shapes import append_dims, check_t_eps, time_for
from score_sde.sde_lib.base import SDE
from score_sde.sde_lib.loss import dsm_loss, sample_time, time_density, weighting_fn
from score_sde.sde_lib.mixture import GaussianMixture
from score_sde.sde_lib.schedules import (
    BETA_SCHEDULES,
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    beta_table,
)
from score_sde.sde_lib.ve import VESDE
from score_sde.sde_lib.vp import VPSDE, SubVPSDE

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSchedule", "CosineSchedule", "DiscreteSchedule",
    "beta_table", "BETA_SCHEDULES", "GaussianMixture",
    "dsm_loss", "sample_time", "time_density", "weighting_fn", "append_dims", "check_t_eps", "time_for",
]
