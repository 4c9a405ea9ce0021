"""Typed settings of the three commands, registered in hydra's ConfigStore, and their validation.

The YAML files under `conf/` fill these schemas; a key that is not in a schema (a typo) or a value of
the wrong type fails while hydra composes the config, before anything is built. Values that have the
right type but make no sense (a negative learning rate, an image network on 2-D points) are caught by
`validate_train` with a ValueError that names the setting, the value and what is expected.

The groups whose entries are built by hydra's `_target_` (sde, model.net, data, solver) are typed
`Any` here: their keys are checked by the constructor they name, which is called at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

WEIGHTINGS = ("sigma2", "likelihood", "none")
PREDICTIONS = ("eps", "score", "x0", "v")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelSettings:
    """The score network and how its output is read (`models.ScoreModel`)."""

    input: str = "vector"  # "vector": (B, d) points; "image": (B, C, H, W)
    prediction: str = "eps"
    net: Any = MISSING


@dataclass
class TrainSettings:
    steps: int = 4000
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 200
    cosine_decay: bool = True
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    ema_decay: float = 0.999
    weighting: str = "likelihood"
    importance_sampling: bool = True
    t_eps: float = 1e-5
    label_dropout: float = 0.1  # conditional runs: P(a label is replaced by the null label)
    amp: bool = False  # bfloat16 autocast, CUDA only
    log_every: int = 50
    progress: bool = True


@dataclass
class EvalSettings:
    every: int = 0  # evaluate every N steps (0: only at the end)
    n_samples: int = 2000
    nll_points: int = 2000  # held-out points for the test NLL (0: skip the NLL)
    divergence: str = "exact"
    rtol: float = 1e-5
    atol: float = 1e-5
    dequant_draws: int = 1
    paths: bool = True  # picture of reverse-SDE and PF-ODE paths (2-D data)
    gmm_baseline: bool = False  # images: also report sklearn's GaussianMixture bits/dim
    # conditional runs: a picture of `per_class` samples per class at each classifier-free
    # guidance scale; with `judge`, the fraction of them that a classifier trained on the
    # training split assigns to the asked-for class
    guidance_scales: list[float] = field(default_factory=lambda: [1.0])
    per_class: int = 8
    judge: bool = False


@dataclass
class CheckpointSettings:
    every: int = 1000
    keep: int = 3


@dataclass
class LoggerSettings:
    backend: str = "wandb"  # "wandb" or "none"; metrics.jsonl is always written
    mode: str = "offline"  # wandb mode: "offline", "online" or "disabled"
    project: str = "score-sde"
    entity: str | None = None


@dataclass
class TrainConfig:
    name: str | None = None  # the wandb run name (default: the run folder's name)
    run: str | None = None  # an existing run folder to resume; None: a new folder
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: torch's default); 1 is fastest for small models
    # class-conditional training on the data's labels (with train.label_dropout); null means
    # false and lets hydra take both spellings, `conditional=true` and `+conditional=true`
    conditional: bool | None = None
    sde: Any = MISSING
    model: ModelSettings = field(default_factory=ModelSettings)
    data: Any = MISSING
    solver: Any = MISSING
    logger: LoggerSettings = field(default_factory=LoggerSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)


@dataclass
class GuidanceSettings:
    scale: float = 1.0  # classifier-free guidance: 0 unconditional, 1 conditional, > 1 guided


@dataclass
class InpaintSettings:
    """Known values and a mask (1 = known) in .pt / .npy / .npz files, of shape (*D) or (n, *D)."""

    known: str | None = None
    mask: str | None = None
    resample: int = 0  # RePaint's extra jumps per step (solvers.impute)


@dataclass
class TuneSettings:
    """A grid tuned to the model on `pilot` prior draws before sampling (score_sde.tuned)."""

    pilot: int = 0  # prior draws in the pilot; 0: the solver's own grid
    search_evals: int = 0  # Powell's search budget in solver runs on the pilot (0: none)
    shift: bool = False  # search the model's evaluation times too (dpm_solver_multistep)
    rtol: float = 1e-5  # dopri5 tolerance (rtol = atol) of the pilot's reference solution


@dataclass
class SampleConfig:
    run: str = MISSING
    n: int = 64
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: the run's training setting
    ema: bool = True
    checkpoint: str | None = None  # a checkpoint file; None: the run's latest
    batch_size: int = 1000  # samples per solve; each batch has its own seed (see distributed.py)
    label: int | None = None  # a class of a conditional run; None: unconditional samples
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    solver: Any = MISSING


@dataclass
class LikelihoodData:
    split: str = "test"
    n: int = 2000  # how many points of the split (0: all)


@dataclass
class LikelihoodConfig:
    run: str = MISSING
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: the run's training setting
    ema: bool = True
    checkpoint: str | None = None
    batch_size: int = 1000  # points per solve; each batch has its own seed (see distributed.py)
    data: LikelihoodData = field(default_factory=LikelihoodData)
    divergence: str = "exact"
    probes: int = 1
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    t_eps: float = 1e-5
    dequant_draws: int = 1


def register_configs() -> None:
    """Put the schemas in hydra's ConfigStore (idempotent); the primary YAMLs list them first."""
    if not OmegaConf.has_resolver("first"):  # ${first:a,b}: a unless it is null, then b
        OmegaConf.register_new_resolver("first", lambda a, b: b if a is None else a)
    if not OmegaConf.has_resolver("start_time"):  # ${start_time:%Y-%m-%d}: like hydra's ${now:}
        OmegaConf.register_new_resolver("start_time", _start_time, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="sample_schema", node=SampleConfig)
    cs.store(name="likelihood_schema", node=LikelihoodConfig)


