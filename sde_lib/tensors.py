"""Tensor helpers shared by every layer: the input checks (batch shapes, times in [0, T], numbers,
which samples of a batch are not finite), the one broadcasting rule for (B, d) and (B, C, H, W),
`append_dims`, and standard normal draws from a generator on any device, `randn_like`.

The checks of t values cost a host-device synchronisation on an accelerator; the `check=False`
paths skip them, for callers that validated their times once at entry (samplers, training loops).
"""

from __future__ import annotations

import math
import numbers

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


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn from `generator` (global RNG if None).

    A generator on another device than x (a CPU generator for a CUDA x) draws on its own device
    and the noise is moved to x's, so one seed gives the same noise on every device; that copy
    waits for the host at every draw, so a loop that must not sync takes a generator on x's device.
    """
    if generator is None or generator.device == x.device:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    return z.to(x.device)


def nonfinite_samples(x: Tensor) -> list[int]:
    """The indices of the samples of x (B, *D) that hold a NaN or an infinity (one host sync)."""
    return (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten().tolist()


def describe_samples(samples: list[int], batch: int) -> str:
    """'samples [3, 7] (of 8)', at most 10 listed."""
    return f"samples {samples[:10]}{' ...' if len(samples) > 10 else ''} (of {batch})"


def time_tensor(t: float | Tensor, T: float, *, like: Tensor | None = None,
                check: bool = True) -> Tensor:
    """t as a tensor, checked to lie in [0, T].

    Args:
        t: a float or a tensor of times, 0-d or (B,).
        T: the end time of the SDE.
        like: if given, t takes its dtype and device (floats and t of another dtype are converted).
        check: check the values of a tensor t (one host sync); a Python number is always checked
            (it costs nothing), and so are shapes.

    Returns:
        t as a tensor: 0-d for a float, (B,) for a (B,) tensor.

    Raises:
        ValueError: t is not finite, lies outside [0, T], or has more than one dim.
    """
    if not isinstance(t, Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= T:
            raise ValueError(f"t must lie in [0, T] = [0, {T}], got {t!r}")
        check = False
    if like is not None:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    elif not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    if t.ndim > 1:
        raise ValueError(f"t must be a float or a (B,) tensor, got shape {tuple(t.shape)}")
    if check and not bool(((t >= 0) & (t <= T)).all()):  # NaN fails both comparisons
        raise ValueError(f"t must lie in [0, T] = [0, {T}], got values in "
                         f"[{t.min().item():.6g}, {t.max().item():.6g}]")
    return t


def batch_times(x: Tensor, t: float | Tensor, T: float, *, check: bool = True) -> Tensor:
    """t for a batch x of shape (B, *D), as a (B,) tensor of x's dtype and device.

    A float or a 0-d t is expanded to the batch. With check=False the values of a tensor t are not
    checked (no host sync); shapes and Python numbers always are.

    Raises:
        ValueError: t is out of range (see `time_tensor`) or is (B',) with B' != B.
    """
    if x.ndim < 1:
        raise ValueError("x must have a batch dimension: shape (B, *D)")
    t = time_tensor(t, T, like=x, check=check)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but x has batch size {x.shape[0]}; "
                         "pass a float or a (B,) tensor")
    return t


def check_t_eps(sde, t_eps: float) -> None:
    """Validate a time cutoff: a number in [0, T) of `sde`.

    Raises:
        ValueError: t_eps is not a number in [0, T).
    """
    if (isinstance(t_eps, bool) or not isinstance(t_eps, (int, float))
            or not 0 <= t_eps < sde.T):
        raise ValueError(f"t_eps must lie in [0, T) = [0, {sde.T}), got {t_eps!r}")


def check_int(name: str, value: int, lower: int = 1) -> int:
    """`value` if it is an int (not a bool) >= `lower`.

    Raises:
        ValueError: naming `name`, the value and the bound.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < lower:
        raise ValueError(f"{name} must be an int >= {lower}, got {value!r}")
    return value


def check_number(name: str, value: float, lower: float = 0.0, *, strict: bool = True) -> float:
    """`value` as a float if it is a finite real number above `lower` (or equal, if not strict).

    Raises:
        ValueError: naming `name`, the value and the range.
    """
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and (value > lower if strict else value >= lower))
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lower:g}, "
                         f"got {value!r}")
    return float(value)
