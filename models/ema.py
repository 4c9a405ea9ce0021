"""Exponential moving average of a model's weights, kept in a shadow copy of the model.

After each optimizer step, `ema.update(model)` sets, for every floating-point parameter,
    shadow <- d_n shadow + (1 - d_n) param,   n = the number of updates so far,
and copies every buffer (and non-float parameter) as is. With a constant decay d_n = decay, after
n updates with constant weights w the shadow is d^n shadow_0 + (1 - d^n) w. With warmup, the decay
grows as d_n = min(decay, (1 + n) / (10 + n)) (TensorFlow's ExponentialMovingAverage with
num_updates), so early averages do not remember the random initialisation for long.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


class EMA:
    """An exponential moving average of `model`'s weights.

    Args:
        model: the trained model; a deep copy of it becomes the averaged `module`.
        decay: the decay in [0, 1): the weight of the old average at each update.
        warmup: use d_n = min(decay, (1 + n) / (10 + n)) instead of a constant decay.

    Attributes:
        module: the averaged copy of the model (eval mode, no gradients); sample from this.
        num_updates: how many times `update` has run.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False):
        if not (isinstance(decay, (int, float)) and 0 <= decay < 1):
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay d_n that the next `update` uses."""
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights; copy its buffers.

        Raises:
            ValueError: model's parameter or buffer names differ from the averaged copy's.
        """
        model = _unwrap(model)
        d = self.current_decay()
        for kind, mine, theirs in (("parameters", self.module.named_parameters(),
                                    model.named_parameters()),
                                   ("buffers", self.module.named_buffers(), model.named_buffers())):
            mine, theirs = dict(mine), dict(theirs)
            if mine.keys() != theirs.keys():
                raise ValueError(f"model's {kind} {sorted(theirs)} differ from the EMA copy's "
                                 f"{sorted(mine)}; pass the model the EMA was built from")
            for name, avg in mine.items():
                new = theirs[name].detach()
                if kind == "parameters" and avg.is_floating_point():
                    avg.lerp_(new.to(avg), 1 - d)  # the copy may live elsewhere (CPU)
                else:
                    avg.copy_(new)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain numbers only, loadable with torch.load(weights_only=True)."""
        return {"module": self.module.state_dict(), "decay": self.decay, "warmup": self.warmup,
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights, the decay settings and the update count."""
        missing = {"module", "decay", "warmup", "num_updates"} - state.keys()
        if missing:
            raise ValueError(f"EMA state must hold {sorted(missing)}; got keys {sorted(state)}")
        self.module.load_state_dict(state["module"])
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
        self.num_updates = int(state["num_updates"])

    def __repr__(self) -> str:
        return (f"EMA(decay={self.decay}, warmup={self.warmup}, num_updates={self.num_updates}, "
                f"module={type(self.module).__name__})")
