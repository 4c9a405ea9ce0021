"""Typed settings of the three commands, registered in hydra's ConfigStore, and their validation.

The YAML files under `conf/` fill these schemas; a key that is not in a schema (a typo) or a value of
the wrong type fails while hydra composes the config, before anything is built. A key added with
`+key=value` that no schema has, a required value left out (`run=`, `data.path=`) and values that
have the right type but make no sense (a negative learning rate) are caught by `validate_train` /
`validate_eval` with a ValueError that names the setting, the value and what is expected.

The groups whose entries are built by hydra's `_target_` (sde, model.net, data, solver) are typed
`Any` here: their targets must be this project's builders (`score_sde.targets`, checked by the
validation, overrides included, before anything is built) and their keys are checked by the
constructor they name, which is called at start.

This module imports no torch: the CLI's `--help` and shell completion use it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

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
    cond_dropout: float = 0.1  # degradation runs: P(an image condition is replaced by the null one)
    amp: bool = False  # bfloat16 autocast, CUDA only
    hflip: bool = False  # mirror each training image left-right with probability 1/2
    workers: int = 2  # DataLoader workers of image sets (data.Images); 0: in the training process
    log_every: int = 50  # steps between records (and the only steps that read the loss on the host)


@dataclass
class NLLSettings:
    """The test NLL's settings, shared by `score-sde likelihood` and training's evaluation: the
    keywords of `solvers.log_likelihood` (`nll_kwargs`), the dequantization draws of images and
    the batch size, which together with the seed fix every random draw (`evaluate.sharded_nll`)."""

    # "auto": hutchinson for images (D in the thousands; exact costs D backward passes per
    # evaluation), exact for points; or "exact", "hutchinson" (with `probes`)
    divergence: str = "auto"
    probes: int = 1  # Hutchinson probes per point
    # true: fresh probes at every evaluation (noise within tolerance); null: true with
    # method=unipc, false (score_sde_pytorch's fixed probes) with torchdiffeq's methods
    redraw_probes: bool | None = None
    noise: str = "rademacher"  # Hutchinson probe distribution: "rademacher" or "gaussian"
    # a torchdiffeq method: adaptive, or fixed-step with `step_size`; or "unipc": a fixed log-SNR
    # grid of `steps` steps (steps + 1 evaluations, no tolerance), UniPC of order `order`
    method: str = "dopri5"
    steps: int = 32  # method=unipc
    order: int = 4  # method=unipc: 1-4
    rtol: float = 1e-5
    atol: float = 1e-5
    t_eps: float = 1e-5
    max_steps: int = 10_000  # adaptive steps before a solve gives up
    step_size: float | None = None  # the step of a fixed-step method (euler, rk4, ...)
    chunk_size: int | None = None  # basis vectors per pass of the exact divergence (memory)
    # "per_sample": every point's x and log-density within tolerance; "batch": the batch's RMS as
    # one flat vector (score_sde_pytorch's semantics: fewer steps, looser per point)
    error_control: str = "per_sample"
    state_dtype: str | None = None  # the ODE state's dtype: null (the data's), float32 or float64
    dequant_draws: int = 1  # images: dequantization draws per point
    batch_size: int = 1000  # points per solve; each batch has its own seed


def nll_kwargs(settings: Any) -> dict[str, Any]:
    """The `solvers.log_likelihood` keywords among NLLSettings (all but dequant_draws, batch_size)."""
    skip = ("dequant_draws", "batch_size")
    return {f.name: settings[f.name] for f in dataclasses.fields(NLLSettings) if f.name not in skip}


@dataclass
class EvalSettings(NLLSettings):
    """Training's evaluation: samples with the run's solver, the test NLL (NLLSettings, the same
    path as `score-sde likelihood`) and pictures, every `every` steps and at the end."""

    every: int = 0  # evaluate every N steps (0: only at the end)
    n_samples: int = 2000
    nll_points: int = 2000  # held-out points for the test NLL (0: skip the NLL)
    paths: bool = True  # picture of reverse-SDE and PF-ODE paths (2-D data)
    gmm_baseline: bool = False  # images: also report sklearn's GaussianMixture bits/dim
    # conditional runs: a picture of `per_class` samples per class at each classifier-free
    # guidance scale; with `judge`, the fraction of them that a classifier trained on the
    # training split assigns to the asked-for class
    guidance_scales: list[float] = field(default_factory=lambda: [1.0])
    per_class: int = 8
    judge: bool = False
    # degradation runs: `restore_n` test images degraded and restored with `restore_samples`
    # samples each, PSNR / SSIM / judge against the baselines, and their picture
    restore_n: int = 0
    restore_samples: int = 4
    # the Frechet distance (and KID) of the eval samples to the training split in the features
    # of "inception" (torch-fidelity's FID Inception: pip install 'score-sde[fid]') or "judge"
    # (the labelled data's judge classifier, no download); None: off (score_sde.fid)
    fid: str | None = None
    inception_weights: str | None = None  # a local Inception weights file (offline)


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
    progress: bool = True  # progress bars on stderr (only when it is a terminal)
    # class-conditional training on the data's labels (with train.label_dropout); null means
    # false and lets hydra take both spellings, `conditional=true` and `+conditional=true`
    conditional: bool | None = None
    # degradation=sr2 (conf/degradation): train an image-conditional net on (clean, degraded)
    # pairs, score_sde.degradation; null: no image condition
    degradation: Any = None
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
    # the label of a pretrained model's unconditional score (one trained with label dropout),
    # needed for a scale other than 1; runs of `score-sde train` use their null label K
    null_label: int | None = None


@dataclass
class InpaintSettings:
    """Known values and a mask (1 = known) in .pt / .npy / .npz files, of shape (*D) or (n, *D)."""

    known: str | None = None
    mask: str | None = None
    resample: int = 0  # RePaint's extra jumps per step (solvers.impute)


@dataclass
class CondSettings:
    """Restoration of degraded images (score_sde.restoration): from a file, or a split of the
    run's data degraded by its degradation (or by `degradation=` for cond.method=dps|pigdm)."""

    image: str | None = None  # degraded image(s): .png, or .npy / .pt of shape (*Y) or (n, *Y)
    split: str | None = None  # "test" or "train": restore degraded images of the run's data
    n: int = 0  # images of the split (0: all)
    samples: int = 4  # samples per input: their mean is the restoration, their std the uncertainty
    method: str = "model"  # the run's image-conditional net, or training-free: "dps", "pigdm"
    data_std: float = 0.5  # dps / pigdm: the prior's std per pixel
    # dps / pigdm: d x0_hat / d x_t from an N(m, data_std^2 I) prior ("gaussian": no backward pass,
    # stable) or by a backward pass through the network ("network", as published; it diverges near
    # T on the trained digits models)
    jacobian: str = "gaussian"


