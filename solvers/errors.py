"""The one error a failed solve raises: non-finite values, or a solver that gave up."""

from __future__ import annotations


class SolverError(ValueError):
    """A solve that failed: non-finite values, or an adaptive solver that gave up.

    Attributes:
        samples: the indices of the samples concerned (in the batch given to the solver).
        t: the time the solve had reached.
        setting: the keyword argument of the solver to change (e.g. "rtol", "steps"), if any.
    """

    def __init__(self, message: str, *, samples: list[int], t: float, setting: str | None):
        super().__init__(message)
        self.samples, self.t, self.setting = samples, t, setting
