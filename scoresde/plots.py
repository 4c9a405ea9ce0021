"""Pictures as PNG files: image grids, 2-D scatters next to the data (plain or coloured by class),
the loss curve, sample paths.

matplotlib is used through `matplotlib.figure.Figure` (no pyplot, no global state, no display), so
these work headless and in threads. Every function writes one file and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def image_grid(x: Tensor, path: str | Path, *, nrow: int | None = None, title: str = "") -> Path:
    """A grid of images.

    Args:
        x: (N, C, H, W) images in [-1, 1] (values outside are clipped), C = 1 or 3.
        path: the PNG to write.
        nrow: images per row (default about sqrt(N)).
        title: a caption above the grid.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (N, C, H, W) with C in (1, 3), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    img = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    canvas = np.ones((c, ncol * (h + 1) + 1, nrow * (w + 1) + 1), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, nrow)
        canvas[:, 1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = img[i]
    side = min(8.0, 0.5 + 0.12 * max(canvas.shape[1:]))
    fig = Figure(figsize=(side, side * canvas.shape[1] / canvas.shape[2]))
    ax = fig.add_subplot()
    if c == 1:
        ax.imshow(canvas[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.transpose(1, 2, 0), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    both = np.concatenate(arrays)
    lo, hi = np.percentile(both, [0.5, 99.5])
    pad = 0.1 * (hi - lo + 1e-9)
    return float(lo - pad), float(hi + pad)


def scatter(samples: Tensor, data: Tensor, path: str | Path, *, title: str = "",
            labels: Tensor | None = None, data_labels: Tensor | None = None) -> Path:
    """Two panels with shared axes: the data, then the model's samples, each panel in one colour or,
    where labels are given, points coloured by class.

    Args:
        samples: (N, 2) samples; labels: (N,) the classes asked for, or None.
        data: (M, 2) data points; data_labels: (M,) their classes, or None.
    """
    for key, v in (("samples", samples), ("data", data)):
        if v.ndim != 2 or v.shape[1] != 2:
            raise ValueError(f"{key} must have shape (N, 2), got {tuple(v.shape)}")
    s, d = samples.detach().float().cpu().numpy(), data.detach().float().cpu().numpy()
    lim = _limits(s[:, 0], s[:, 1], d[:, 0], d[:, 1])
    fig = Figure(figsize=(9, 4.5))
    panels = ((d, data_labels, f"data ({len(d)})"),
              (s, labels, f"samples{'' if labels is None else ' by class'} ({len(s)})"))
    for k, (arr, lab, name) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        colour = f"C{k}" if lab is None else [f"C{int(c) % 10}" for c in lab.tolist()]
        size = float(np.clip(8000 / len(arr), 2, 12))  # few points: bigger, opaque dots
        ax.scatter(arr[:, 0], arr[:, 1], s=size, alpha=0.5 if size < 6 else 0.9, linewidths=0,
                   c=colour)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def loss_curve(steps: list[int], losses: list[float], path: str | Path) -> Path:
    """The training loss against the step, with a running mean over a tenth of the points."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(steps, losses, lw=0.8, alpha=0.4, color="C0", label="loss")
    if len(losses) >= 10:
        k = max(2, len(losses) // 10)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color="C0", label=f"running mean ({k})")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sample_paths(sde_path: Tensor, ode_path: Tensor, ts_sde: Tensor, ts_ode: Tensor,
                 data: Tensor, path: str | Path, *, n_paths: int = 12) -> Path:
    """Paths from the prior to the data of the reverse SDE and of the probability-flow ODE.

    Args:
        sde_path: (S, B, 2) reverse-SDE states at the times ts_sde (S,), T first.
        ode_path: (S', B, 2) probability-flow ODE states at the times ts_ode (S',), T first.
        data: (N, 2) data points, shown in grey under the paths.
    """
    fig = Figure(figsize=(9, 4.5))
    d = data.detach().float().cpu().numpy()
    lim = _limits(d[:, 0], d[:, 1])
    lim = (min(lim[0], -3.0), max(lim[1], 3.0))
    for k, (p, ts, name) in enumerate(((sde_path, ts_sde, "reverse SDE"),
                                       (ode_path, ts_ode, "probability-flow ODE"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.scatter(d[:, 0], d[:, 1], s=1, color="0.8", linewidths=0)
        p = p.detach().float().cpu().numpy()[:, :n_paths]
        tcol = torch.as_tensor(ts).float().cpu().numpy()
        for j in range(p.shape[1]):
            ax.plot(p[:, j, 0], p[:, j, 1], lw=0.7, color=f"C{j % 10}", alpha=0.6)
        ax.scatter(p[0, :, 0], p[0, :, 1], s=8, color="k", marker="x", lw=0.8,
                   label=f"start, t = {tcol[0]:.3g}")
        ax.scatter(p[-1, :, 0], p[-1, :, 1], s=8, color="C3", label=f"end, t = {tcol[-1]:.3g}")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.set_title(name)
        ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)
