"""The log-SNR clock of adaptive ODE solves (solvers.clock): the same ODE, another time variable."""

import pytest
import torch
import torchdiffeq
from solver_oracles import discrete_vp, exact_score, mixture_2d, noised_draw

from score_sde import solvers
from score_sde.sde_lib import VPSDE, SubVPSDE
from score_sde.solvers.clock import LogSNRClock
from score_sde.solvers.ode import ProbabilityFlow


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE()], ids=["vp", "subvp"])
def test_the_flow_in_log_snr_time_lands_where_the_flow_in_t_does(sde):
    """On a smooth SDE both clocks are valid: the probability-flow ODE from T to t_eps, solved
    tightly in t and in log-SNR, gives the same end points."""
    gm = mixture_2d()
    x_T = noised_draw(gm, sde, 256, sde.T, seed=0)
    score = exact_score(gm, sde)
    in_t = solvers.probability_flow(sde, score, x_T, rtol=1e-9, atol=1e-9, t_eps=1e-3).x
    clock = LogSNRClock(sde, 1e-3, sde.T)
    us = clock.u(torch.tensor([sde.T, 1e-3], dtype=torch.float64))
    in_u = torchdiffeq.odeint(clock.field(ProbabilityFlow(sde, score)), x_T, us, rtol=1e-9, atol=1e-9,
                              method="dopri5", options={"step_t": us})[-1]
    torch.testing.assert_close(in_u, in_t, rtol=0, atol=1e-6)


def test_a_discrete_schedule_needs_t_eps_above_zero_for_adaptive_solves():
    sde, gm = discrete_vp(), mixture_2d()
    score, x = exact_score(gm, sde), gm.sample(4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="t_eps must be > 0 here"):
        solvers.log_likelihood(sde, score, x, t_eps=0.0)
    with pytest.raises(ValueError, match="t_eps must be > 0 here"):
        solvers.probability_flow(sde, score, x, t_eps=0.0)
