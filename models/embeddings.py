"""Time features and label embeddings shared by the score networks.

The networks take the SDE's time t in [0, T] as is (see `models.parameterization`); the features
here turn it into a vector:
    Gaussian Fourier (Tancik et al. 2020; score_sde's NCSN++):
        [sin(2 pi W t), cos(2 pi W t)],  W ~ N(0, scale^2) fixed at construction (a buffer).
    sinusoidal (Vaswani et al. 2017; DDPM):
        [sin(scale w_i t), cos(scale w_i t)],  w_i = max_period^(-i / half), i = 0..half-1;
        with scale = 1000 a time in [0, 1] sees DDPM's timestep features of t * 1000.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_EMBEDDINGS = ("fourier", "sinusoidal")


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features of a scalar time, (B,) -> (B, dim).

    Args:
        dim: the feature size (even).
        scale: the std of the random frequencies W (per unit of t).
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        _check_even(dim)
        if not scale > 0:
            raise ValueError(f"fourier_scale must be > 0, got {scale!r}")
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t[:, None] * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class SinusoidalFeatures(nn.Module):
    """Deterministic sinusoidal features of a scalar time, (B,) -> (B, dim).

    Args:
        dim: the feature size (even).
        scale: t is multiplied by it first (1000: DDPM's timestep range for t in [0, 1]).
        max_period: the longest period, in units of scale * t.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        _check_even(dim)
        self.scale, self.max_period, self.half = float(scale), float(max_period), dim // 2

    def forward(self, t: Tensor) -> Tensor:
        i = torch.arange(self.half, dtype=t.dtype, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * i / self.half)
        arg = self.scale * t[:, None] * freqs
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def time_features(kind: str, dim: int, *, fourier_scale: float = 16.0) -> nn.Module:
    """The time features named `kind` ("fourier" or "sinusoidal"), mapping (B,) -> (B, dim)."""
    if kind == "fourier":
        return GaussianFourierFeatures(dim, fourier_scale)
    if kind == "sinusoidal":
        return SinusoidalFeatures(dim)
    raise ValueError(f"time_embedding must be one of {TIME_EMBEDDINGS}, got {kind!r}")


class LabelEmbedding(nn.Module):
    """A learned vector per class label, with one extra "null" label for unconditional use.

    Labels y lie in [0, num_classes); y = num_classes (or y=None for the whole batch) is the null
    label, the unconditional path that classifier-free guidance contrasts with the conditional one.

    Args:
        num_classes: the number of real classes (>= 1).
        dim: the embedding size.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"num_classes must be an int >= 1 or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Embed labels: y (B,) integer in [0, num_classes] or None (all null) -> (B, dim)."""
        if y is None:
            return self.table.weight[self.null_label].expand(batch, -1)
        if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.shape != (
                batch,):
            shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must be an integer tensor of shape (B,) = ({batch},), got {shape}")
        try:  # the embedding's own bounds check: no host sync per step on an accelerator
            return self.table(y.long())
        except IndexError:
            raise ValueError(f"y must lie in [0, num_classes) = [0, {self.num_classes}), or be "
                             f"{self.num_classes} (the null label), got values in "
                             f"[{y.min().item()}, {y.max().item()}]") from None


def check_labels(y: Tensor | None, label_embed: LabelEmbedding | None) -> None:
    """Raise if labels are given to a network built without classes (num_classes=None)."""
    if y is not None and label_embed is None:
        raise ValueError("y was given but the network is unconditional (num_classes=None); "
                         "build it with num_classes=K to condition on labels")


def batch_time(t: float | Tensor, x: Tensor) -> Tensor:
    """t as a (B,) tensor of x's dtype and device: a float or 0-d t is expanded to the batch.

    Raises:
        ValueError: t has more than one dim or a length other than x's batch size B.
    """
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a float or a (B,) tensor with B = {x.shape[0]}, got shape "
                         f"{tuple(t.shape)}")
    return t


def _check_even(dim: int) -> None:
    if not (isinstance(dim, int) and dim >= 2 and dim % 2 == 0):
        raise ValueError(f"embed_dim must be an even int >= 2, got {dim!r}")
