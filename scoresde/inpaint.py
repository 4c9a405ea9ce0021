"""Inpainting from files in `score-sde sample`: known values and a mask (1 = known) read from .pt,
.npy or .npz files, checked against the data's shape, and the configured solver run through
`solvers.impute` (score_sde's replacement at every grid time, optional RePaint resampling).

Shapes: (*D), one event for all n samples, or (n, *D), one per sample; values in the data's
space (images in [-1, 1]). For 2-D points, known = [x1, 0] and mask = [1, 0] sample x2 from
p(x2 | x1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from score_sde import solvers


@dataclass
class Inpainting:
    """What `score-sde sample` keeps fixed.

    Attributes:
        known: (n, *D) known values (only those under the mask are read).
        mask: (n, *D) 1 where the value is known, 0 where it is sampled.
        resample: RePaint's extra jumps per step.
    """

    known: Tensor
    mask: Tensor
    resample: int = 0


def _read(p: Path, name: str) -> Any:
    """The object in a .pt or .npy file; in a .npz file the array `name` or the only array, else
    the sorted list of the arrays it holds."""
    if p.suffix == ".pt":
        return torch.load(p, map_location="cpu", weights_only=True)
    if p.suffix == ".npy":
        return np.load(p)
    with np.load(p) as z:
        if name in z.files or len(z.files) == 1:
            return z[name if name in z.files else z.files[0]]
        return sorted(z.files)


def load_array(path: str, setting: str) -> Tensor:
    """The array in a .pt (a tensor, loaded with weights_only=True), .npy or .npz file (the array
    named like the setting's last part, e.g. `known`, or the file's only array).

    Raises:
        ValueError: naming the setting, if the file is missing, unreadable or holds no array.
    """
    p = Path(path).expanduser()
    if not p.is_file() or p.suffix not in (".pt", ".npy", ".npz"):
        raise ValueError(f"{setting} must be an existing .pt, .npy or .npz file, got {path!r}")
    name = setting.rsplit(".", 1)[-1]
    try:
        value = _read(p, name)
    except Exception as err:  # torch and numpy raise many kinds on a bad file
        raise ValueError(f"{setting}: cannot read {p} ({type(err).__name__}: {err})") from err
    if isinstance(value, list):
        raise ValueError(f"{setting}: {p} must hold an array named {name!r} or a single array; "
                         f"it holds {value}")
    if not isinstance(value, (Tensor, np.ndarray)):
        raise ValueError(f"{setting}: {p} must hold a tensor, got {type(value).__name__}")
    return torch.as_tensor(value)


def per_sample(value: Tensor, shape: tuple[int, ...], n: int, setting: str) -> Tensor:
    """value of shape (*D) or (n, *D) as (n, *D).

    Raises:
        ValueError: any other shape, naming both the given and the expected shapes.
    """
    if tuple(value.shape) not in (shape, (n, *shape)):
        raise ValueError(f"{setting} has shape {tuple(value.shape)}, but a sample of the run has "
                         f"shape {shape}: give {shape} (for all n samples) or {(n, *shape)} "
                         f"(one per sample, n={n})")
    return value.expand(n, *shape)


def load_inpainting(settings: Any, shape: tuple[int, ...], n: int) -> Inpainting | None:
    """The `inpaint` settings (known, mask, resample) read for n samples of shape `shape`;
    None when no files are given."""
    if settings.known is None:
        return None
    known = load_array(settings.known, "inpaint.known")
    if not known.is_floating_point():
        known = known.double()
    mask = load_array(settings.mask, "inpaint.mask")
    return Inpainting(per_sample(known, shape, n, "inpaint.known"),
                      per_sample(mask, shape, n, "inpaint.mask"), int(settings.resample))


def inpainting_solver(solver: Callable[..., Any], inpainting: Inpainting
                      ) -> Callable[[slice], Callable[..., Any]]:
    """For each block of rows, the configured solver wrapped in `solvers.impute` with those rows'
    known values and mask, called like the solver: f(rows)(sde, score_fn, x_T, generator=...).

    The solver's settings go to impute (steps, t_eps, grid: the grid; the rest: the sampler's own);
    `denoise` is dropped, since impute restores the known part exactly at the end.

    Raises:
        ValueError: the solver has no time grid (e.g. adaptive_sde).
    """
    if not isinstance(solver, partial):
        raise ValueError(f"solver must be a partial sampler (`_partial_: true`), got {solver!r}")
    func, settings = solver.func, dict(solver.keywords)
    if "ts" not in inspect.signature(func).parameters:
        raise ValueError(f"inpainting runs the solver step by step on its time grid, but "
                         f"solver {func.__name__} has none; use a grid sampler such as "
                         "solver=euler_maruyama, predictor_corrector, ddim or heun")
    settings.pop("denoise", None)

    def for_rows(rows: slice) -> Callable[..., Any]:
        return partial(solvers.impute, sampler=func, known=inpainting.known[rows],
                       mask=inpainting.mask[rows], resample=inpainting.resample, **settings)

    return for_rows
