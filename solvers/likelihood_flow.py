"""The likelihood's augmented probability-flow ODE for torchdiffeq, and its two step controls.

State (x, Delta[, C]): x (B, *D) the point on its path; Delta (B, P) the divergence integral, one
column per Hutchinson probe (one for the exact divergence); C (P, B, N) the same integral split
into the N coordinates' terms v_i (J^T v)_i (kept with P >= 2 probes held fixed: their spread over
the probes gives the variance of the estimate, `solvers.likelihood`). The state may be kept in
float64 while the score runs in the data's dtype (`state_dtype`).

Redrawn probes (`redraw`): every evaluation draws its own probes, so a column of Delta is the
solver's quadrature of the divergence with an independent Hutchinson estimate at each node, the
nodes' errors summed (weights squared) instead of one probe's error carried through the whole
solve. Delta stays in the step control: its error estimate then holds the nodes' noise too, so the
tolerance bounds the estimator's error as well as the solver's (steps shrink until the noise is
within it: at tight tolerances that takes many evaluations). Leaving Delta out would let the
steps follow x alone, which misses a trained network's divergence near t_eps (a stiff ~N / sigma^2
term) by hundreds of nats. The steps then depend on the probes, but only through the error
estimate, whose noise is symmetric: the accepted nodes' noise keeps mean zero (checked against the
Gaussian-mixture oracle in the tests).

Error control (`ERROR_CONTROLS`): torchdiffeq hands the norm the error of each state tensor,
already divided elementwise by atol + rtol |y|.
    per_sample   max over samples of max(RMS of the x error, RMS of the Delta error): a sample's
                 accuracy does not depend on its batch, and log p is not drowned by the N
                 components of x
    batch        RMS over every component of x and Delta of the whole batch as one flat vector:
                 scipy's solve_ivp norm on score_sde_pytorch's state (the batch's x, then one
                 log-density per sample), so a tolerance means what it means there
C is never part of the norm: it follows the steps that x and Delta choose.
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, describe_samples, nonfinite_samples
from score_sde.solvers.divergence import draw_probes, exact_divergence, hutchinson_divergence
from score_sde.solvers.errors import SolverError

ERROR_CONTROLS = ("per_sample", "batch")


class AugmentedFlow:
    """torchdiffeq's f(t, (x, Delta[, C])) -> their time derivatives, counting evaluations, with
    the error norm of `error_control`, which remembers the sample that asked for the smallest step.

    Args:
        sde, score_fn: the SDE and s(x, t).
        x: (B, *D) the data; the score sees its dtype whatever the state's.
        t_eps: the lower end of the solve (the time is clamped to [t_eps, T]).
        probes: (P, B, *D) Hutchinson probes, or None for the exact divergence.
        chunk_size: basis vectors per pass of the exact divergence.
        per_coordinate: also integrate C (fixed probes only).
        error_control: one of ERROR_CONTROLS.
        redraw: draw fresh probes like `probes` (its noise) at every evaluation (module doc).
        noise, generator: the probes' distribution and source when redrawn.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, x: Tensor, t_eps: float,
                 probes: Tensor | None, chunk_size: int | None, *, per_coordinate: bool,
                 error_control: str, redraw: bool = False, noise: str = "rademacher",
                 generator: torch.Generator | None = None):
        if redraw and (probes is None or per_coordinate):
            raise ValueError("redraw needs Hutchinson probes and no per-coordinate terms")
        self.sde, self.score_fn, self.probes, self.chunk_size = sde, score_fn, probes, chunk_size
        self.per_coordinate, self.redraw, self.noise, self.generator = (
            per_coordinate, redraw, noise, generator)
        self.t_lo, self.score_dtype, self.n = t_eps, x.dtype, x[0].numel()
        self.norm = self.per_sample_norm if error_control == "per_sample" else self.batch_norm
        self.nfe, self.t_last = 0, t_eps
        self.worst: Tensor | int = 0  # the sample that set the last step (read after a failure)

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = state[0]
        t = t.to(x.dtype).clamp(self.t_lo, self.sde.T)  # the solver's t may pass T by an ulp
        score, div_s, terms = self.evaluate(t, x)
        velocity = self.sde.probability_flow_drift(x, t.expand(x.shape[0]), score.to(x.dtype),
                                                   check=False)
        f, g2 = self.sde.drift_coef(t, check=False), self.sde.diffusion(t, check=False) ** 2
        d_delta = f * self.n - 0.5 * g2 * div_s.to(x.dtype)  # div v = f N - g^2 / 2 div s
        if not self.per_coordinate:
            return velocity, d_delta
        return velocity, d_delta, -0.5 * g2 * terms.to(x.dtype)

    def evaluate(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The score and its divergence at (x, t), one evaluation (counted, checked finite).

        Args:
            t: a 0-dim time in [t_eps, T].
            x: (B, *D) in the state's dtype; the score sees the data's.

        Returns:
            (score (B, *D), div s (B, P) (P = 1 for the exact divergence), the per-coordinate
            terms (P, B, N) with per_coordinate, else None), in the data's dtype.
        """
        self.nfe, self.t_last = self.nfe + 1, t
        t_score = t.to(self.score_dtype).expand(x.shape[0])

        def score_at(y: Tensor) -> Tensor:
            return self.score_fn(y, t_score)

        y, terms = x.to(self.score_dtype), None
        if self.probes is None:
            score, div_s = exact_divergence(score_at, y, chunk_size=self.chunk_size)
            div_s = div_s[:, None]
        else:
            if self.redraw:
                self.probes = draw_probes(y, len(self.probes), self.noise,
                                          generator=self.generator)
            score, terms = hutchinson_divergence(score_at, y, self.probes,
                                                 per_coordinate=self.per_coordinate)
            if self.per_coordinate:
                terms = terms.flatten(2)  # (P, B, N)
            div_s = (terms.sum(-1) if self.per_coordinate else terms).T
        bad = nonfinite_samples(score)  # one host sync per evaluation, as the step control's
        if bad:
            raise SolverError(f"score_fn returned non-finite values at t = {t.item():.6g} in "
                              f"{describe_samples(bad, x.shape[0])}; check the model at this "
                              "time", samples=bad, t=t.item(), setting=None)
        return score, div_s, terms

    def per_sample_norm(self, scaled_error: tuple[Tensor, ...]) -> Tensor:
        """max over samples of max(RMS of x error, RMS of Delta error), both already / tolerance."""
        ex, ed = scaled_error[0], scaled_error[1]
        per_sample = torch.maximum(ex.flatten(1).pow(2).mean(1).sqrt(), ed.pow(2).mean(1).sqrt())
        ratio, self.worst = per_sample.max(0)  # a tensor: read only after a failure
        return ratio

    def batch_norm(self, scaled_error: tuple[Tensor, ...]) -> Tensor:
        """RMS over all components of x and Delta, the batch as one flat vector (scipy's norm)."""
        ex, ed = scaled_error[0], scaled_error[1]
        per_sample = ex.flatten(1).pow(2).sum(1) + ed.pow(2).sum(1)
        self.worst = per_sample.argmax()
        return (per_sample.sum() / (ex.numel() + ed.numel())).sqrt()