@dataclass
class TuneSettings:
    """A grid tuned to the model on `pilot` prior draws before sampling (score_sde.tuned)."""

    pilot: int = 0  # prior draws in the pilot; 0: the solver's own grid
    search_evals: int = 0  # Powell's search budget in solver runs on the pilot (0: none)
    shift: bool = False  # search the model's evaluation times too (dpm_solver_multistep)
    rtol: float = 1e-5  # dopri5 tolerance (rtol = atol) of the pilot's reference solution
    load: str | None = None  # a grid file saved by an earlier tune.pilot: sample on it


SAMPLE_FORMATS = ("pt", "npz", "png")


@dataclass
class SampleOutput:
    """Where `score-sde sample` writes (`out=<folder>` is short for `out.dir=<folder>`)."""

    dir: str | None = None  # None: <run>/samples, or ./samples for a pretrained model
    # pt: the (n, *D) float tensor; npz: uint8 images (n, H, W, C) under arr_0, what FID code
    # takes; png: a folder of uint8 PNGs. The .json of how they were made lies beside each.
    format: str = "pt"


@dataclass
class SampleConfig:
    run: str | None = None  # a run folder of `score-sde train` (or pretrained=)
    pretrained: str | None = None  # a diffusers Hub id or folder (or run=)
    n: int | None = None  # None: 2000 for points (a scatter that shows the density), 64 for images
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: the run's training setting
    ema: bool = True
    checkpoint: str | None = None  # a checkpoint file; None: the run's latest
    batch_size: int = 1000  # samples per solve; each batch has its own seed (see distributed.py)
    out: SampleOutput = field(default_factory=SampleOutput)
    progress: bool = True
    label: int | None = None  # a class of a conditional run; None: unconditional samples
    guidance: GuidanceSettings = field(default_factory=GuidanceSettings)
    inpaint: InpaintSettings = field(default_factory=InpaintSettings)
    tune: TuneSettings = field(default_factory=TuneSettings)
    cond: CondSettings = field(default_factory=CondSettings)
    degradation: Any = None  # for cond.method=dps|pigdm on a run trained without one
    solver: Any = MISSING


