"""`solvers.damped_pseudo_inverse`, A^T (A A^T + lambda I)^-1 y, against its closed forms:
nearest-neighbour upsampling for average pooling, zero fill for a mask, and the Tikhonov /
Wiener solution (A^T A + lambda I)^-1 A^T y (push-through identity) for a blur and a matrix."""

import pytest
import torch
import torch.nn.functional as F

from score_sde.solvers import damped_pseudo_inverse, operators

D64 = torch.float64


@pytest.mark.parametrize("factor, damping", [(2, 0.0), (4, 0.01)])
def test_average_pooling_is_scaled_nearest_upsampling(factor, damping):
    op = operators.avg_pool_operator((2, 8, 8), factor)
    y = torch.randn(3, op.num_measurements, dtype=D64)
    low = y.reshape(3, 2, 8 // factor, 8 // factor)
    want = F.interpolate(low, scale_factor=factor, mode="nearest") / (1 + factor**2 * damping)
    torch.testing.assert_close(damped_pseudo_inverse(op, damping)(y), want)


def test_mask_fills_zeros():
    known = (torch.arange(16).reshape(1, 4, 4) % 3 == 0).float()
    op = operators.mask_operator(known)
    y = torch.randn(2, op.num_measurements, dtype=D64)
    out = damped_pseudo_inverse(op, 0.25)(y)
    torch.testing.assert_close(out.flatten(1)[:, known.flatten() == 1], y / 1.25)
    assert (out.flatten(1)[:, known.flatten() == 0] == 0).all()


@pytest.mark.parametrize("make", [lambda: operators.blur_operator((1, 6, 6), 3, 1.0),
                                  lambda: operators.matrix_operator(
                                      torch.randn(5, 12, generator=torch.Generator().manual_seed(1),
                                                  dtype=D64))])
def test_blur_and_matrix_are_the_tikhonov_solution(make):
    op = make()
    a, lam = op.matrix(), 1e-2
    y = torch.randn(4, op.num_measurements, dtype=D64)
    n = a.shape[1]
    want = torch.linalg.solve(a.T @ a + lam * torch.eye(n, dtype=D64), a.T @ y.T).T
    got = damped_pseudo_inverse(op, lam)(y)
    assert got.shape == (4, *op.event_shape)
    torch.testing.assert_close(got.flatten(1), want)


def test_validation():
    op = operators.avg_pool_operator((1, 4, 4), 2)
    with pytest.raises(ValueError, match="damping must be"):
        damped_pseudo_inverse(op, -1.0)
    with pytest.raises(ValueError, match=r"y must have shape \(B, M\) = \(B, 4\)"):
        damped_pseudo_inverse(op, 0.0)(torch.zeros(2, 5))
