"""Critical values of the likelihood's confidence intervals, whose width comes from Hutchinson probes.

A Hutchinson estimate of the divergence integral is a Rademacher quadratic form v^T A v of the
solve's time-integrated Jacobian term A; its error is sum_k lambda_k ((u_k . v)^2 - |u_k|^2) over
the eigenpairs of A's off-diagonal part: normal when many directions share the variance, a scaled
chi-square with one degree of freedom when one dominates (the Gaussian-mixture oracle: 1.3 to 2
directions). `solvers.likelihood` estimates the variance from the probes' per-coordinate terms,
and that estimate moves with the error itself. With r equal directions and P probes, y = chi2_m / m
(m = r P) sets both: the error is sqrt(2 / m) (y - 1) and the estimated standard error sqrt(y), in
units of the true standard error, so the pivot

    Z = sqrt(m / 2) (y - 1) / sqrt(y),       |Z| <= c  <=>  y_lo(c) <= y <= y_hi(c)

has a closed-form law. `critical_value(m, level)` is the c with P(|Z| <= c) = level: 4.19, 2.76,
2.11 at m = 2, 4, 16 for level 0.95, tending to the normal 1.96 as m grows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from score_sde.sde_lib import check_number


def _check_level(level: float) -> float:
    check_number("level", level)
    if not level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95, got {level!r}")
    return float(level)


def pivot_coverage(c: Tensor, m: Tensor) -> Tensor:
    """P(|Z| <= c) for the pivot Z with m chi-square degrees of freedom (module doc), elementwise."""
    s = c * (2.0 / m).sqrt()
    root = (s * s + 4.0).sqrt()
    y_lo, y_hi = ((root - s) / 2) ** 2, ((root + s) / 2) ** 2
    return torch.special.gammainc(m / 2, m * y_hi / 2) - torch.special.gammainc(m / 2, m * y_lo / 2)


def critical_value(m: Tensor | float, level: float = 0.95) -> Tensor:
    """The c with P(|Z| <= c) = level for the pivot with m degrees of freedom, elementwise.

    Args:
        m: chi-square degrees of freedom, > 0: a float or a tensor of them.
        level: the coverage, in (0, 1).

    Returns:
        float64 tensor shaped like m.
    """
    level = _check_level(level)
    m = torch.as_tensor(m, dtype=torch.float64)
    if not bool(((m > 0) & ~m.isnan()).all()):
        raise ValueError(f"m (degrees of freedom) must be > 0, got {m}")
    lo, hi = torch.zeros_like(m), torch.full_like(m, 2.0)
    while not bool((pivot_coverage(hi, m) >= level).all()):
        hi = torch.where(pivot_coverage(hi, m) < level, 2 * hi, hi)
    for _ in range(50):  # bisection to ~1e-14 of the bracket
        mid = (lo + hi) / 2
        low = pivot_coverage(mid, m) < level
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    return hi
