"""Guided score functions for conditional sampling: classifier-free and classifier guidance.

Both turn a conditional model into a plain score_fn(x, t), so every sampler takes them as is.
By Bayes, grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x) (docs/math.md, "Conditional
generation"); guidance weights the conditional part with a scale w >= 0 (w = 1 is exact
conditioning, w > 1 sharpens, sampling approximately p_t(x) p_t(y | x)^w):

    classifier-free   s_w(x, t) = s(x, t, null) + w (s(x, t, y) - s(x, t, null))
    classifier        s_w(x, t) = s(x, t) + w grad_x log p_t(y | x)

Legend: s(x, t, y) a score conditioned on label y (`models.ScoreModel` with a class-conditional
network), null the unconditional label (y = num_classes, or None), p_t(y | x) a noise-conditional
classifier such as `models.NoisyClassifier`.

Cost: a sampler's `nfe` counts evaluations of the guided score. One evaluation of
classifier-free guidance is one network call on a batch of 2B (conditional and unconditional
halves concatenated), or two calls on B without a null label; w = 0 and w = 1 need only one call
on B. One evaluation of classifier guidance is one score call plus one classifier forward and
backward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from score_sde.sde_lib import ScoreFn

LabelScoreFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]
LogProbFn = Callable[[Tensor, Tensor], Tensor]


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0:
        raise ValueError(f"scale must be a number >= 0, got {scale!r}")
    return float(scale)


def _check_label_type(y: int | Tensor) -> Tensor:
    """y as an integer tensor (0-d or (B,)), or a ValueError."""
    if isinstance(y, bool) or not isinstance(y, (int, Tensor)):
        raise ValueError(f"y must be an int or an integer tensor of shape (B,), got {y!r}")
    y = torch.as_tensor(y)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.ndim > 1:
        raise ValueError(f"y must be an int or an integer tensor of shape (B,), got "
                         f"{y.dtype} of shape {tuple(y.shape)}")
    return y


def _batch_labels(y: int | Tensor, x: Tensor) -> Tensor:
    """y as a (B,) long tensor on x's device: an int is repeated over the batch."""
    y = _check_label_type(y).to(x.device)
    if y.ndim == 0:
        return y.long().expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must be an int or have shape (B,) = ({x.shape[0]},), got "
                         f"{tuple(y.shape)}")
    return y.long()


def _check_range(y: Tensor, num_classes: int) -> None:
    if bool((y < 0).any()) or bool((y >= num_classes).any()):
        raise ValueError(f"y must lie in [0, num_classes) = [0, {num_classes}), got values in "
                         f"[{y.min().item()}, {y.max().item()}]")


def classifier_free_guidance(score_fn: LabelScoreFn, y: int | Tensor, scale: float, *,
        null_label: int | None = None) -> ScoreFn:
    """Classifier-free guidance (Ho & Salimans 2022) as a score_fn(x, t) for any sampler:

        s_w(x, t) = s(x, t, null) + w (s(x, t, y) - s(x, t, null)),

    w = 0 the unconditional score, w = 1 the conditional one, w > 1 guided.

    Args:
        score_fn: score_fn(x, t, y) -> like x, conditioned on labels y (B,); y = null_label (or
            y = None when null_label is None) is the unconditional score. A `models.ScoreModel`
            over a class-conditional network qualifies.
        y: the label to sample: an int for the whole batch or a (B,) integer tensor, in
            [0, null_label) when null_label is given.
        scale: the guidance scale w >= 0.
        null_label: the label of the unconditional score (the networks' num_classes). Given,
            both halves run in one call on the concatenated batch [x; x] with labels [y; null];
            None, the unconditional half is a second call score_fn(x, t, None).

    Returns:
        score_fn(x, t) with x (B, *D) and t (B,), returning (B, *D).

    Raises:
        ValueError: scale < 0, null_label not an int >= 1, or y not an integer label (in range).
    """
    scale = _check_scale(scale)
    if null_label is not None and (isinstance(null_label, bool) or not isinstance(null_label, int)
                                   or null_label < 1):
        raise ValueError(f"null_label must be None or an int >= 1 (the number of classes), got "
                         f"{null_label!r}")
    labels = _check_label_type(y)  # the batch size is checked per call
    if null_label is not None:
        _check_range(labels.reshape(-1), null_label)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        labels = _batch_labels(y, x)
        null = None if null_label is None else torch.full_like(labels, null_label)
        if scale == 0:
            return score_fn(x, t, null)
        if scale == 1:
            return score_fn(x, t, labels)
        if null is None:
            s_cond, s_uncond = score_fn(x, t, labels), score_fn(x, t, None)
        else:
            both = score_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
            s_cond, s_uncond = both.chunk(2)
        return s_uncond + scale * (s_cond - s_uncond)

    return guided


def classifier_log_prob_grad(log_prob_y_fn: LogProbFn, x: Tensor, t: Tensor,
                             y: int | Tensor) -> Tensor:
    """grad_x log p_t(y | x) by autograd, also under an enclosing torch.no_grad().

    Args:
        log_prob_y_fn: log_prob_y_fn(x, t) -> (B, K) class logits or log-probabilities of
            p_t(. | x); they are normalised here by log_softmax (which leaves log-probabilities
            unchanged), so a classifier's raw logits qualify.
        x: (B, *D) noisy data x_t.
        t: (B,) times.
        y: an int or (B,) integer labels in [0, K).

    Returns:
        (B, *D) the gradient, detached.
    """
    labels = _batch_labels(y, x)
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = log_prob_y_fn(x_in, t)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"log_prob_y_fn must return (B, K) with B = {x.shape[0]}, got "
                             f"{tuple(logits.shape)}")
        _check_range(labels, logits.shape[1])
        log_p = torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, x_in)
    return grad.detach()


def classifier_guidance(score_fn: ScoreFn, log_prob_y_fn: LogProbFn, y: int | Tensor,
                        scale: float) -> ScoreFn:
    """Classifier guidance (Song et al. 2021; Dhariwal & Nichol 2021) as a score_fn(x, t):

        s_w(x, t) = s(x, t) + w grad_x log p_t(y | x),

    exact conditioning at w = 1 when s is the unconditional score and p_t(y | x) the exact
    posterior of the noised data; w > 1 sharpens. The gradient comes from autograd, enabled inside
    the samplers' torch.no_grad().

    Args:
        score_fn: the unconditional score_fn(x, t) -> like x.
        log_prob_y_fn: log_prob_y_fn(x, t) -> (B, K) logits or log-probabilities of p_t(. | x),
            e.g. a `models.NoisyClassifier`, or `lambda x, t: gm.component_log_prob(x, t, sde)`
            for a Gaussian mixture whose components are the classes.
        y: the label to sample, an int or a (B,) integer tensor in [0, K).
        scale: the guidance scale w >= 0.

    Returns:
        score_fn(x, t) with x (B, *D) and t (B,), returning (B, *D).

    Raises:
        ValueError: scale < 0 or y not an integer label; at call time, y outside [0, K).
    """
    scale = _check_scale(scale)
    if bool((_check_label_type(y) < 0).any()):
        raise ValueError(f"y must hold labels >= 0, got {y!r}")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        score = score_fn(x, t)
        if scale == 0:
            return score
        return score + scale * classifier_log_prob_grad(log_prob_y_fn, x, t, y)

    return guided
