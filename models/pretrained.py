"""diffusers checkpoints as score models: `from_diffusers(source) -> (sde, model)`.

A diffusers pixel-space model is a UNet2DModel and a scheduler. The scheduler fixes the SDE:
    DDPM-family schedulers (DDPM, DDIM, PNDM, DPM-Solver, ...): its `alphas_cumprod` table, exactly,
        as `VPSDE.from_alphas_cumprod`: DDPM step k (timestep k) at t_k = (k + 1) / N, so the UNet is
        fed the timestep N t - 1 as a float (DPM-Solver's discrete-model convention), and its output
        is read by the scheduler's prediction_type: "epsilon" -> eps, "v_prediction" -> v,
        "sample" -> x0 (`models.parameterization`).
    ScoreSdeVeScheduler (NCSN++): `VESDE(sigma_min, sigma_max)`; the UNet is fed sigma(t) and
        returns the score (its Fourier time path divides by sigma).
Weights load through diffusers' own loader from safetensors files; pickle files (.bin) only with
allow_pickle=True, since unpickling runs code from the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from score_sde.models.diffusers_unet import import_diffusers
from score_sde.models.score_model import ScoreModel
from score_sde.sde_lib import SDE, VESDE, VPSDE

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PretrainedUNet(nn.Module):
    """A loaded diffusers UNet2DModel called as net(x, t, y=None) with the SDE's time t.

    Args:
        unet: the UNet2DModel.
        timestep: the UNet's time input as a function of t (B,) -> (B,): `discrete_timestep` of
            the table's N (VP) or the VESDE's sigma (VE).
    """

    def __init__(self, unet: nn.Module, timestep: Callable[[Tensor], Tensor]):
        super().__init__()
        self.unet, self.timestep = unet, timestep
        self.num_classes = unet.config.num_class_embeds

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The UNet's output at x (B, C, H, W), times t (B,) and labels y (B,) if class-conditional."""
        if (y is None) != (self.num_classes is None):
            given = "None" if y is None else "labels"
            raise ValueError(f"y must be given exactly when the model is class-conditional; this one has "
                             f"num_class_embeds={self.num_classes}, got y={given}")
        return self.unet(x, self.timestep(t), class_labels=y).sample


def discrete_timestep(t: Tensor, num_steps: int) -> Tensor:
    """The discrete timestep N t - 1 of times t, as a float: DDPM step k at t_k = (k + 1) / N."""
    return num_steps * t - 1


def from_diffusers(source: str | os.PathLike, *, scheduler: str | os.PathLike | dict | Any = None,
                   allow_pickle: bool = False) -> tuple[SDE, ScoreModel]:
    """The SDE and the score model of a diffusers UNet2DModel checkpoint (see the module docstring).

    Args:
        source: a Hugging Face Hub id (e.g. "google/ddpm-cifar10-32") or a local folder, either in
            diffusers' pipeline layout (model_index.json, unet/, scheduler/) or a bare UNet2DModel
            folder (config.json and weights; then `scheduler` is needed unless the folder also
            holds a scheduler_config.json).
        scheduler: the scheduler, for a bare UNet folder: a folder or JSON file of its config, the
            config as a dict, or a diffusers scheduler.
        allow_pickle: also load pickle weights (.bin) when no safetensors file is there.

    Returns:
        (sde, model): the SDE, and a `ScoreModel` (in eval mode) whose net is a `PretrainedUNet`.

    Raises:
        ValueError: no such folder, an unknown layout or scheduler, pickle weights without
            allow_pickle, or a Hub id that cannot be reached (the message names the folder
            alternative).
    """
    diffusers = import_diffusers()
    unet_dir, unet_sub, sched_source = _layout(source, scheduler)
    config = _scheduler_config(diffusers, source, sched_source)
    sde, prediction, timestep = _sde_of(diffusers, config)
    kwargs = {"use_safetensors": None if allow_pickle else True, "low_cpu_mem_usage": False}
    if Path(unet_dir).is_dir():
        _check_weights(Path(unet_dir) / (unet_sub or ""), allow_pickle)
    unet = _hub_call(source, lambda: diffusers.UNet2DModel.from_pretrained(
        unet_dir, subfolder=unet_sub, **kwargs))
    model = ScoreModel(PretrainedUNet(unet, timestep), sde, prediction=prediction)
    return sde, model.eval()