LIKELIHOOD_DATA_KEYS = ("split", "n")  # data.* keys of `likelihood` beside a data group's own


@dataclass
class LikelihoodConfig(NLLSettings):
    run: str | None = None  # a run folder of `score-sde train` (or pretrained= with data=)
    pretrained: str | None = None  # a diffusers Hub id or folder; data=<group> gives the images
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: the run's training setting
    ema: bool = True
    checkpoint: str | None = None
    # split and n (how many points of the split, 0: all); with data=<group> (cifar10, digits,
    # image_folder, ...) also that data set, else the run's own
    data: Any = field(default_factory=lambda: {"split": "test", "n": 2000})
    out: str | None = None  # the folder of the metrics.jsonl record; None: the run folder
    progress: bool = True


FID_FEATURES = ("inception", "judge")


@dataclass
class FIDConfig:
    """`score-sde fid`: the Frechet distance and KID between two sets of images."""

    samples: str = MISSING  # an .npz (arr_0 uint8), a folder of images or a .pt of score-sde sample
    reference: str = MISSING  # the same kinds, or <data>-<split>: cifar10-train, digits-test, ...
    features: str = "inception"  # "inception" (pip install 'score-sde[fid]') or "judge"
    inception_weights: str | None = None  # a local Inception weights file (offline)
    judge_data: str = "digits"  # features=judge: the labelled data set the judge is fitted on
    kid: bool = True
    kid_subset_size: int = 1000  # images per KID subset (at most the smaller set's size)
    kid_subsets: int = 100
    n: int = 0  # at most n images of each set (0: all)
    batch_size: int = 200  # images per feature pass
    seed: int = 0  # KID's subsets
    device: str = "auto"
    threads: int | None = None


SCHEMAS: dict[str, type] = {"train": TrainConfig, "sample": SampleConfig,
                            "likelihood": LikelihoodConfig, "fid": FIDConfig}
START_TIME_ENV = "SCORESDE_START_TIME"
CONFIG_FILE = "config.yaml"  # the resolved config `score-sde train` saves in the run folder
CHECKPOINT_DIR = "checkpoints"  # the run folder's checkpoints (`score_sde.checkpoint`)


def register_configs() -> None:
    """Put the schemas in hydra's ConfigStore (idempotent); the primary YAMLs list them first."""
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)


def start_time(pattern: str) -> str:
    """The time the command started, formatted; under torchrun rank 0's time (the CLI puts it
    in $SCORESDE_START_TIME), so that all ranks name the same run folder."""
    stamp = os.environ.get(START_TIME_ENV)
    moment = datetime.fromtimestamp(float(stamp)) if stamp else datetime.now()
    return moment.strftime(pattern)


def compose(config_name: str = "train", overrides: list[str] | tuple[str, ...] = ()
            ) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with overrides, as the CLI does, without running it.

    A train config whose `run=` names an existing run folder is that run's saved config with the
    other overrides applied (`score_sde.resume.resume_config`). For tests and notebooks:
    `train(compose("train", ["data=checkerboard"]), run_dir)`.

    Raises:
        hydra's ConfigCompositionException (or an omegaconf error) for an unknown group option,
            key or type; ValueError for a resume that would change the run's model.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from score_sde.resume import resume_config

    register_configs()
    overrides = out_shorthand(config_name, overrides)
    with initialize_config_module(config_module="score_sde.conf", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides))
        if config_name == "train":
            cfg = resume_config(cfg, list(overrides), lambda over: hydra_compose("train", over))
    return cfg


def out_shorthand(command: str, overrides: list[str] | tuple[str, ...]) -> list[str]:
    """`sample`'s `out=<folder>` as `out.dir=<folder>` (its `out` also holds `format`)."""
    if command != "sample":
        return list(overrides)
    return [f"out.dir={o.split('=', 1)[1]}" if o.startswith("out=") else o for o in overrides]


