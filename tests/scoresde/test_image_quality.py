"""PSNR and SSIM against their closed forms: a constant offset, constant images, a per-pixel
window, and affine maps of a ramp, whose Gaussian-window statistics are known exactly."""

import math

import pytest
import torch

from score_sde.image_quality import psnr, ssim
from score_sde.solvers.operators import gaussian_kernel

D64 = torch.float64
C1, C2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2  # data range 2


def test_psnr_of_a_constant_offset():
    x = torch.rand(3, 1, 8, 8, dtype=D64) * 2 - 1
    c = torch.tensor([0.1, 0.5, 1.0], dtype=D64)
    torch.testing.assert_close(psnr(x + c[:, None, None, None], x), 20 * torch.log10(2 / c))


def test_ssim_of_equal_and_of_constant_images():
    x = torch.rand(2, 3, 8, 8, dtype=D64) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=D64))
    a, b = torch.full((1, 1, 8, 8), 0.3, dtype=D64), torch.full((1, 1, 8, 8), -0.6, dtype=D64)
    want = (2 * 0.3 * -0.6 + C1) / (0.3**2 + 0.6**2 + C1)  # no variance: luminance only
    torch.testing.assert_close(ssim(a, b), torch.tensor([want], dtype=D64))


def test_ssim_with_a_one_pixel_window_is_the_pixelwise_luminance():
    x, y = torch.rand(2, 1, 5, 5, dtype=D64) * 2 - 1, torch.rand(2, 1, 5, 5, dtype=D64) * 2 - 1
    want = ((2 * x * y + C1) / (x * x + y * y + C1)).flatten(1).mean(1)
    torch.testing.assert_close(ssim(x, y, window=1), want)


@pytest.mark.parametrize("scale, shift", [(0.5, 0.1), (-1.0, 0.0), (2.0, -0.3)])
def test_ssim_of_an_affine_map_of_a_ramp(scale, shift):
    """x = a ramp along the rows; y = scale x + shift. In a window centred on row r the Gaussian
    weights are symmetric, so mu_x = x_r, var_x = g^2 v with v the 1-D window's variance, and
    var_y = scale^2 var_x, cov = scale var_x."""
    g, size = 0.1, 9  # 10 x 10 images: min(11, 10) rounded down to odd
    rows = g * (torch.arange(10, dtype=D64) - 4.5)
    x = rows[:, None].expand(10, 10)[None, None].clone()
    y = scale * x + shift
    w = gaussian_kernel(size, 1.5).sum(0)  # the 1-D window
    r = torch.arange(size, dtype=D64) - size // 2
    var = g**2 * (w * r**2).sum()
    mu_x = rows[size // 2: 10 - size // 2]  # window centres, one per valid row (2 columns each)
    mu_y = scale * mu_x + shift
    lum = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)
    cs = (2 * scale * var + C2) / ((1 + scale**2) * var + C2)
    torch.testing.assert_close(ssim(y, x), (lum * cs).mean()[None])
    assert math.isclose(ssim(x, y).item(), ssim(y, x).item(), rel_tol=1e-12)  # symmetric


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="x and truth must be .N, C, H, W. images of one shape"):
        psnr(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