def _layout(source: str | os.PathLike, scheduler) -> tuple[str, str | None, Any]:
    """(UNet location, its subfolder, the scheduler's source) for a Hub id or a local folder."""
    path = Path(source)
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "unet").is_dir():
            return str(path), "unet", scheduler if scheduler is not None else (str(path), "scheduler")
        if not (path / "config.json").is_file():
            raise ValueError(f"source {str(source)!r} is neither a diffusers pipeline folder "
                             "(model_index.json, unet/, scheduler/) nor a UNet2DModel folder (config.json)")
        if scheduler is None:
            if not (path / "scheduler_config.json").is_file():
                raise ValueError(f"source {str(source)!r} is a bare UNet folder: pass scheduler= (a "
                                 "scheduler folder, JSON file, config dict or diffusers scheduler)")
            scheduler = (str(path), None)
        return str(path), None, scheduler
    if isinstance(source, str) and _HUB_ID.match(source) and not path.exists():
        return source, "unet", scheduler if scheduler is not None else (source, "scheduler")
    raise ValueError(f"source must be a local folder or a Hugging Face Hub id 'owner/name', got "
                     f"{str(source)!r} (no such folder)")


def _scheduler_config(diffusers, source, scheduler) -> dict:
    """The scheduler's config dict from a (location, subfolder) pair, a path, a dict or a scheduler."""
    if isinstance(scheduler, dict):
        return dict(scheduler)
    if hasattr(scheduler, "config"):
        return {"_class_name": type(scheduler).__name__, **scheduler.config}
    if isinstance(scheduler, tuple):
        location, sub = scheduler
        return dict(_hub_call(source, lambda: diffusers.DDPMScheduler.load_config(location, subfolder=sub)))
    path = Path(scheduler)
    if path.is_dir():
        path = path / "scheduler_config.json"
    if not path.is_file():
        raise ValueError(f"scheduler must be a scheduler folder or JSON file, a config dict or a diffusers "
                         f"scheduler, got {str(scheduler)!r} (no such file)")
    return json.loads(path.read_text())


def _sde_of(diffusers, config: dict) -> tuple[SDE, str, Callable[[Tensor], Tensor]]:
    """(the SDE, our prediction kind, the UNet's time input) of a scheduler config."""
    name = config.get("_class_name")
    if name == "ScoreSdeVeScheduler":
        sde = VESDE(sigma_min=float(config.get("sigma_min", 0.01)),
                    sigma_max=float(config.get("sigma_max", 1348.0)))
        return sde, "score", partial(sde.sigma, check=False)  # t checked by the caller
    cls = getattr(diffusers, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.SchedulerMixin):
        raise ValueError(f"the scheduler config's _class_name must name a diffusers scheduler, got {name!r}")
    sched = cls.from_config(config)
    if not hasattr(sched, "alphas_cumprod"):
        raise ValueError(f"scheduler {name} has no alphas_cumprod table: only DDPM-family (VP) "
                         "schedulers and ScoreSdeVeScheduler (VE) map to an SDE")
    kind = sched.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"the scheduler's prediction_type must be one of {tuple(PREDICTION_TYPES)}, got "
                         f"{kind!r}")
    sde = VPSDE.from_alphas_cumprod(sched.alphas_cumprod)
    return sde, PREDICTION_TYPES[kind], partial(discrete_timestep, num_steps=len(sched.alphas_cumprod))


def _check_weights(folder: Path, allow_pickle: bool) -> None:
    """Refuse a local folder that holds only pickle weights, unless allow_pickle."""
    if not allow_pickle and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        raise ValueError(f"{str(folder)!r} holds only pickle weights (.bin), and unpickling runs code from "
                         "the file: pass allow_pickle=True if you trust it, or convert it to safetensors")


def _hub_call(source, load):
    """Run a diffusers loader; an OSError for a Hub id becomes a ValueError naming the folder route."""
    try:
        return load()
    except OSError as err:
        if Path(source).is_dir():
            raise ValueError(f"could not load the model in {str(source)!r}: {err}") from err
        from huggingface_hub import constants

        offline = " (offline: HF_HUB_OFFLINE is set)" if getattr(constants, "HF_HUB_OFFLINE", False) else ""
        pickle = (" If the repository has only pickle weights (.bin), pass allow_pickle=True if you trust it."
                  if "safetensors" in str(err) else "")
        raise ValueError(
            f"could not load {source!r} from the Hugging Face Hub{offline}: {str(err).rstrip('.')}.{pickle} "
            f"Without a network, download it where there is one (huggingface-cli download {source} "
            "--local-dir DIR) and pass the folder DIR as source") from err
