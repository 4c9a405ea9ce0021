"""Full-reference image quality: PSNR and SSIM of images against the truth, per image.

    PSNR = 10 log10(L^2 / MSE)
    SSIM = mean over windows and channels of
           (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2)),

L the data range (2 for images in [-1, 1]), C1 = (0.01 L)^2, C2 = (0.03 L)^2, and mu, s^2, s_xy the
means, variances and covariance weighted by a Gaussian window of std 1.5 pixels (Wang, Bovik,
Sheikh, Simoncelli 2004; `solvers.operators.gaussian_kernel`), here of side min(11, H, W) rounded
down to odd (7 for 8 x 8 digits), over the windows that fit inside the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from score_sde.solvers.operators import gaussian_kernel

DATA_RANGE = 2.0  # images in [-1, 1]


def _check_pair(x: Tensor, truth: Tensor) -> None:
    if x.shape != truth.shape or x.ndim != 4:
        raise ValueError(f"x and truth must be (N, C, H, W) images of one shape, got "
                         f"{tuple(x.shape)} and {tuple(truth.shape)}")


def psnr(x: Tensor, truth: Tensor, *, data_range: float = DATA_RANGE) -> Tensor:
    """Peak signal-to-noise ratio in dB of each image: (N, C, H, W) twice -> (N,)."""
    _check_pair(x, truth)
    mse = (x.double() - truth.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(x: Tensor, truth: Tensor, *, data_range: float = DATA_RANGE, window: int = 11,
         std: float = 1.5) -> Tensor:
    """Structural similarity of each image (see the module docstring): (N, C, H, W) twice -> (N,).

    Args:
        window: the largest window side; min(window, H, W) rounded down to odd is used.
        std: the Gaussian window's std in pixels.
    """
    _check_pair(x, truth)
    size = min(window, *x.shape[-2:])
    size -= 1 - size % 2
    c = x.shape[1]
    kernel = gaussian_kernel(size, std).expand(c, 1, size, size)
    x, truth = x.double(), truth.double()

    def local(v: Tensor) -> Tensor:  # the window-weighted mean at every window position
        return F.conv2d(v, kernel, groups=c)

    mu_x, mu_y = local(x), local(truth)
    var_x = local(x * x) - mu_x**2
    var_y = local(truth * truth) - mu_y**2
    cov = local(x * truth) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
         / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    return s.flatten(1).mean(1)
