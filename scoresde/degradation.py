"""Degradations of images for restoration (SR3-style): y = A x + n, n ~ N(0, noise_std^2 I), with A
an operator of `solvers.operators` (one definition of avg-pool, blur, mask and grey in the
project), and the image condition a restoration network sees.

The condition brings y back to the target resolution by the damped pseudo-inverse
`solvers.damped_pseudo_inverse`, x_bp = A^T (A A^T + lambda I)^-1 y, the linear MMSE (Wiener)
estimate of x under a white prior of std d with lambda = noise_std^2 / d^2 (d = 0.5 for images in
[-1, 1] by default). One formula serves every linear A, and it is the familiar choice for each:
nearest-neighbour upsampling for average pooling (SR3's upsampled low-resolution input), a Wiener
deconvolution for a blur, the known pixels and zeros for a mask, the luma spread over the channels
for grey. The network then learns the residual between this best linear guess and the image.

The condition is (B, C + 1, H, W): the back-projection and a presence channel (1 where a
condition is given). The all-zero condition, which the U-Net takes for cond=None, is thus the
null condition (no measurement) and cannot be mistaken for a measured image: training replaces a
fraction of the conditions by it (condition dropout), so one network learns the conditional and
the unconditional score, and sampling can mix them (classifier-free guidance on the condition).

Built by hydra from `conf/degradation/*.yaml` (`_target_: score_sde.degradation.avg_pool`, ...)
with the data's shape: `build.build_degradation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from score_sde.sde_lib import append_dims, check_number
from score_sde.solvers import damped_pseudo_inverse, operators

DATA_STD = 0.5  # the prior std per pixel of the default damping, images in [-1, 1]
MASK_REGIONS = ("center", "random")


@dataclass(frozen=True)
class Degradation:
    """y = A x + n for images x of shape D = (C, H, W), and the condition built from y.

    Attributes:
        operator: A, a `solvers.operators.LinearOperator` on events of shape D.
        noise_std: the std of the Gaussian measurement noise n, in the data's units.
        damping: lambda of the back-projection A^T (A A^T + lambda I)^-1 y.
        measurement_shape: Y, the shape of one degraded image (y as an image): (C, H/f, W/f) for
            f x f average pooling, D for a blur or a mask (zeros where unknown), (1, H, W) for grey.
        name: a short name, e.g. "avg_pool2+n0.01", for titles and file names.
        kind: "avg_pool", "blur", "mask" or "grey".
    """

    operator: operators.LinearOperator
    noise_std: float
    damping: float
    measurement_shape: tuple[int, ...]
    name: str
    kind: str
    _back_project: Callable[[Tensor], Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # solved once: the eigendecomposition of A A^T, if any
        object.__setattr__(self, "_back_project", damped_pseudo_inverse(self.operator, self.damping))

    @property
    def shape(self) -> tuple[int, ...]:
        """D, the shape of a clean image."""
        return self.operator.event_shape

    @property
    def cond_channels(self) -> int:
        """The channels of the condition: the image's C plus the presence channel."""
        return self.shape[0] + 1

    def measure(self, x: Tensor, *, generator: torch.Generator | None = None,
                noise: Tensor | None = None) -> Tensor:
        """y = A x + noise_std n: x (B, *D) -> (B, M), n drawn from `generator` unless given."""
        clean = self.operator(x)
        if noise is None:
            noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype,
                                device=clean.device)
        return clean + self.noise_std * noise

    def back_project(self, y: Tensor) -> Tensor:
        """A^T (A A^T + damping I)^-1 y: (B, M) -> (B, *D)."""
        return self._back_project(y)

    def condition(self, y: Tensor, keep: Tensor | None = None) -> Tensor:
        """The network's condition (B, C + 1, H, W): [back_project(y), 1], zeroed where `keep`
        (B,) is False (the null condition)."""
        x = self.back_project(y)
        ones = x.new_ones(x.shape[0], 1, *x.shape[2:])
        cond = torch.cat([x, ones], 1)
        return cond if keep is None else cond * append_dims(keep.to(cond), cond.ndim)

    def as_image(self, y: Tensor) -> Tensor:
        """The degraded images of measurements: (B, M) -> (B, *Y)."""
        if self.operator.known is not None:
            return self.operator.transpose(y)
        return y.reshape(y.shape[0], *self.measurement_shape)

    def from_image(self, image: Tensor) -> Tensor:
        """The measurements of degraded images: (B, *Y) -> (B, M) (a mask reads its known pixels)."""
        if self.operator.known is not None:
            return self.operator(image)
        return image.flatten(1)


