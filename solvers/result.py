"""What every sampler returns, the NFE-counting score wrapper, and input checks shared by samplers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, float, Tensor], None]


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        x: (B, *D) the samples, shaped like x_T.
        nfe: the number of score-function evaluations (each on the whole batch).
        trajectory: (len(ts), B, *D) the states at the grid times ts, if requested.
        ts: the decreasing time grid the sampler used (float64), for reference.
    """

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    ts: Tensor | None = None


class CountingScore:
    """Wraps score_fn(x, t) and counts its calls; checks the score's shape on every call.

    Attributes:
        nfe: calls so far.
    """

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise ValueError(f"score_fn must be callable as score_fn(x, t), got {score_fn!r}")
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        score = self.score_fn(x, t)
        if score.shape != x.shape:
            raise ValueError(f"score_fn must return a tensor shaped like x {tuple(x.shape)}, "
                             f"got {tuple(score.shape)}")
        return score


def initial_state(sde, x_T: Tensor | tuple[int, ...], generator: torch.Generator | None
                  ) -> Tensor:
    """x_T as given, or a prior draw `sde.prior_sample(x_T, generator=generator)` for a shape.

    Raises:
        ValueError: x_T is neither a shape nor a floating tensor of shape (B, *D), B >= 1, with at
            least one event dim.
    """
    if isinstance(x_T, (tuple, list, torch.Size)):
        if len(x_T) < 2 or not all(isinstance(n, int) and n >= 1 for n in x_T):
            raise ValueError(f"x_T as a shape must be (B, *D) of positive ints with at least one "
                             f"event dim, got {tuple(x_T)}")
        return sde.prior_sample(tuple(x_T), generator=generator)
    return check_x_T(x_T)


def check_x_T(x_T: Tensor) -> Tensor:
    """Check that x_T is a floating (B, *D) batch with B >= 1 and D non-empty.

    Raises:
        ValueError: x_T is not a floating tensor of at least 2 dims with a non-empty batch.
    """
    if not isinstance(x_T, Tensor) or not x_T.is_floating_point():
        raise ValueError(f"x_T must be a floating-point tensor of shape (B, *D), got "
                         f"{type(x_T).__name__}" + (f" {x_T.dtype}" if isinstance(x_T, Tensor)
                                                      else ""))
    if x_T.ndim < 2 or x_T.shape[0] < 1:
        raise ValueError(f"x_T must have shape (B, *D) with B >= 1 and at least one event dim, "
                         f"got {tuple(x_T.shape)}")
    return x_T


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn from `generator` (global RNG if None).

    A generator on another device than x (a CPU generator for a CUDA x) draws on its own device
    and the noise is moved to x's, so one seed gives the same noise on every device.
    """
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return z.to(x.device)


class Trajectory:
    """Collects states for `SampleResult.trajectory` and calls the user's callback, if any."""

    def __init__(self, keep: bool, callback: Callback | None):
        self.states: list[Tensor] | None = [] if keep else None
        self.callback = callback

    def record(self, i: int, t: float, x: Tensor) -> None:
        if self.states is not None:
            self.states.append(x)
        if self.callback is not None:
            self.callback(i, t, x)

    def stacked(self) -> Tensor | None:
        return None if self.states is None else torch.stack(self.states)
