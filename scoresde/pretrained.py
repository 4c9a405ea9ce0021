"""A pretrained diffusers model in the app's data convention: images in [-1, 1].

DDPM-family checkpoints (VP) are trained on images in [-1, 1], ours too; the Score SDE VE
checkpoints (NCSN++, diffusers' ScoreSdeVePipeline) on images in [0, 1]. A model of data z in
[lo, hi] becomes a model of x = (z - b) / a in [-1, 1], with a = (hi - lo) / 2 and b = (hi + lo) / 2:

    score   s_x(x, t) = a s_z(a x + b, t)                  (the density of x is a^D p_z(a x + b))
    VE SDE  x_t = (z_t - b) / a = x_0 + (sigma(t) / a) eps, i.e. VESDE(sigma_min / a, sigma_max / a)

so every sampler, the likelihood (bits/dim: log p_x = log p_z + D log a) and the uint8 export work
on [-1, 1] as they do for our own runs, exactly, at the same times t. Only a VE SDE (alpha = 1)
maps this way; the data range is recorded with the samples and the likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from score_sde.sde_lib import SDE, VESDE

UNIT = (-1.0, 1.0)


class RangeMapped(nn.Module):
    """The score model of data in [lo, hi] as a score model of x in [-1, 1] (module docstring).

    Args:
        model: score(z (B, *D), t (B,), y=None) -> (B, *D) of data z in [lo, hi].
        data_range: (lo, hi).
    """

    def __init__(self, model: nn.Module, data_range: tuple[float, float]):
        super().__init__()
        lo, hi = data_range
        self.model, self.a, self.b = model, (hi - lo) / 2, (hi + lo) / 2

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The score of x (B, *D) in [-1, 1] at times t (B,), labels y (B,) or None."""
        z = self.a * x + self.b
        return self.a * (self.model(z, t) if y is None else self.model(z, t, y))


@dataclass
class PretrainedModel:
    """A diffusers checkpoint ready for `sample` and `likelihood`, on data in [-1, 1].

    Attributes:
        source: the Hub id or folder it was loaded from.
        sde: the SDE of x in [-1, 1] (for a VE checkpoint on [0, 1]: sigmas doubled).
        model: the score model, called as model(x, t) or model(x, t, y).
        shape: (C, H, W) of one image.
        num_classes: the class embeddings of a class-conditional UNet, else None.
        data_range: the (lo, hi) of the data the checkpoint was trained on.
        checkpoint_sde: the checkpoint's own SDE (of data in data_range).
    """

    source: str
    sde: SDE
    model: nn.Module
    shape: tuple[int, int, int]
    num_classes: int | None
    data_range: tuple[float, float]
    checkpoint_sde: SDE

    def record(self) -> dict[str, Any]:
        """What identifies the model in sample metadata, likelihood records and tuned grids."""
        return {"pretrained": self.source, "sde": repr(self.sde),
                "checkpoint_sde": repr(self.checkpoint_sde), "data_range": list(self.data_range)}


def data_range_of(sde: SDE) -> tuple[float, float]:
    """The data range of a diffusers checkpoint's SDE: [0, 1] for VE (ScoreSdeVe), else [-1, 1]."""
    return (0.0, 1.0) if isinstance(sde, VESDE) else UNIT


def on_unit_range(sde: SDE, model: nn.Module, data_range: tuple[float, float]
                  ) -> tuple[SDE, nn.Module]:
    """(sde, model) of data in `data_range` as (sde, model) of x in [-1, 1] (module docstring).

    Raises:
        ValueError: a range other than [-1, 1] on an SDE that is not a VESDE.
    """
    if tuple(data_range) == UNIT:
        return sde, model
    if not isinstance(sde, VESDE):
        raise ValueError(f"data_range {list(data_range)} maps to [-1, 1] only under a VESDE "
                         f"(alpha = 1), got {sde!r}")
    a = (data_range[1] - data_range[0]) / 2
    return (VESDE(sde.sigma_min / a, sde.sigma_max / a, T=sde.T),
            RangeMapped(model, data_range).eval())
