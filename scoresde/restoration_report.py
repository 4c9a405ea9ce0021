"""What a restoration is measured against and how it is shown: the baselines, the quality table
(PSNR, SSIM, the digits judge) and the picture.

Baselines, from the same measurements y (`score_sde.degradation`):
    back-projection   A^T (A A^T + lambda I)^-1 y (`Degradation.back_project`), named by what it
                      is: nearest upsampling for average pooling ("nearest"), a Wiener
                      deconvolution with a white prior for a blur ("Wiener, white prior"), zero
                      fill for a mask, the luma on every channel for grey
    bicubic           bicubic upsampling of the low-resolution image (average pooling only)
    Gaussian          the posterior mean under N(m, S) fitted to the training split
                      (`GaussianMixture.condition`): the best linear estimate, i.e. the Wiener
                      filter with the data's own covariance (images of at most 1024 values)

Quality on images with known truth: PSNR and SSIM (`score_sde.image_quality`) and, for labelled
data, the accuracy of the digits judge (`score_sde.judge`) on the restored images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from score_sde import plots
from score_sde.data import Dataset
from score_sde.degradation import Degradation
from score_sde.image_quality import psnr, ssim
from score_sde.judge import Judge, fit_judge
from score_sde.sde_lib import GaussianMixture

PICTURE_INPUTS = 16  # inputs (columns) in a restoration picture
GAUSSIAN_MAX_DIM = 1024  # the Gaussian baseline conditions a D x D covariance per input: MNIST size


def bicubic(degradation: Degradation, y: Tensor) -> Tensor:
    """Bicubic upsampling of the low-resolution images of an average pooling, clipped to [-1, 1]."""
    low = degradation.as_image(y)
    return F.interpolate(low, size=degradation.shape[-2:], mode="bicubic",
                         align_corners=False).clamp(-1, 1)


def gaussian_posterior_mean(degradation: Degradation, y: Tensor, train: Tensor) -> Tensor:
    """E[x | y] under N(m, S) fitted to `train` (N, *D): m + S A^T (A S A^T + s^2 I)^-1 (y - A m)."""
    x = train.double().flatten(1)
    prior = GaussianMixture(x.mean(0, keepdim=True).reshape(1, *degradation.shape),
                            covs=torch.cov(x.T)[None])
    a = degradation.operator.matrix()
    return torch.stack([prior.condition(a, row, degradation.noise_std).means[0]
                        for row in y.double()]).float()


BACK_PROJECTION = {"avg_pool": "nearest", "blur": "Wiener, white prior", "mask": "zero fill",
                   "grey": "luma"}  # what the back-projection is, by degradation kind


def baselines(degradation: Degradation, y: Tensor, data: Dataset) -> dict[str, Tensor]:
    """The baselines' restorations (n, *D) of y (n, M), by name (see the module docstring): the
    back-projection (named by what it is for the degradation), bicubic (average pooling) and the
    Gaussian posterior mean (images of at most GAUSSIAN_MAX_DIM values)."""
    out = {BACK_PROJECTION[degradation.kind]: degradation.back_project(y).clamp(-1, 1)}
    if degradation.kind == "avg_pool":
        out["bicubic"] = bicubic(degradation, y)
    if data.train[0].numel() <= GAUSSIAN_MAX_DIM:
        out["Gaussian posterior mean"] = gaussian_posterior_mean(degradation, y, data.train)
    return out


# -- metrics, table and picture -----------------------------------------------------------------
@dataclass
class Quality:
    """PSNR (dB, with its standard error over the images), SSIM and the judge's accuracy (the
    fraction of restored images judged to be of the truth's class; None without labels)."""

    psnr: float
    psnr_se: float
    ssim: float
    judge: float | None