def _unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys of `node` that its dataclass `schema` does not have (added with `+key=`); the `Any`
    entries (built from `_target_`) are checked by their constructors instead."""
    hints = typing.get_type_hints(schema)
    found = []
    for key in node:
        if key not in hints:
            found.append(f"{prefix}{key}")
        elif dataclasses.is_dataclass(hints[key]) and OmegaConf.is_dict(node[key]):
            found += _unknown_keys(node[key], hints[key], f"{prefix}{key}.")
    return found


def check_complete(cfg: DictConfig) -> None:
    """Every required value is given and every key is a setting of the command.

    Raises:
        ValueError: naming the first missing value (`run`, `data.path`, ...) or the first key
            that nothing reads.
    """
    schema = OmegaConf.get_type(cfg)
    command = next((k for k, v in SCHEMAS.items() if v is schema), "")
    for key in sorted(OmegaConf.missing_keys(cfg)):
        where = key.split(".")[0]
        target = OmegaConf.select(cfg, f"{where}._target_", default=None)
        needs = f" by {where} {target}" if target else ""
        value = "<run folder of score-sde train>" if key == "run" else "<value>"
        raise ValueError(f"{key} is required{needs}: add {key}={value}")
    unknown = _unknown_keys(cfg, schema) if command else []
    if unknown:
        raise ValueError(f"{unknown[0]} is not a setting of score-sde {command}, so nothing would "
                         f"read it; drop it (`score-sde {command} --help` lists the settings)")


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def _check_device(device: str) -> None:
    _check(device in DEVICES, "device", device, f"one of {DEVICES}")


def _check_nll(s: Any, prefix: str) -> None:
    """The NLLSettings of `s`, their keys written with `prefix` ("eval." or "")."""
    from score_sde.solvers.likelihood import DIVERGENCES, GRID_METHODS, STATE_DTYPES
    from score_sde.solvers.likelihood_flow import ERROR_CONTROLS
    from score_sde.solvers.likelihood_grid import GRID_ORDERS
    from score_sde.solvers.ode import ADAPTIVE_METHODS, FIXED_METHODS

    choices = ("auto", *DIVERGENCES)
    _check(s.divergence in choices, f"{prefix}divergence", s.divergence, f"one of {choices}")
    _check(s.probes >= 1, f"{prefix}probes", s.probes, "an int >= 1")
    _check(s.probes == 1 or s.divergence in ("hutchinson", "auto"), f"{prefix}probes", s.probes,
           f"1 unless {prefix}divergence=hutchinson")
    _check(s.noise in ("rademacher", "gaussian"), f"{prefix}noise", s.noise,
           "'rademacher' or 'gaussian'")
    _check(s.method in ADAPTIVE_METHODS + FIXED_METHODS + GRID_METHODS, f"{prefix}method",
           s.method, f"an adaptive method {ADAPTIVE_METHODS}, a fixed-step one {FIXED_METHODS} "
           f"or a log-SNR grid {GRID_METHODS}")
    if s.method in GRID_METHODS:
        _check(s.steps >= 1, f"{prefix}steps", s.steps, "an int >= 1 (the grid's steps)")
        _check(s.order in GRID_ORDERS, f"{prefix}order", s.order, f"one of {GRID_ORDERS}")
        _check(s.step_size is None, f"{prefix}step_size", s.step_size,
               f"null for method={s.method} (its grid has {prefix}steps steps)")
    elif s.method in FIXED_METHODS:
        _check(s.step_size is not None and s.step_size > 0, f"{prefix}step_size", s.step_size,
               f"> 0 for the fixed-step method {s.method} (e.g. {prefix}step_size=0.01)")
    else:
        _check(s.step_size is None, f"{prefix}step_size", s.step_size,
               f"null for the adaptive method {s.method} (it steps by {prefix}rtol and "
               f"{prefix}atol; step_size is for fixed-step methods such as rk4)")
    for key in ("rtol", "atol"):
        _check(s[key] > 0, f"{prefix}{key}", s[key], "> 0")
    _check(0 < s.t_eps < 1, f"{prefix}t_eps", s.t_eps, "in (0, 1)")
    _check(s.max_steps >= 1, f"{prefix}max_steps", s.max_steps, "an int >= 1")
    _check(s.chunk_size is None or s.chunk_size >= 1, f"{prefix}chunk_size", s.chunk_size,
           "null (automatic) or an int >= 1")
    _check(s.error_control in ERROR_CONTROLS, f"{prefix}error_control", s.error_control,
           f"one of {ERROR_CONTROLS}")
    _check(s.state_dtype is None or s.state_dtype in STATE_DTYPES, f"{prefix}state_dtype",
           s.state_dtype, f"null (the data's dtype) or one of {tuple(STATE_DTYPES)}")
    _check(s.dequant_draws >= 1, f"{prefix}dequant_draws", s.dequant_draws, "an int >= 1")
    _check(s.batch_size >= 1, f"{prefix}batch_size", s.batch_size, "an int >= 1")


def validate_train(cfg: DictConfig) -> None:
    """Check a composed train config: complete (`check_complete`), and values that make sense
    (types were checked by the schema).

    Raises:
        ValueError: naming the first bad setting, its value and what is expected.
    """
    from score_sde.models.parameterization import PREDICTIONS  # torch: not on the --help path
    from score_sde.sde_lib.loss import WEIGHTINGS
    from score_sde.targets import check_config

    check_complete(cfg)
    check_config(cfg)
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
    _check(0 <= t.cond_dropout < 1, "train.cond_dropout", t.cond_dropout,
           "in [0, 1) (e.g. 0.1: one condition in ten becomes the null condition)")
    _check(t.log_every >= 1, "train.log_every", t.log_every, "an int >= 1")
    _check(t.workers >= 0, "train.workers", t.workers, "an int >= 0 (0: no worker processes)")
    _check(e.every >= 0, "eval.every", e.every, ">= 0 (0: only at the end)")
    _check(e.n_samples >= 1, "eval.n_samples", e.n_samples, "an int >= 1")
    _check(e.nll_points >= 0, "eval.nll_points", e.nll_points, ">= 0 (0 skips the NLL)")
    _check_nll(e, "eval.")
    _check(len(e.guidance_scales) > 0 and all(w >= 0 for w in e.guidance_scales),
           "eval.guidance_scales", list(e.guidance_scales), "a non-empty list of numbers >= 0")
    _check(e.per_class >= 1, "eval.per_class", e.per_class, "an int >= 1")
    _check(e.restore_n >= 0, "eval.restore_n", e.restore_n, "an int >= 0 (0: no restorations)")
    _check(e.restore_samples >= 1, "eval.restore_samples", e.restore_samples, "an int >= 1")
    _check(e.fid is None or e.fid in FID_FEATURES, "eval.fid", e.fid,
           f"null (off) or one of {FID_FEATURES}")
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


COND_METHODS = ("model", "dps", "pigdm")


def _check_cond(c: Any) -> bool:
    """Check the `cond` settings of `sample`; whether they ask for restorations."""
    _check(c.image is None or c.split is None, "cond.image", c.image,
           "null with cond.split (restore a file or a split, not both)")
    _check(c.split in (None, "train", "test"), "cond.split", c.split, "null, 'train' or 'test'")
    _check(c.n >= 0, "cond.n", c.n, ">= 0 (0: the whole split)")
    _check(c.samples >= 1, "cond.samples", c.samples, "an int >= 1")
    _check(c.method in COND_METHODS, "cond.method", c.method, f"one of {COND_METHODS}")
    _check(c.data_std >= 0, "cond.data_std", c.data_std, ">= 0")
    _check(c.jacobian in ("network", "gaussian"), "cond.jacobian", c.jacobian,
           "'network' or 'gaussian'")
    _check(c.jacobian == "network" or c.data_std > 0, "cond.data_std", c.data_std,
           "> 0 with cond.jacobian=gaussian")
    return c.image is not None or c.split is not None


def _check_model_source(cfg: DictConfig, command: str) -> None:
    """Exactly one of run= and pretrained= (and data= with pretrained= for likelihood)."""
    if cfg.run is None and cfg.pretrained is None:
        raise ValueError(f"score-sde {command} needs a model: add run=<run folder of score-sde "
                         "train> or pretrained=<diffusers Hub id or folder>")
    _check(cfg.run is None or cfg.pretrained is None, "pretrained", cfg.pretrained,
           "null with run= (give one model: a run folder or a pretrained model)")


def validate_fid(cfg: DictConfig) -> None:
    """Check a composed fid config: complete, and values that make sense."""
    check_complete(cfg)
    _check_device(cfg.device)
    _check(cfg.features in FID_FEATURES, "features", cfg.features, f"one of {FID_FEATURES}")
    for key in ("kid_subset_size", "kid_subsets", "batch_size"):
        _check(cfg[key] >= 1, key, cfg[key], "an int >= 1")
    _check(cfg.n >= 0, "n", cfg.n, ">= 0 (0: all images)")
    _check(cfg.threads is None or cfg.threads >= 0, "threads", cfg.threads, "null or >= 0")


def validate_eval(cfg: DictConfig) -> None:
    """Check a composed sample, likelihood or fid config: complete (`check_complete`), and
    values that make sense."""
    from score_sde.targets import check_config

    if OmegaConf.get_type(cfg) is FIDConfig:
        validate_fid(cfg)
        return
    check_complete(cfg)
    if "data" in cfg and "_target_" not in cfg.data:  # likelihood without data=<name>: the
        # data node holds data.split and data.n (checked below) and builds nothing
        check_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "data"]))
    else:
        check_config(cfg)
    _check_device(cfg.device)
    _check(cfg.threads is None or cfg.threads >= 0, "threads", cfg.threads,
           "null (the run's setting) or >= 0")
    _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "an int >= 1")
    _check_model_source(cfg, "sample" if "guidance" in cfg else "likelihood")
    if "guidance" in cfg:  # sample
        _check(cfg.n is None or cfg.n >= 1, "n", cfg.n,
               "an int >= 1 (or null: 2000 points, 64 images)")
        _check(cfg.label is None or cfg.label >= 0, "label", cfg.label,
               "null (unconditional) or a class >= 0")
        _check(cfg.guidance.scale >= 0, "guidance.scale", cfg.guidance.scale, ">= 0")
        restoring = _check_cond(cfg.cond)
        _check(cfg.label is not None or restoring or cfg.guidance.scale == 1, "guidance.scale",
               cfg.guidance.scale, "left at 1 without a label (add label=<class>) or a condition "
               "(cond.image=<file> or cond.split=test)")
        _check(cfg.guidance.null_label is None or cfg.pretrained is not None,
               "guidance.null_label", cfg.guidance.null_label,
               "null for a run of score-sde train (its null label is its class count K)")
        _check(cfg.out.format in SAMPLE_FORMATS, "out.format", cfg.out.format,
               f"one of {SAMPLE_FORMATS}")
        paths = cfg.inpaint.known, cfg.inpaint.mask
        _check((paths[0] is None) == (paths[1] is None), "inpaint.known and inpaint.mask",
               list(paths), "given together (two files) or not at all")
        _check(cfg.inpaint.resample >= 0, "inpaint.resample", cfg.inpaint.resample, "an int >= 0")
        _check(cfg.tune.pilot >= 0, "tune.pilot", cfg.tune.pilot, "an int >= 0 (0: no tuning)")
        _check(cfg.tune.search_evals >= 0, "tune.search_evals", cfg.tune.search_evals,
               "an int >= 0")
        _check(cfg.tune.rtol > 0, "tune.rtol", cfg.tune.rtol, "> 0")
        _check(not ((cfg.tune.pilot or cfg.tune.load) and cfg.inpaint.known), "tune.pilot",
               cfg.tune.pilot, "0 when inpainting (the grid is tuned for unconstrained sampling)")
        _check(not cfg.tune.shift or cfg.tune.search_evals > 0, "tune.shift", cfg.tune.shift,
               "false unless tune.search_evals > 0 (the shifts are searched)")
        _check(not (cfg.tune.pilot and cfg.tune.load), "tune.load", cfg.tune.load,
               "null with tune.pilot > 0 (tune a new grid or load one, not both)")
    else:  # likelihood
        extra = [k for k in cfg.data if k not in LIKELIHOOD_DATA_KEYS]
        if extra and "_target_" not in cfg.data:
            raise ValueError(f"data.{extra[0]} is not a setting of score-sde likelihood without "
                             "data=<name> (it takes data.split and data.n)")
        _check(cfg.pretrained is None or "_target_" in cfg.data, "data", None,
               "a data set for a pretrained model: add data=<name> (cifar10, image_folder "
               "data.path=..., npz data.path=..., digits, ...)")
        _check(cfg.data.split in ("train", "test"), "data.split", cfg.data.split,
               "'train' or 'test'")
        _check(cfg.data.n >= 0, "data.n", cfg.data.n, ">= 0 (0: the whole split)")
        _check_nll(cfg, "")
