"""Class conditioning in the app: label dropout in training, the guided score of a trained run, and
the per-class evaluation of a conditional run.

A class-conditional network takes labels y in [0, K) and the null label K, its unconditional
score. Training replaces a fraction of the labels by the null label (label dropout), so that one
network learns both; sampling mixes them by classifier-free guidance (`solvers.classifier_free_guidance`),

    s_w(x, t) = s(x, t, null) + w (s(x, t, y) - s(x, t, null)),

w = 0 unconditional, w = 1 conditional, w > 1 guided.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from score_sde import models, plots, solvers
from score_sde.data import Dataset
from score_sde.judge import Judge
from score_sde.sde_lib import SDE, ScoreFn

PICTURE_PER_CLASS = 10  # samples per class (one row each) in the pictures of image classes


def drop_labels(y: Tensor, num_classes: int, p: float, generator: torch.Generator) -> Tensor:
    """y (B,) with each label replaced by the null label `num_classes` with probability p.

    The B uniform draws come from `generator` (on the CPU) whatever p, so a run's random stream,
    and hence its exact resume, does not depend on the value of p.
    """
    drop = torch.rand(y.shape[0], generator=generator) < p
    return torch.where(drop.to(y.device), torch.full_like(y, num_classes), y)


def guided_score(model: models.ScoreModel, num_classes: int | None, label: int | None,
                 scale: float, *, run: str = "the run", null_label: int | None = None) -> ScoreFn:
    """The score to sample a trained run (or a pretrained model) with: unconditional (label
    None; the null label of a conditional run) or classifier-free guided toward `label` with
    `scale`, whose unconditional score is at `null_label` (default: num_classes, a run's).

    Raises:
        ValueError: a label for an unconditional run, or a label outside [0, num_classes).
    """
    if label is None:
        return model
    if num_classes is None:
        raise ValueError(f"label={label} needs a class-conditional run (trained with "
                         f"conditional=true), but {run} is unconditional; drop label=")
    if not 0 <= label < num_classes:
        raise ValueError(f"label must be a class in [0, {num_classes}) of {run}, got {label}")
    return solvers.classifier_free_guidance(
        model, label, scale, null_label=num_classes if null_label is None else null_label)


@torch.no_grad()
def class_samples(sde: SDE, model: models.ScoreModel, solver: Callable[..., Any],
                  num_classes: int, shape: tuple[int, ...], *, per_class: int, scale: float,
                  seed: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, int]:
    """`per_class` samples of each class, guided with `scale`, in one solve.

    The prior draws and the solver's noise come from a generator seeded by `seed`, so every scale
    starts from the same draws (paired comparisons between scales).

    Returns:
        The samples (K * per_class, *shape) class by class, on the CPU; their labels
        (K * per_class,); the NFE of the solve.
    """
    labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    gen = torch.Generator(device).manual_seed(seed)
    x_T = sde.prior_sample((labels.shape[0], *shape), generator=gen, device=device)
    res = solver(sde, solvers.classifier_free_guidance(model, labels, scale,
                                                        null_label=num_classes), x_T,
                 generator=gen)
    return res.x.cpu(), labels.cpu(), int(res.nfe)


def class_picture(x: Tensor, labels: Tensor, data: Dataset, path: Path, *, title: str = ""
                  ) -> Path | None:
    """Images: a grid with one row of up to 10 samples per class; 2-D points: a scatter coloured
    by class next to the labelled test data; other data: no picture (None).

    Args:
        x: (N, *D) samples, class by class with the same count per class (as `class_samples`).
        labels: (N,) their classes.
    """
    if data.is_image:
        k = int(labels.max()) + 1
        per_class = x.shape[0] // k
        m = min(per_class, PICTURE_PER_CLASS)
        rows = x.reshape(k, per_class, *x.shape[1:])[:, :m].reshape(k * m, *x.shape[1:])
        return plots.image_grid(rows, path, nrow=m, title=title)
    if data.shape == (2,):
        return plots.scatter(x, data.test, path, title=title, labels=labels,
                             data_labels=data.test_labels)
    return None


def evaluate_classes(sde: SDE, model: models.ScoreModel, solver: Callable[..., Any],
                     data: Dataset, *, settings: Any, out_dir: Path, tag: str, seed: int,
                     device: torch.device | str = "cpu", judge: Judge | None = None
                     ) -> tuple[dict[str, float], list[Path]]:
    """The per-class evaluation of a conditional run: at each of `settings.guidance_scales`,
    `settings.per_class` samples of every class, their picture and, with a judge, the fraction
    judged to be of the asked-for class (chance: 1/K).

    Returns:
        The metrics (`class_accuracy_w<scale>`, `judge_test_accuracy`, `chance`, `per_class`
        with a judge; `class_nfe_w<scale>` always) and the pictures written.
    """
    k = data.num_classes
    metrics: dict[str, float] = {}
    if judge is not None:
        metrics.update(judge_test_accuracy=judge.test_accuracy, chance=1.0 / k,
                       per_class=settings.per_class)
    pictures = []
    for scale in settings.guidance_scales:
        name = f"w{scale:g}"
        x, y, nfe = class_samples(sde, model, solver, k, data.shape, per_class=settings.per_class,
                                  scale=scale, seed=seed, device=device)
        metrics[f"class_nfe_{name}"] = nfe
        pic = class_picture(x, y, data, out_dir / f"classes_{name}_{tag}.png",
                            title=f"{data.name}: classes 0..{k - 1}, guidance scale {scale:g}")
        if pic is not None:
            pictures.append(pic)
        if judge is not None:
            metrics[f"class_accuracy_{name}"] = judge.accuracy(
                x.clamp(-1, 1) if data.quantized else x, y)
    return metrics, pictures