def quality(x: Tensor, truth: Tensor, *, judge: Judge | None = None,
            labels: Tensor | None = None) -> Quality:
    """The quality of restorations x (n, *D) against the truth (n, *D)."""
    p = psnr(x, truth)
    se = (p.std() / p.numel() ** 0.5).item() if p.numel() > 1 else float("nan")
    acc = judge.accuracy(x, labels) if judge is not None and labels is not None else None
    return Quality(p.mean().item(), se, ssim(x, truth).mean().item(), acc)


def table(rows: dict[str, Quality], chance: float | None = None) -> list[str]:
    """The rows as aligned text lines: name, PSNR +- SE, SSIM, judge accuracy."""
    width = max(len(k) for k in rows)
    lines = [f"{'':<{width}}  PSNR (dB)       SSIM    judge"]
    for name, q in rows.items():
        acc = "-" if q.judge is None else f"{q.judge:.3f}"
        lines.append(f"{name:<{width}}  {q.psnr:6.2f} +- {q.psnr_se:4.2f}  {q.ssim:.4f}  {acc}")
    if chance is not None:
        lines.append(f"(judge: the fraction of restored images classified as the truth's class; "
                     f"chance {chance:.3f})")
    return lines


def report(restored: dict[str, Tensor], truth: Tensor, labels: Tensor | None, data: Dataset
           ) -> tuple[dict[str, Quality], list[str]]:
    """`quality` of each named restoration (with the digits judge for labelled data) and the
    table's lines."""
    judge = None if labels is None else fit_judge(data)
    found = {name: quality(x, truth, judge=judge, labels=labels) for name, x in restored.items()}
    return found, table(found, None if judge is None else 1 / data.num_classes)


def flat_metrics(rows: dict[str, Quality]) -> dict[str, float]:
    """{"<row>_psnr": ..., "<row>_ssim": ..., "<row>_judge": ...}, the row names as keys."""
    out: dict[str, float] = {}
    for name, q in rows.items():
        key = "_".join(name.replace(",", " ").replace("-", " ").split()).lower()
        out.update({f"{key}_psnr": q.psnr, f"{key}_psnr_se": q.psnr_se, f"{key}_ssim": q.ssim})
        if q.judge is not None:
            out[f"{key}_judge"] = q.judge
    return out


def degraded_picture(degradation: Degradation, y: Tensor) -> Tensor:
    """The degraded images of y (n, M) shown at the images' size and channels, (n, *D)."""
    img = degradation.as_image(y)
    c, h, w = degradation.shape
    if img.shape[-2:] != (h, w):
        img = F.interpolate(img, size=(h, w), mode="nearest")
    return img.expand(-1, c, -1, -1)


def picture(degradation: Degradation, y: Tensor, restored: dict[str, Tensor], std: Tensor,
            baseline: tuple[str, Tensor], path: Path, *, title: str,
            truth: Tensor | None = None) -> Path:
    """Up to PICTURE_INPUTS inputs (columns); rows: degraded, the baseline, the first of
    `restored` (the mean of the samples), their per-pixel std (black 0, white its maximum, stated),
    the rest of `restored` (a sample), the truth if known; images (n, *D)."""
    m = min(y.shape[0], PICTURE_INPUTS)
    top = std[:m].max().clamp_min(1e-12).item()
    (first, x), *rest = restored.items()
    rows = {"degraded": degraded_picture(degradation, y[:m]), baseline[0]: baseline[1][:m],
            first: x[:m], f"std (white = {top:.2f})": 2 * std[:m] / top - 1,
            **{k: v[:m] for k, v in rest}}
    if truth is not None:
        rows["truth"] = truth[:m]
    grid = torch.cat([v.cpu().float() for v in rows.values()])
    return plots.image_grid(grid, path, nrow=m, title=f"{title}\nrows: {' | '.join(rows)}")


def main_baseline(found: dict[str, Tensor]) -> tuple[str, Tensor]:
    """The baseline a picture shows: bicubic where there is one, else the back-projection."""
    name = "bicubic" if "bicubic" in found else next(iter(found))
    return name, found[name]
