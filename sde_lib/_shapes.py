"""Shape and time helpers shared by every SDE: one broadcasting rule for (B, d) and (B, C, H, W)."""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to `v` until it has `ndim` dims.

    Args:
        v: (B,) per-sample coefficients (or a 0-d tensor).
        ndim: the number of dims of the tensor `v` multiplies, e.g. x.ndim.

    Returns:
        `v` viewed as (B, 1, ..., 1), ready to broadcast against x of shape (B, *D).
    """
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of {v.ndim} dims against one of {ndim} dims")
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


def as_time(t: float | Tensor, T: float, *, like: Tensor | None = None) -> Tensor:
    """Validate t in [0, T] and return it as a tensor.

    Args:
        t: a float or a tensor of times, 0-d or (B,).
        T: the end time of the SDE.
        like: if given, t takes its dtype and device (floats and t of another dtype are converted).

    Returns:
        t as a tensor: 0-d for a float, (B,) for a (B,) tensor.

    Raises:
        ValueError: t is not finite, lies outside [0, T], or has more than one dim.
    """
    if like is not None:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    elif not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    if t.ndim > 1:
        raise ValueError(f"t must be a float or a (B,) tensor, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > T).any()):
        raise ValueError(f"t must lie in [0, T] = [0, {T}], got values in "
                         f"[{t.min().item():.6g}, {t.max().item():.6g}]")
    return t


def check_t_eps(sde, t_eps: float) -> None:
    """Validate a time cutoff: a number in [0, T) of `sde`.

    Raises:
        ValueError: t_eps is not a number in [0, T).
    """
    if isinstance(t_eps, bool) or not isinstance(t_eps, (int, float)) or not 0 <= t_eps < sde.T:
        raise ValueError(f"t_eps must lie in [0, T) = [0, {sde.T}), got {t_eps!r}")


def time_for(x: Tensor, t: float | Tensor, T: float) -> Tensor:
    """Validate t for a batch x of shape (B, *D) and return it as a (B,) tensor like x.

    Raises:
        ValueError: t is out of range (see `as_time`) or is (B',) with B' != B.
    """
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension: shape (B, *D)")
    t = as_time(t, T, like=x)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but x has batch size {x.shape[0]}; "
                         "pass a float or a (B,) tensor")
    return t
