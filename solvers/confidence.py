"""Critical values of the likelihood's confidence intervals, whose width comes from Hutchinson probes.

A Hutchinson estimate of the divergence integral is a Rademacher quadratic form v^T A v of the
solve's time-integrated Jacobian A; its error is sum_k lambda_k ((u_k . v)^2 - |u_k|^2) over the
eigenpairs of A's off-diagonal part: normal when many directions share the variance, a scaled
chi-square with 1 degree of freedom when one dominates (the Gaussian-mixture oracle: 1.3-2
directions). `solvers.likelihood` estimates the variance from the per-coordinate terms of the
probes (see `LikelihoodResult.stderr`); that estimate moves with the error itself. In the rank-one
case, with P probes, y = chi2_m / m (m = P), the error is sqrt(2 / m) (y - 1) in units of the
standard error's truth and the estimated standard error is sqrt(y) of it, so the pivot

    Z = sqrt(m / 2) (y - 1) / sqrt(y),       |Z| <= c  <=>  y_lo(c) <= y <= y_hi(c)

has a closed-form law. `critical_value(m, level)` is the c with P(|Z| <= c) = level: exact for one
dominant direction (m = P), conservative for more (the normal 1.96 is its limit as m grows).
"""

from __future__ import annotations

import math

import torch

from score_sde.sde_lib import check_number


def _check_level(level: float) -> float:
    check_number("level", level)
    if not level < 1:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95, got {level!r}")
    return float(level)


def pivot_coverage(c: float, m: float) -> float:
    """P(|Z| <= c) for the rank-one pivot Z with m chi-square degrees of freedom (module doc)."""
    s = c * math.sqrt(2.0 / m)
    root = math.sqrt(s * s + 4.0)
    y_lo, y_hi = ((root - s) / 2) ** 2, ((root + s) / 2) ** 2
    ends = torch.tensor([m * y_lo, m * y_hi], dtype=torch.float64) / 2
    cdf = torch.special.gammainc(torch.tensor(m / 2, dtype=torch.float64), ends)
    return float(cdf[1] - cdf[0])


def critical_value(m: float, level: float = 0.95) -> float:
    """The c with P(|Z| <= c) = level for the rank-one pivot with m degrees of freedom.

    Args:
        m: chi-square degrees of freedom (the probe count for one point), > 0.
        level: the coverage, in (0, 1).

    Returns:
        c >= the normal quantile at (1 + level) / 2, to which it tends as m grows (e.g. 4.19,
        2.76, 2.11 at m = 2, 4, 16 for level 0.95).
    """
    check_number("m (degrees of freedom)", m)
    level = _check_level(level)
    lo, hi = 0.0, 2.0
    while pivot_coverage(hi, m) < level:
        hi *= 2
    for _ in range(60):  # bisection to ~1e-15 of the bracket
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pivot_coverage(mid, m) < level else (lo, mid)
    return hi


def normal_quantile(level: float) -> float:
    """The two-sided normal critical value: 1.96 for level 0.95."""
    level = _check_level(level)
    return float(torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=torch.float64)))
