"""What a config may build: each `_target_` names a builder of this project, checked before any
instantiation.

hydra's `instantiate` calls whatever a `_target_` names, and a config is data: a run folder's
config.yaml may come from a download or a shared disk, and `builtins.open` or `torch.load` of a
pickle beside it would run. So a config builds only these, each slot from one package of
score_sde and of one kind, looked up by name on the package (nothing is imported by path):

    sde        score_sde.sde_lib.<name>   a concrete class derived from sde_lib.SDE
    model.net  score_sde.models.<name>    a torch.nn.Module class
    data       score_sde.data.<name>      a function returning a data.Dataset
    solver     score_sde.solvers.<name>   a sampler, solver(sde, score_fn, x_T, ...)
    degradation  score_sde.degradation.<name>  a function returning a degradation.Degradation

and the class or function must be defined in score_sde and public. hydra's other special keys
(`_args_`, `_recursive_`, `_convert_`) and a `_target_` anywhere else (nested in a slot, or in
another part of the config) are refused: `instantiate` would build those too. The check runs on
the resolved config, so an interpolation cannot smuggle a target in, and `build.py` instantiates
exactly the resolved node it checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

_HYDRA_KEYS = ("_target_", "_args_", "_recursive_", "_convert_", "_partial_")


def _is_sde(obj: Any) -> bool:
    from score_sde.sde_lib import SDE

    return inspect.isclass(obj) and issubclass(obj, SDE) and not inspect.isabstract(obj)


def _is_module(obj: Any) -> bool:
    return inspect.isclass(obj) and issubclass(obj, torch.nn.Module)


def _returns(obj: Any, cls: type) -> bool:
    """A function annotated to return `cls` (or a subclass)."""
    if not inspect.isfunction(obj):
        return False
    try:
        returns = typing.get_type_hints(obj).get("return")
    except NameError:  # an annotation that does not resolve: not a builder
        return False
    return inspect.isclass(returns) and issubclass(returns, cls)


def _is_dataset_builder(obj: Any) -> bool:
    from score_sde.data import Dataset

    return _returns(obj, Dataset)


def _is_degradation_builder(obj: Any) -> bool:
    from score_sde.degradation import Degradation

    return _returns(obj, Degradation)


def _is_sampler(obj: Any) -> bool:
    return inspect.isfunction(obj) and list(inspect.signature(obj).parameters)[:3] == [
        "sde", "score_fn", "x_T"]


# slot -> (its package, what its targets are, the test of that kind)
SLOTS: dict[str, tuple[str, str, Callable[[Any], bool]]] = {
    "sde": ("score_sde.sde_lib", "an SDE class", _is_sde),
    "model.net": ("score_sde.models", "a network class", _is_module),
    "data": ("score_sde.data", "a data set builder", _is_dataset_builder),
    "solver": ("score_sde.solvers", "a sampler", _is_sampler),
    "degradation": ("score_sde.degradation", "a degradation builder", _is_degradation_builder),
}


def _public(package: str) -> list[str]:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None) or vars(module)
    return [n for n in names if not n.startswith("_")]


def _allowed(slot: str, name: str) -> bool:
    package, _, kind = SLOTS[slot]
    if name not in _public(package):
        return False
    obj = getattr(importlib.import_module(package), name)
    return kind(obj) and getattr(obj, "__module__", "").startswith("score_sde.")


def choices(slot: str) -> list[str]:
    """The targets a slot takes, e.g. choices("sde") -> ["score_sde.sde_lib.VPSDE", ...]."""
    package = SLOTS[slot][0]
    return [f"{package}.{n}" for n in _public(package) if _allowed(slot, n)]


def _stray_keys(node: Any, path: str) -> list[tuple[str, Any]]:
    """The hydra keys (`_target_`, `_args_`, ...) anywhere in a plain container: (path, value)."""
    found = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{path}.{k}" if path else str(k)
            if k in _HYDRA_KEYS:
                found.append((key, v))
            found += _stray_keys(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _stray_keys(v, f"{path}[{i}]")
    return found


def checked_node(node: Any, slot: str, source: str = "the config") -> dict[str, Any]:
    """The resolved node of a slot as a plain dict, after checking that it builds only what the
    slot allows (see the module docstring); `instantiate` it and nothing else.

    Args:
        node: the slot's node (a DictConfig or dict).
        slot: "sde", "model.net", "data", "solver" or "degradation".
        source: where the config comes from, for the message (e.g. "run/config.yaml").

    Raises:
        ValueError: naming the key, the target and what the slot takes.
    """
    package, what, _ = SLOTS[slot]
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(plain, dict):
        raise ValueError(f"{slot} in {source} must be a mapping with a _target_, got {plain!r}")
    target = plain.get("_target_")
    prefix, _, name = str(target).rpartition(".")
    if not isinstance(target, str) or prefix != package or not _allowed(slot, name):
        raise ValueError(f"{slot}._target_ in {source} is {target!r}, which score-sde does not "
                         f"build: {slot} must be {what} of {package} "
                         f"({', '.join(n.rsplit('.', 1)[1] for n in choices(slot))}); "
                         "nothing was built or run")
    allowed = {f"{slot}._target_"} | ({f"{slot}._partial_"} if slot == "solver" else set())
    stray = [(k, v) for k, v in _stray_keys(plain, slot) if k not in allowed]
    if stray:
        raise ValueError(f"{stray[0][0]} = {stray[0][1]!r} in {source} is not allowed: a config "
                         f"builds only the {slot} its _target_ names, with plain settings; "
                         "nothing was built or run")
    return plain


def check_config(cfg: DictConfig, source: str = "the config") -> None:
    """Check every buildable slot of a config (`checked_node`) and that no other part of it
    holds a hydra key, before anything is built.

    Raises:
        ValueError: naming the first offending key and its target.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    # the slots of this command: untyped nodes (a typed one, such as likelihood's data.split and
    # data.n, is a section of settings that builds nothing)
    slots = [s for s in SLOTS if OmegaConf.select(cfg, s, default=None) is not None
             and not dataclasses.is_dataclass(OmegaConf.get_type(OmegaConf.select(cfg, s)))]
    for slot in slots:
        checked_node(OmegaConf.select(cfg, slot), slot, source)
    outside = [(k, v) for k, v in _stray_keys(plain, "")
               if not any(k.startswith((f"{s}.", f"{s}[")) for s in slots)]
    if outside:
        raise ValueError(f"{outside[0][0]} in {source} is {outside[0][1]!r}: only "
                         f"{', '.join(SLOTS)} are built from a config, each by a _target_ of score-sde; "
                         "nothing was built or run")