def training_condition(degradation: Degradation, x0: Tensor, dropout: float,
                       generator: torch.Generator, keep_generator: torch.Generator) -> Tensor:
    """The condition of a training batch: y = A x0 + n with fresh noise from `generator`, each
    condition replaced by the null one with probability `dropout` (drawn from `keep_generator`,
    on the CPU, whatever the value of dropout, so a run's stream does not depend on it).

    Returns:
        (B, C + 1, H, W).
    """
    keep = torch.rand(x0.shape[0], generator=keep_generator) >= dropout
    return degradation.condition(degradation.measure(x0, generator=generator), keep.to(x0.device))


def _damping(damping: float | None, noise_std: float) -> float:
    if damping is None:
        return (noise_std / DATA_STD) ** 2
    return check_number("degradation.damping", damping, strict=False)


def _noise(noise_std: float) -> float:
    return check_number("degradation.noise_std", noise_std, strict=False)


def _image(shape: tuple[int, ...], kind: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"degradation {kind} acts on (C, H, W) images, but the data have shape "
                         f"{shape}; use image data (e.g. data=digits) or drop degradation=")
    return shape  # type: ignore[return-value]


def avg_pool(shape: tuple[int, ...], *, factor: int = 2, noise_std: float = 0.0,
             damping: float | None = None) -> Degradation:
    """Super-resolution: factor x factor average pooling, measurement shape (C, H/f, W/f)."""
    c, h, w = _image(shape, "avg_pool")
    if not (isinstance(factor, int) and factor >= 2 and h % factor == 0 and w % factor == 0):
        raise ValueError(f"degradation.factor must be an int >= 2 that divides the image's "
                         f"H = {h} and W = {w}, got {factor!r}")
    noise_std = _noise(noise_std)
    return Degradation(operators.avg_pool_operator((c, h, w), factor), noise_std,
                       _damping(damping, noise_std), (c, h // factor, w // factor),
                       f"avg_pool{factor}+n{noise_std:g}", "avg_pool")


def blur(shape: tuple[int, ...], *, size: int = 3, std: float = 1.0, noise_std: float = 0.0,
         damping: float | None = None) -> Degradation:
    """Deblurring: a size x size Gaussian blur of std `std` pixels (zero padding)."""
    c, h, w = _image(shape, "blur")
    noise_std = _noise(noise_std)
    lam = _damping(damping, noise_std)
    if lam == 0:
        raise ValueError("degradation.damping must be > 0 for a blur (a Gaussian blur is close to "
                         "singular): give degradation.noise_std > 0 or degradation.damping > 0")
    try:
        op = operators.blur_operator((c, h, w), size, std)
    except ValueError as err:
        raise ValueError(f"degradation (blur): {err}") from err
    return Degradation(op, noise_std, lam, (c, h, w), f"blur{size}s{std:g}+n{noise_std:g}", "blur")


def mask(shape: tuple[int, ...], *, region: str = "center", keep: float = 0.5, seed: int = 0,
         noise_std: float = 0.0, damping: float | None = None) -> Degradation:
    """Inpainting: the central H/2 x W/2 square unknown ("center"), or a fixed pattern of a
    fraction `keep` of known pixels drawn from `seed` ("random"); the degraded image is the image
    with zeros where unknown."""
    c, h, w = _image(shape, "mask")
    if region == "center":
        known = torch.ones(c, h, w)
        known[:, h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
    elif region == "random":
        if not 0 < keep <= 1:
            raise ValueError(f"degradation.keep must lie in (0, 1], got {keep!r}")
        known = (torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed)) < keep).float()
    else:
        raise ValueError(f"degradation.region must be one of {MASK_REGIONS}, got {region!r}")
    noise_std = _noise(noise_std)
    return Degradation(operators.mask_operator(known), noise_std, _damping(damping, noise_std),
                       (c, h, w), f"mask_{region}+n{noise_std:g}", "mask")


def grey(shape: tuple[int, ...], *, noise_std: float = 0.0,
         damping: float | None = None) -> Degradation:
    """Colorization: RGB (3, H, W) to BT.601 luma (1, H, W)."""
    c, h, w = _image(shape, "grey")
    if c != 3:
        raise ValueError(f"degradation grey needs RGB images (3 channels), but the data have {c}")
    noise_std = _noise(noise_std)
    return Degradation(operators.grey_operator((c, h, w)), noise_std,
                       _damping(damping, noise_std), (1, h, w), f"grey+n{noise_std:g}", "grey")

