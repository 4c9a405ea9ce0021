"""torchsde_reverse: the negated-time, flattened reverse SDE is the one our formulas give; one
entropy is one Brownian path at any step count; Ito and Stratonovich methods agree (additive noise);
adaptive stepping and SRK converge to the same path's solution."""

import pytest
import torch
from solver_oracles import exact_score, mixture_2d, noised_draw

from score_sde import solvers
from score_sde.sde_lib import VPSDE, SubVPSDE
from score_sde.solvers.torchsde_adapter import SeededBrownianInterval

D64 = torch.float64


def _problem(sde=None, n=8):
    sde, gm = sde or VPSDE(), mixture_2d()
    return sde, exact_score(gm, sde), noised_draw(gm, sde, n, sde.T, seed=2)


def test_the_seeded_path_is_the_same_on_any_grid():
    """W(b) - W(a) does not depend on how [a, b] was cut into queries."""
    def increment(cuts):
        bm = SeededBrownianInterval(-1.0, -1e-3, (4, 3), entropy=42, dtype=D64)
        return sum(bm(a, b) for a, b in zip(cuts, cuts[1:]))

    coarse = increment(torch.linspace(-1.0, -0.5, 3, dtype=D64).tolist())
    fine = increment(torch.linspace(-1.0, -0.5, 77, dtype=D64).tolist())
    again = increment(torch.linspace(-1.0, -0.5, 3, dtype=D64).tolist())  # a fresh interval
    torch.testing.assert_close(coarse, fine, rtol=0, atol=1e-12)
    torch.testing.assert_close(coarse, again, rtol=0, atol=0)


def test_torchsde_euler_is_euler_maruyama_on_the_reverse_sde_with_the_same_increments():
    """x_{i+1} = x_i - (f x_i - g^2 score) h + g (W(-t_{i+1}) - W(-t_i)): the adapter negates time
    and flattens the state without changing the SDE."""
    sde, score, x_T = _problem(SubVPSDE())
    x_T = x_T.reshape(8, 1, 2)  # (B, C, D): flattened for torchsde, restored after
    steps, bm = 40, SeededBrownianInterval(-1.0, -1e-3, (8, 2), entropy=3, dtype=D64)
    out = solvers.torchsde_reverse(sde, lambda x, t: score(x.reshape(8, 2), t).reshape(x.shape),
                                   x_T, method="euler", steps=steps, bm=bm)
    assert out.x.shape == x_T.shape
    ts = torch.linspace(1.0, 1e-3, steps + 1, dtype=D64).tolist()
    x = x_T.reshape(8, 2)
    for t, s in zip(ts[:-1], ts[1:]):
        tt = torch.full((8,), t, dtype=D64)
        x = (x - sde.reverse_drift(x, tt, score(x, tt)) * (t - s)
             + sde.diffusion(tt)[:, None] * bm(-t, -s))
    torch.testing.assert_close(out.x.reshape(8, 2), x, rtol=1e-6, atol=1e-6)


T_END = 0.5  # before the reverse SDE turns stiff (see the reversible Heun test)


@pytest.fixture(scope="module")
def reference():
    """A fine Ito-Euler solution on the path of entropy 8, from T to T_END."""
    sde, score, x_T = _problem()
    return solvers.torchsde_reverse(sde, score, x_T, entropy=8, method="euler", steps=800,
                                    t_eps=T_END).x


def _solve(entropy, **kw):
    sde, score, x_T = _problem()
    return solvers.torchsde_reverse(sde, score, x_T, entropy=entropy, t_eps=T_END, **kw).x


def test_one_entropy_gives_one_path_at_any_step_count(reference):
    """Same entropy: the solutions at 50 and 200 steps converge to the one at 800 (strong
    convergence on one path); another entropy lands O(1) away."""
    errs = [(_solve(8, steps=n) - reference).abs().max().item() for n in (50, 200)]
    other = (_solve(9, steps=200) - reference).abs().max().item()
    assert errs[1] < errs[0] / 2 and errs[1] < 0.03 and other > 0.3


@pytest.mark.parametrize("method, steps", [
    pytest.param("midpoint", 200, marks=pytest.mark.slow), ("reversible_heun", 400), ("srk", 25),
    pytest.param("milstein", 200, marks=pytest.mark.slow)])
def test_stratonovich_and_high_order_methods_agree_with_ito_euler_on_one_path(
        reference, method, steps):
    """The noise g(t) does not depend on x, so the Ito and Stratonovich SDEs coincide: every method
    converges to the fine Ito-Euler solution on the same path (srk with its Levy area from the same
    Brownian interval). Stopping at T_END = 0.5 keeps the drift non-stiff: reversible Heun is
    unstable on stiff drifts (on dx = -20 x dt + dw it blows up at any step size), and the reverse
    SDE is stiff near t = 0, where g^2 / sigma^2 grows like 1 / t."""
    err = (_solve(8, method=method, steps=steps) - reference).abs().max().item()
    assert err < 0.015


@pytest.mark.slow
def test_adaptive_stepping_follows_the_same_path(reference):
    sde, score, x_T = _problem()
    out = solvers.torchsde_reverse(sde, score, x_T, entropy=8, method="euler", adaptive=True,
                                   dt=0.01, rtol=1e-3, atol=1e-3, t_eps=T_END)
    assert (out.x - reference).abs().max().item() < 0.05 and out.nfe > 10


def test_the_entropy_comes_from_the_generator():
    sde, score, x_T = _problem()
    a, b, c = (solvers.torchsde_reverse(sde, score, x_T, steps=20,
                                        generator=torch.Generator().manual_seed(s)).x
               for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