START_TIME_ENV = "SCORESDE_START_TIME"


def _start_time(pattern: str) -> str:
    """The time the command started, formatted; under torchrun rank 0's time (the CLI puts it
    in $SCORESDE_START_TIME), so that all ranks name the same run folder."""
    stamp = os.environ.get(START_TIME_ENV)
    moment = datetime.fromtimestamp(float(stamp)) if stamp else datetime.now()
    return moment.strftime(pattern)


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()
            ) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with overrides, as the CLI does, without running it.

    For tests and notebooks: `train(compose("train", ["data=checkerboard"]), run_dir)`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    register_configs()
    with initialize_config_module(config_module="score_sde.conf", version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def _check_device(device: str) -> None:
    _check(device in DEVICES, "device", device, f"one of {DEVICES}")


def validate_train(cfg: DictConfig) -> None:
    """Check the values of a composed train config (types were checked by the schema).

    Raises:
        ValueError: naming the first bad setting, its value and what is expected.
    """
    t, e, c = cfg.train, cfg.eval, cfg.checkpoint
    _check_device(cfg.device)
    _check(cfg.threads >= 0, "threads", cfg.threads, ">= 0 (0: torch's default)")
    _check(t.steps >= 1, "train.steps", t.steps, "an int >= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "an int >= 1")
    _check(t.lr > 0, "train.lr", t.lr, "> 0")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
    _check(t.warmup >= 0, "train.warmup", t.warmup, ">= 0")
    _check(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, ">= 0 (0 turns clipping off)")
    _check(0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "in [0, 1)")
    _check(t.weighting in WEIGHTINGS, "train.weighting", t.weighting, f"one of {WEIGHTINGS}")
    _check(0 <= t.t_eps < 1, "train.t_eps", t.t_eps, "in [0, 1)")
    _check(0 <= t.label_dropout < 1, "train.label_dropout", t.label_dropout,
           "in [0, 1) (e.g. 0.1: one label in ten becomes the null label)")
    _check(t.log_every >= 1, "train.log_every", t.log_every, "an int >= 1")
    _check(e.every >= 0, "eval.every", e.every, ">= 0 (0: only at the end)")
    _check(e.n_samples >= 1, "eval.n_samples", e.n_samples, "an int >= 1")
    _check(e.nll_points >= 0, "eval.nll_points", e.nll_points, ">= 0 (0 skips the NLL)")
    _check(e.divergence in ("exact", "hutchinson"), "eval.divergence", e.divergence,
           "'exact' or 'hutchinson'")
    _check(len(e.guidance_scales) > 0 and all(w >= 0 for w in e.guidance_scales),
           "eval.guidance_scales", list(e.guidance_scales), "a non-empty list of numbers >= 0")
    _check(e.per_class >= 1, "eval.per_class", e.per_class, "an int >= 1")
    _check(c.every >= 1, "checkpoint.every", c.every, "an int >= 1")
    _check(c.keep >= 1, "checkpoint.keep", c.keep, "an int >= 1")
    _check(cfg.model.input in ("vector", "image"), "model.input", cfg.model.input,
           "'vector' or 'image'")
    _check(cfg.model.prediction in PREDICTIONS, "model.prediction", cfg.model.prediction,
           f"one of {PREDICTIONS}")
    _check(cfg.logger.backend in ("wandb", "none"), "logger.backend", cfg.logger.backend,
           "'wandb' or 'none'")
    _check(cfg.logger.mode in ("offline", "online", "disabled"), "logger.mode", cfg.logger.mode,
           "'offline', 'online' or 'disabled'")


def validate_eval(cfg: DictConfig) -> None:
    """Check the values of a composed sample or likelihood config."""
    _check_device(cfg.device)
    _check(cfg.threads is None or cfg.threads >= 0, "threads", cfg.threads,
           "null (the run's setting) or >= 0")
    if "n" in cfg:
        _check(cfg.n >= 1, "n", cfg.n, "an int >= 1")
    _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "an int >= 1")
    if "guidance" in cfg:
        _check(cfg.label is None or cfg.label >= 0, "label", cfg.label,
               "null (unconditional) or a class >= 0")
        _check(cfg.guidance.scale >= 0, "guidance.scale", cfg.guidance.scale, ">= 0")
        _check(cfg.label is not None or cfg.guidance.scale == 1, "guidance.scale",
               cfg.guidance.scale, "left at 1 without a label (add label=<class>)")
        paths = cfg.inpaint.known, cfg.inpaint.mask
        _check((paths[0] is None) == (paths[1] is None), "inpaint.known and inpaint.mask",
               list(paths), "given together (two files) or not at all")
        _check(cfg.inpaint.resample >= 0, "inpaint.resample", cfg.inpaint.resample, "an int >= 0")
    if "tune" in cfg:
        _check(cfg.tune.pilot >= 0, "tune.pilot", cfg.tune.pilot, "an int >= 0 (0: no tuning)")
        _check(cfg.tune.search_evals >= 0, "tune.search_evals", cfg.tune.search_evals,
               "an int >= 0")
        _check(cfg.tune.rtol > 0, "tune.rtol", cfg.tune.rtol, "> 0")
        _check(not (cfg.tune.pilot and cfg.inpaint.known), "tune.pilot", cfg.tune.pilot,
               "0 when inpainting (the grid is tuned for unconstrained sampling)")
        _check(not cfg.tune.shift or cfg.tune.search_evals > 0, "tune.shift", cfg.tune.shift,
               "false unless tune.search_evals > 0 (the shifts are searched)")
    if "data" in cfg:
        _check(cfg.data.split in ("train", "test"), "data.split", cfg.data.split,
               "'train' or 'test'")
        _check(cfg.data.n >= 0, "data.n", cfg.data.n, ">= 0 (0: the whole split)")
        _check(cfg.divergence in ("exact", "hutchinson"), "divergence", cfg.divergence,
               "'exact' or 'hutchinson'")
