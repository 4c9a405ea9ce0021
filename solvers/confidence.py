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

Probes redrawn at every evaluation make each probe's estimate a sum of many independent terms, close
to normal: P of them give Student's t with P - 1 degrees of freedom, `student_t_critical`.
"""

from __future__ import annotations

from collections.abc import Callable

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
    return _solve_coverage(lambda c: pivot_coverage(c, m), level, m)


def _solve_coverage(coverage: Callable[[Tensor], Tensor], level: float, like: Tensor) -> Tensor:
    """The c (shaped like `like`, float64) with coverage(c) = level for an increasing coverage
    with coverage(0) = 0, elementwise: doubling from 2 to a bracket, then 60 bisections."""
    lo, hi = torch.zeros_like(like), torch.full_like(like, 2.0)
    while not bool((coverage(hi) >= level).all()):
        hi = torch.where(coverage(hi) < level, 2 * hi, hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        low = coverage(mid) < level
        lo, hi = torch.where(low, mid, lo), torch.where(low, hi, mid)
    return hi


def student_t_coverage(c: Tensor, dof: int) -> Tensor:
    """P(|T| <= c) for Student's t with an integer `dof` >= 1, elementwise in c (Abramowitz and
    Stegun 26.7.3-4: with theta = atan(c / sqrt(dof)), a finite series in cos^2 theta)."""
    theta = torch.atan(c / dof**0.5)
    cos2 = torch.cos(theta) ** 2
    odd = dof % 2 == 1
    k = torch.arange(1, max(1, (dof - 1) // 2 if odd else dof // 2), dtype=torch.float64)
    ratios = 2 * k / (2 * k + 1) if odd else (2 * k - 1) / (2 * k)
    series = 1 + (torch.cumprod(ratios, 0) * cos2[..., None] ** k).sum(-1)
    if odd:
        extra = torch.sin(theta) * torch.cos(theta) * series if dof > 1 else 0.0
        return 2 / torch.pi * (theta + extra)
    return torch.sin(theta) * series


def student_t_critical(dof: float, level: float = 0.95) -> float:
    """The c with P(|T| <= c) = level for Student's t with floor(dof) degrees of freedom (>= 1;
    flooring widens the interval), capped at 10^4 (within 1e-4 of the normal's value).

    Raises:
        ValueError: dof < 1 or level outside (0, 1).
    """
    level = _check_level(level)
    check_number("dof", dof)
    if not dof >= 1:
        raise ValueError(f"dof (degrees of freedom) must be >= 1, got {dof!r}")
    n = int(min(dof, 1e4))
    scalar = torch.zeros((), dtype=torch.float64)
    return _solve_coverage(lambda c: student_t_coverage(c, n), level, scalar).item()
