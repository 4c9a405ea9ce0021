"""Linear measurement operators y = A x for inverse problems, on batches of events.

An operator maps x of shape (B, *D) to flattened measurements (B, M); `matrix()` gives the same map
as an (M, N) matrix on flattened events (N = prod D), which is what the exact posterior
`GaussianMixture.condition(A, y, noise_std)` takes, so every operator here can be checked against
the truth. The transpose comes from autograd (the vector-Jacobian product of a linear map is A^T)
unless an operator brings its own.

Degradations of the inverse-problem literature:
    matrix_operator   any (M, N) matrix
    mask_operator     keep some coordinates (inpainting), A = rows of the identity
    avg_pool_operator f x f average pooling of (C, H, W) images (super-resolution)
    blur_operator     a Gaussian blur of (C, H, W) images with zero padding (deblurring)
    grey_operator     RGB (3, H, W) to luma (H, W) (colorization)

Each knows its Gram matrix A A^T where it is a multiple of the identity (`gram_scale`), which the
pseudoinverse-guided sampler uses to solve (r^2 A A^T + s^2 I) v = b in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B


@dataclass(frozen=True)
class LinearOperator:
    """A linear map A from events of shape `event_shape` (D) to M measurements.

    Attributes:
        forward: (B, *D) -> (B, M), linear in x.
        event_shape: D.
        num_measurements: M.
        name: what it does, for messages and tables.
        known: for a coordinate mask, the (M,) indices of the kept coordinates of the flattened
            event, else None.
        gram_scale: c where A A^T = c I, else None.
        transpose_fn: (B, M) -> (B, *D), A^T; None: by autograd.
    """

    forward: Callable[[Tensor], Tensor]
    event_shape: tuple[int, ...]
    num_measurements: int
    name: str = "A"
    known: Tensor | None = None
    gram_scale: float | None = None
    transpose_fn: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        """A x: (B, *D) -> (B, M)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"{self.name} acts on events of shape {self.event_shape}, got x of "
                             f"shape {tuple(x.shape)}")
        return self.forward(x)

    def transpose(self, v: Tensor) -> Tensor:
        """A^T v: (B, M) -> (B, *D)."""
        if self.transpose_fn is not None:
            return self.transpose_fn(v)
        zero = torch.zeros((v.shape[0], *self.event_shape), dtype=v.dtype, device=v.device)
        with torch.enable_grad():
            _, vjp = torch.func.vjp(self.forward, zero)
            return vjp(v)[0]

    def gram(self, v: Tensor) -> Tensor:
        """A A^T v: (B, M) -> (B, M)."""
        if self.gram_scale is not None:
            return self.gram_scale * v
        return self.forward(self.transpose(v))

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """A as an (M, N) matrix on flattened events (N = prod D)."""
        n = math.prod(self.event_shape)
        eye = torch.eye(n, dtype=dtype).reshape(n, *self.event_shape)
        return self.forward(eye).T.contiguous()


def matrix_operator(A: Tensor, event_shape: tuple[int, ...] | None = None) -> LinearOperator:
    """x -> A x.flatten() for an (M, N) matrix A; `event_shape` defaults to (N,)."""
    A = torch.as_tensor(A)
    if A.ndim != 2:
        raise ValueError(f"A must be an (M, N) matrix, got shape {tuple(A.shape)}")
    shape = (A.shape[1],) if event_shape is None else tuple(event_shape)
    if math.prod(shape) != A.shape[1]:
        raise ValueError(f"event_shape {shape} has {math.prod(shape)} entries but A has "
                         f"{A.shape[1]} columns")
    if not bool(torch.isfinite(A).all()):
        raise ValueError("A must be finite")
    return LinearOperator(lambda x: x.flatten(1) @ A.to(x).T, shape, A.shape[0], "matrix",
                          transpose_fn=lambda v: (v @ A.to(v)).reshape(v.shape[0], *shape))


def mask_operator(mask: Tensor) -> LinearOperator:
    """Keep the coordinates where `mask` (of the event's shape D, 1 / True = known) is set."""
    mask = torch.as_tensor(mask)
    known = torch.nonzero(mask.flatten() != 0).flatten()
    if known.numel() == 0:
        raise ValueError("mask keeps no coordinate: set at least one entry to 1 (known)")
    shape, n = tuple(mask.shape), mask.numel()

    def transpose(v: Tensor) -> Tensor:
        out = torch.zeros(v.shape[0], n, dtype=v.dtype, device=v.device)
        return out.index_copy(1, known.to(v.device), v).reshape(v.shape[0], *shape)

    return LinearOperator(lambda x: x.flatten(1)[:, known.to(x.device)], shape, known.numel(),
                          "mask", known=known, gram_scale=1.0, transpose_fn=transpose)


def _image_shape(event_shape: tuple[int, ...], who: str) -> tuple[int, int, int]:
    if len(event_shape) != 3:
        raise ValueError(f"{who} acts on (C, H, W) images, got event_shape {tuple(event_shape)}")
    return tuple(int(s) for s in event_shape)  # type: ignore[return-value]


def avg_pool_operator(event_shape: tuple[int, ...], factor: int) -> LinearOperator:
    """factor x factor average pooling of (C, H, W) images: (C, H / f, W / f) measurements."""
    c, h, w = _image_shape(event_shape, "avg_pool_operator")
    if not (isinstance(factor, int) and factor >= 1 and h % factor == 0 and w % factor == 0):
        raise ValueError(f"factor must be an int >= 1 that divides H = {h} and W = {w}, got "
                         f"{factor!r}")
    m = c * (h // factor) * (w // factor)
    return LinearOperator(lambda x: F.avg_pool2d(x, factor).flatten(1), (c, h, w), m,
                          f"avg_pool{factor}", gram_scale=1.0 / factor**2)


def gaussian_kernel(size: int, std: float) -> Tensor:
    """A normalised (size, size) Gaussian kernel in float64."""
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise ValueError(f"size must be an odd int >= 1, got {size!r}")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    r = torch.arange(size, dtype=torch.float64) - size // 2
    k = torch.exp(-0.5 * (r / std) ** 2)
    return torch.outer(k, k) / k.sum() ** 2


def blur_operator(event_shape: tuple[int, ...], size: int = 3, std: float = 1.0) -> LinearOperator:
    """A Gaussian blur (size x size, std in pixels) of each channel with zero padding."""
    c, h, w = _image_shape(event_shape, "blur_operator")
    kernel = gaussian_kernel(size, std)

    def forward(x: Tensor) -> Tensor:
        k = kernel.to(x).expand(c, 1, size, size)
        return F.conv2d(x, k, padding=size // 2, groups=c).flatten(1)

    return LinearOperator(forward, (c, h, w), c * h * w, f"blur{size}")


def grey_operator(event_shape: tuple[int, ...]) -> LinearOperator:
    """RGB (3, H, W) to luma (H, W) with the BT.601 weights (colorization)."""
    c, h, w = _image_shape(event_shape, "grey_operator")
    if c != 3:
        raise ValueError(f"grey_operator needs 3 channels (RGB), got {c}")
    weights = torch.tensor(LUMA, dtype=torch.float64)
    return LinearOperator(lambda x: torch.einsum("c,bchw->bhw", weights.to(x), x).flatten(1),
                          (3, h, w), h * w, "grey", gram_scale=float((weights**2).sum()))
