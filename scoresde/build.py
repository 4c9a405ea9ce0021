"""Build the pieces of a run (data, SDE, score model, solver) from a composed config, rebuild a
trained run from its folder, and load a pretrained diffusers model (`load_pretrained`).

Everything with a `_target_` is built by `hydra.utils.instantiate`, so a wrong key in
`conf/sde/*.yaml` or `conf/model/*.yaml` fails here, at start, naming the constructor; and only
after `score_sde.targets` has checked that the target is one of this project's builders.
Rebuilding a run executes nothing from its folder: config.yaml is read as data and checked
(`score_sde.run_folder`), the checkpoint is loaded with `weights_only=True`, and config.yaml must
agree with the config stored in the checkpoint on everything that defines the model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from score_sde import models
from score_sde.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from score_sde.config import CHECKPOINT_DIR, CONFIG_FILE
from score_sde.data import Dataset
from score_sde.degradation import Degradation
from score_sde.pretrained import PretrainedModel, data_range_of, on_unit_range
from score_sde.run_folder import check_against_checkpoint, read_run_config
from score_sde.sde_lib import SDE
from score_sde.targets import check_pretrained_folder, checked_node

_SET_BY_APP = ("generator", "callback", "return_trajectory")  # solver keywords the app passes


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Build the node of slot `key` ("sde", "model.net", "data", "solver") once its target has
    passed `targets.checked_node`: the resolved node that was checked is what is built."""
    plain = checked_node(node, key)
    try:
        return instantiate(plain, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ValueError(f"cannot build {key} ({node.get('_target_')}): {cause}") from err


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda if available else cpu; "cuda" without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no CUDA device is available; use device=cpu")
    return torch.device(device)


def build_data(cfg: DictConfig) -> Dataset:
    data = _instantiate(cfg.data, "data")
    if not isinstance(data, Dataset):
        raise ValueError(f"data._target_ must return a score_sde.data.Dataset, got {type(data)}")
    return data


def build_sde(cfg: DictConfig) -> SDE:
    sde = _instantiate(cfg.sde, "sde")
    if not isinstance(sde, SDE):
        raise ValueError(f"sde._target_ must build an sde_lib.SDE, got {type(sde).__name__}")
    return sde


def conditional_classes(cfg: DictConfig, data: Dataset) -> int | None:
    """The number of classes a run conditions on: the data's K if `cfg.conditional`, else None.

    Raises:
        ValueError: conditional training is asked for but the data have no labels.
    """
    if not cfg.get("conditional"):
        return None
    if data.num_classes is None:
        raise ValueError(f"conditional=true needs class labels, but data {data.name!r} "
                         f"({cfg.data._target_}) has none; use labelled data (ring, checkerboard, "
                         "moons, digits, mnist, cifar10, an npz file with a 'y' array or an image "
                         "folder with class subfolders) or drop conditional=true")
    return data.num_classes


def build_degradation(node: DictConfig, shape: tuple[int, ...]) -> Degradation:
    """The degradation of a `conf/degradation` entry for images of shape `shape`."""
    degradation = _instantiate(node, "degradation", shape=shape)
    if not isinstance(degradation, Degradation):
        raise ValueError(f"degradation._target_ must return a score_sde.degradation.Degradation, "
                         f"got {type(degradation).__name__}")
    return degradation


def build_model(cfg: DictConfig, sde: SDE, data_shape: tuple[int, ...],
                num_classes: int | None = None) -> models.ScoreModel:
    """The network of `cfg.model.net` sized for data of shape `data_shape`, in a ScoreModel;
    class-conditional on labels in [0, num_classes) if num_classes is given; image-conditional
    (cond_channels) if `cfg.degradation` is set.

    Raises:
        ValueError: the network's input kind does not fit the data (e.g. a U-Net on 2-D points).
    """
    kind = cfg.model.input
    if kind == "vector" and len(data_shape) != 1:
        raise ValueError(f"model.input is 'vector' (an MLP for points of shape (d,)) but the data "
                         f"have shape {data_shape}; use model=unet for images")
    if kind == "image" and len(data_shape) != 3:
        raise ValueError(f"model.input is 'image' (a U-Net for (C, H, W) images) but the data "
                         f"have shape {data_shape}; use model=mlp for points")
    size = {"dim": data_shape[0]} if kind == "vector" else {"in_channels": data_shape[0]}
    if kind == "image" and "image_size" in cfg.model.net and cfg.model.net.image_size is None:
        size["image_size"] = data_shape[-1]  # model=diffusers_unet: H = W from the data
    if num_classes is not None:
        size["num_classes"] = num_classes
    if cfg.get("degradation") is not None:
        if kind != "image":
            raise ValueError("degradation= trains an image-conditional U-Net: use model=unet")
        size["cond_channels"] = build_degradation(cfg.degradation, data_shape).cond_channels
    net = _instantiate(cfg.model.net, "model.net", **size)
    return models.ScoreModel(net, sde, prediction=cfg.model.prediction)


def build_solver(cfg: DictConfig) -> Callable[..., Any]:
    """The partial sampler of `cfg.solver`: call it as solver(sde, score_fn, x_T, generator=...).

    Raises:
        ValueError: a solver.<key> that the sampler does not take (e.g. `+solver.foo=1`), named
            with the keys it takes.
    """
    solver = _instantiate(cfg.solver, "solver")
    if not isinstance(solver, functools.partial):
        raise ValueError("solver must be built with `_partial_: true` into a callable, got "
                         f"{type(solver).__name__}")
    params = inspect.signature(solver.func).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return solver
    keywords = [k for k, p in params.items() if p.kind == p.KEYWORD_ONLY and k not in _SET_BY_APP]
    for key in solver.keywords:
        if key not in keywords:
            raise ValueError(f"solver.{key} is not a setting of {cfg.solver._target_}; it takes "
                             f"{', '.join(keywords)}")
    return solver


@dataclass
class TrainedRun:
    """A trained run rebuilt from its folder.

    Attributes:
        cfg: the run's resolved training config.
        folder: the run folder.
        sde: its SDE.
        model: the score model with the checkpoint's weights (the EMA weights if asked), eval mode.
        checkpoint: the checkpoint file loaded.
        step: the training step of that checkpoint.
        data_shape: the shape D of one sample the model was trained on.
        num_classes: the classes of a class-conditional run (its null label), else None.
    """

    cfg: DictConfig
    folder: Path
    sde: SDE
    model: models.ScoreModel
    checkpoint: Path
    step: int
    data_shape: tuple[int, ...]
    num_classes: int | None = None


def _check_finite(weights: dict[str, torch.Tensor], path: Path, which: str) -> None:
    """Refuse weights holding NaN or inf, naming the first tensors and what to load instead."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        other = "ema=false (the raw weights), " if which == "EMA" else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds non-finite {which} weights (in {', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}): the training diverged before it was saved; "
            f"use {other}an earlier checkpoint (checkpoint=<file>) or retrain")


def load_run(run_dir: str | Path, *, checkpoint: str | Path | None = None, ema: bool = True,
             device: str | torch.device = "cpu") -> TrainedRun:
    """Rebuild the SDE and model of a trained run from `<run_dir>/config.yaml` and a checkpoint.

    config.yaml is checked before anything is built (`run_folder.read_run_config`) and must agree
    with the config stored in the checkpoint on what defines the model; the weights must be finite.

    Raises:
        ValueError: the folder is not a run folder, its config.yaml is unreadable, builds
            something other than this project's classes or differs from the checkpoint's in
            what defines the model; or the folder holds no checkpoint.
        CheckpointError: the checkpoint cannot be read, does not fit, or holds non-finite weights.
    """
    run_dir = Path(run_dir).expanduser()
    cfg = read_run_config(run_dir)
    path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if path is None:
        raise ValueError(f"run {str(run_dir)!r} holds no checkpoint in {CHECKPOINT_DIR}/ yet")
    state = load_checkpoint(path, map_location="cpu")
    cfg_file = run_dir / CONFIG_FILE
    check_against_checkpoint(cfg, state, path, str(cfg_file))
    sde = build_sde(cfg)
    shape = tuple(state["data_shape"])
    num_classes = state.get("num_classes")
    model = build_model(cfg, sde, shape, num_classes)
    weights, which = (state["ema"]["module"], "EMA") if ema else (state["model"], "model")
    try:
        model.load_state_dict(weights)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model of "
                              f"{cfg_file}: {err}") from err
    _check_finite(weights, path, which)
    return TrainedRun(cfg, run_dir, sde, model.to(device).eval().requires_grad_(False), path,
                      int(state["step"]), shape, num_classes)


def build_run_data(run: TrainedRun) -> Dataset:
    """The data of a trained run (`build_data` of its config), which must have the sample shape
    and the classes its checkpoint's model was trained on.

    Raises:
        ValueError: naming the shape or the number of classes of both.
    """
    data = build_data(run.cfg)
    source = run.folder / CONFIG_FILE
    if data.shape != run.data_shape:
        raise ValueError(f"the data of {source} have samples of shape {data.shape}, but the "
                         f"model of {run.checkpoint} was trained on {run.data_shape}; restore "
                         f"the data settings in {source}")
    if run.num_classes is not None and data.num_classes != run.num_classes:
        raise ValueError(f"the data of {source} have {data.num_classes} classes, but the model "
                         f"of {run.checkpoint} was trained on {run.num_classes}; restore the data "
                         f"settings in {source}")
    return data

def load_pretrained(source: str, *, device: str | torch.device = "cpu") -> PretrainedModel:
    """Load a diffusers checkpoint (Hub id or folder) for `sample` / `likelihood`: the one place
    where the app loads a pretrained model (`models.from_diffusers`: safetensors only), put on
    data in [-1, 1] (`score_sde.pretrained`).

    Raises:
        ValueError: no such folder or Hub id (offline: the message names the folder route), a
            layout or scheduler that does not map to an SDE, pickle-only weights, a folder
            naming classes other than diffusers' (`targets.check_pretrained_folder`).
    """
    check_pretrained_folder(source)
    sde, model = models.from_diffusers(source)
    config = model.net.unet.config
    size = config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    data_range = data_range_of(sde)
    unit_sde, unit_model = on_unit_range(sde, model.to(device).requires_grad_(False), data_range)
    return PretrainedModel(str(source), unit_sde, unit_model, (config.in_channels, h, w),
                           model.net.num_classes, data_range, sde)
