"""Forward SDEs of score-based diffusion, their marginals and reverses, the SDE on a time grid, the
training losses, and a Gaussian mixture with exact noised densities. Depends on torch only."""

from score_sde.sde_lib.base import SDE, ScoreFn, x0_from_score
from score_sde.sde_lib.grid import SDEGrid, check_sde
from score_sde.sde_lib.loss import (
    WEIGHTINGS,
    classifier_loss,
    dsm_loss,
    sample_time,
    time_density,
    weighting_fn,
)
from score_sde.sde_lib.mixture import GaussianMixture
from score_sde.sde_lib.schedules import (
    BETA_SCHEDULES,
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    beta_table,
)
from score_sde.sde_lib.tensors import (
    append_dims,
    batch_times,
    check_int,
    check_number,
    check_t_eps,
    describe_samples,
    nonfinite_samples,
    randn_like,
    time_tensor,
)
from score_sde.sde_lib.ve import VESDE
from score_sde.sde_lib.vp import VPSDE, SubVPSDE

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "LinearSchedule", "CosineSchedule", "DiscreteSchedule",
    "beta_table", "BETA_SCHEDULES", "SDEGrid", "check_sde", "GaussianMixture", "ScoreFn",
    "x0_from_score", "dsm_loss", "classifier_loss", "sample_time", "time_density", "weighting_fn",
    "WEIGHTINGS", "append_dims", "batch_times", "time_tensor", "check_t_eps", "check_number",
    "check_int", "randn_like", "nonfinite_samples", "describe_samples",
]
