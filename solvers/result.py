"""What every sampler returns, and what every sampler's loop shares: the NFE counter, the entry
check of x_T and the step log (trajectory, callback, the finite-value check at the end).

Finite values are checked where it costs no host sync per step: x_T at entry, the score at the
first evaluation, the result at the end; the step log keeps one reduction per step (no sync) so
that a non-finite result names the step where it first appeared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from score_sde.sde_lib import SDE, ScoreFn, describe_samples, nonfinite_samples
from score_sde.solvers.errors import SolverError

Callback = Callable[[int, float, Tensor], None]


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        x: (B, *D) the samples, shaped like x_T.
        nfe: the number of score-function evaluations of this call (each on the whole batch).
        trajectory: (len(ts), B, *D) the states at the times ts, if requested.
        ts: the decreasing times of the states (float64): the grid, or the accepted times of an
            adaptive solver.
    """

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    ts: Tensor | None = None


class CountingScore:
    """Wraps score_fn(x, t) and counts this wrapper's calls; checks the score's shape on every call
    and its values on the first (one host sync: the finite-value check "at the first step").

    Every sampler wraps the score_fn it is given in a new CountingScore, so its nfe counts the
    evaluations of that call, whatever score_fn is (another CountingScore included; one that has
    been called already checked its own first evaluation, and this one does not check again).

    Attributes:
        nfe: calls so far.
    """

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable as score_fn(x, t), got {score_fn!r}")
        self.score_fn = score_fn
        self.nfe = 0
        self.check_first = not (isinstance(score_fn, CountingScore) and score_fn.nfe > 0)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        score = self.score_fn(x, t)
        if score.shape != x.shape:
            raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, "
                             f"got {tuple(score.shape)}")
        if self.nfe == 1 and self.check_first and not bool(torch.isfinite(score).all()):
            raise ValueError(f"score_fn returned non-finite values at its first evaluation, "
                             f"t = {t.reshape(-1)[0].item():.6g}, in "
                             f"{describe_samples(nonfinite_samples(score), x.shape[0])}; check "
                             "the model (its checkpoint, its inputs' scale) at this time")
        return score


def initial_state(sde: SDE, x_T: Tensor | tuple[int, ...], generator: torch.Generator | None
                  ) -> Tensor:
    """x_T as given (checked), or a prior draw `sde.prior_sample(x_T, generator=generator)` for a
    shape.

    Raises:
        ValueError: x_T is neither a shape nor a floating tensor of shape (B, *D), B >= 1, with at
            least one event dim and finite values.
    """
    if isinstance(x_T, (tuple, list, torch.Size)):
        if len(x_T) < 2 or not all(isinstance(n, int) and n >= 1 for n in x_T):
            raise ValueError(f"x_T as a shape must be (B, *D) of positive ints with at least one "
                             f"event dim, got {tuple(x_T)}")
        return sde.prior_sample(tuple(x_T), generator=generator)
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating-point tensor of shape (B, *D), got "
                         f"{type(x_T).__name__}" + (f" {x_T.dtype}" if isinstance(x_T, Tensor)
                                                      else ""))
    if x_T.ndim < 2 or x_T.shape[0] < 1:
        raise ValueError(f"x_T must have shape (B, *D) with B >= 1 and at least one event dim, "
                         f"got {tuple(x_T.shape)}")
    if not bool(torch.isfinite(x_T).all()):
        raise ValueError(f"x_T has non-finite values in "
                         f"{describe_samples(nonfinite_samples(x_T), x_T.shape[0])}; "
                         "start from finite prior draws")
    return x_T


class StepLog:
    """The bookkeeping of a sampler's loop, free of host syncs per step: keeps the states (if
    asked), calls the callback, and keeps one sum per state, which locates the first non-finite
    state when the result is checked at the end.

    Args:
        keep: keep the states for `SampleResult.trajectory`.
        callback: callback(i, t_i, x_i) on every recorded state, or None.
    """

    def __init__(self, keep: bool, callback: Callback | None):
        self.states: list[Tensor] | None = [] if keep else None
        self.callback = callback
        self.times: list[float] = []
        self.sums: list[Tensor] = []
        self.keep_or_call = keep or callback is not None

    def record(self, i: int, t: float, x: Tensor, scale: float = 1.0) -> None:
        """Record state i at time t, which is `scale * x` (x itself is what gets summed, so a
        sampler working in scaled coordinates pays the scaling only when states are kept)."""
        self.times.append(t)
        self.sums.append(x.sum())
        if self.keep_or_call:
            state = x if scale == 1.0 else scale * x
            if self.states is not None:
                self.states.append(state)
            if self.callback is not None:
                self.callback(i, t, state)

    def result(self, x: Tensor, nfe: int, *, setting: str | None = "steps") -> SampleResult:
        """The SampleResult, after one check that x is finite (one host sync).

        Raises:
            SolverError: x has non-finite values; names the first recorded state that had them,
                its time, the samples and `setting`, the keyword to change.
        """
        if not bool(torch.isfinite(x).all()):
            sums = torch.stack(self.sums) if self.sums else x.new_zeros(0)
            bad = (~torch.isfinite(sums)).nonzero().flatten().tolist()
            first = bad[0] if bad else len(self.times)
            when = (f"at step {first} of {len(self.times) - 1} (t = {self.times[first]:.6g})"
                    if first < len(self.times) else "at its final step")
            hint = f" or change {setting}=" if setting else ""
            samples = nonfinite_samples(x)
            raise SolverError(
                f"the sampler's state became non-finite {when} in "
                f"{describe_samples(samples, x.shape[0])}: the score was finite at the first "
                f"step; check the model near that time{hint}",
                samples=samples, t=self.times[min(first, len(self.times) - 1)] if self.times
                else float("nan"), setting=setting)
        trajectory = None if self.states is None else torch.stack(self.states)
        ts = torch.tensor(self.times, dtype=torch.float64) if self.times else None
        return SampleResult(x=x, nfe=nfe, trajectory=trajectory, ts=ts)