# what a pretrained folder's JSON files may name: diffusers classes that build no code of the folder
PRETRAINED_UNETS = ("UNet2DModel",)


def check_pretrained_folder(folder: str | Path) -> None:
    """Check a local diffusers folder for `pretrained=` before anything is loaded: its
    model_index.json, unet/config.json and config.json (read as data) may name only diffusers'
    own classes, the UNet a UNet2DModel; a component of another library (custom code that
    diffusers would import) is refused. (The scheduler's class is checked where it maps to an
    SDE, `models.from_diffusers`; weights are safetensors only.) A Hub id is not a folder: not
    checked here.

    Raises:
        ValueError: naming the file, the key and the class.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        return
    index = _json(root / "model_index.json")
    for key, value in index.items():
        if isinstance(value, list) and len(value) == 2 and value[0] != "diffusers":
            raise ValueError(f"{key} in {root / 'model_index.json'} is {value!r}: pretrained= "
                             "loads diffusers' own classes only (a UNet2DModel and its scheduler); "
                             "nothing was loaded or run")
    for config in (root / "unet" / "config.json", root / "config.json"):
        name = _json(config).get("_class_name", "UNet2DModel")
        if name not in PRETRAINED_UNETS:
            raise ValueError(f"_class_name in {config} is {name!r}: pretrained= loads a "
                             f"{' or '.join(PRETRAINED_UNETS)} only; nothing was loaded or run")


def _json(path: Path) -> dict[str, Any]:
    """A JSON object file as a dict ({} when there is no such file)."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable JSON file ({err}); restore it from the "
                         "model's source") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value
