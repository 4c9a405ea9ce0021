"""`score-sde sample`, `score-sde likelihood` and `score-sde fid`: use a trained run or a pretrained
model.

`run=<folder>`: both read `<run>/config.yaml` (written by `score-sde train`) to rebuild the SDE, the
network and the data, then load the run's latest checkpoint (or `checkpoint=<file>`), the EMA
weights unless `ema=false`. `pretrained=<Hub id or folder>`: a diffusers checkpoint through
`build.load_pretrained`, on data in [-1, 1] whatever its own range (`score_sde.pretrained`); it has
no data of its own, so `likelihood` takes `data=<name>`. `sample` takes `label=<class>
guidance.scale=<w>` for a class-conditional model (classifier-free guidance;
`score_sde.conditional`) and `inpaint.known=<file> inpaint.mask=<file>` to sample the unknown
part given the known one (`score_sde.inpaint`); both go together.
`cond.image=<file>` or `cond.split=test` restores degraded images with a run (`score_sde.restoration`).
`tune.pilot=<n>` tunes the solver's grid to the model first and `tune.load=<file>` reuses a tuned
grid (`score_sde.tuned`).

Outputs go to `out=<folder>`, by default the run folder (`<run>/samples` for samples), or
`outputs/pretrained/<name>` for a pretrained model: a read-only run folder is only read. Samples
are written as `out.format=pt|npz|png` (`score_sde.samples`). Nothing is written before the work
is done, and nothing at all when a setting is bad.

Under torchrun both commands share the work among the ranks (`score_sde.distributed`): each rank
solves its blocks of samples or batches of points with the bare model, rank 0 gathers the results
in order, prints and writes them. The results do not depend on the number of ranks.
"""

from __future__ import annotations

import glob
import os
import re
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from score_sde import __version__, distributed
from score_sde import evaluate as ev
from score_sde.build import (
    TrainedRun,
    build_data,
    build_run_data,
    build_solver,
    load_pretrained,
    load_run,
    resolve_device,
)
from score_sde.conditional import guided_score
from score_sde.config import LIKELIHOOD_DATA_KEYS, nll_kwargs, validate_eval
from score_sde.console import bars_shown, log
from score_sde.data import Dataset
from score_sde.faults import batch_fits, solver_keys
from score_sde.inpaint import inpainting_solver, load_inpainting
from score_sde.metrics import MetricsLogger
from score_sde.pretrained import UNIT
from score_sde.restoration import sample_restorations
from score_sde.samples import meta_path, save_samples
from score_sde.sde_lib import SDE
from score_sde.solvers.likelihood import GRID_METHODS
from score_sde.tuned import load_grid, on_grid, save_grid, tune


@dataclass
class _Model:
    """What `sample` and `likelihood` use of a trained run or a pretrained model.

    Attributes:
        sde: the SDE of data in [-1, 1] (images) or of the run's points.
        model: the score model, model(x, t) or model(x, t, y).
        shape: D of one sample.
        num_classes: the labels the model takes, or None.
        null_label: the label of its unconditional score (a run's K), or None.
        data: the run's data set (None for a pretrained model).
        threads: torch threads to use (0: torch's default).
        record: what identifies it in metadata: run, checkpoint, step, ema or the pretrained
            model, its SDEs and data range.
        sde_record: the SDE a tuned grid is checked against.
        home: the default output folder.
        name: "run <folder>" or "pretrained <id>", for messages.
        step: the checkpoint's training step (None for a pretrained model).
        run: the trained run (None for a pretrained model).
    """

    sde: SDE
    model: nn.Module
    shape: tuple[int, ...]
    num_classes: int | None
    null_label: int | None
    data: Dataset | None
    threads: int
    record: dict[str, Any]
    sde_record: DictConfig
    home: Path
    name: str
    step: int | None
    run: TrainedRun | None = None


def _load_model(cfg: DictConfig, device: torch.device) -> _Model:
    """The run of cfg.run or the pretrained model of cfg.pretrained."""
    if cfg.pretrained is not None:
        pre = load_pretrained(cfg.pretrained, device=device)
        null = cfg.guidance.null_label if "guidance" in cfg else None
        home = Path("outputs", "pretrained", re.sub(r"[^\w.-]+", "-", cfg.pretrained).strip("-"))
        return _Model(pre.sde, pre.model, pre.shape, pre.num_classes, null, None, 0, pre.record(),
                      OmegaConf.create(pre.record()), home, f"pretrained {cfg.pretrained}", None)
    run = load_run(cfg.run, checkpoint=cfg.checkpoint, ema=cfg.ema, device=device)
    data = build_run_data(run)
    record = {"run": str(cfg.run), "checkpoint": str(run.checkpoint), "step": run.step,
              "ema": cfg.ema, "data_range": list(UNIT) if data.is_image else None}
    return _Model(run.sde, run.model, data.shape, run.num_classes, run.num_classes, data,
                  run.cfg.get("threads", 0), record, run.cfg.sde, Path(cfg.run),
                  f"run {cfg.run}", run.step, run)


def _set_threads(cfg: DictConfig, default: int) -> None:
    threads = cfg.threads if cfg.threads is not None else default
    if threads and threads > 0:
        torch.set_num_threads(threads)


def _writable(folder: Path) -> bool:
    """Whether `folder` can be written, or created and written (its nearest existing parent)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def output_folder(out: str | None, default: Path, run: str) -> Path:
    """`out` if given, else `default` (inside the run folder), checked writable at start.

    Raises:
        ValueError: naming `out`, or the read-only run folder and how to write elsewhere.
    """
    folder = Path(out).expanduser() if out else default
    if not _writable(folder):
        if out:
            raise ValueError(f"out must be a folder this user can write, got {out!r}")
        raise ValueError(f"the run folder {run!r} is read-only ({folder} cannot be written); "
                         "give out=<a writable folder> for the outputs")
    return folder


def _new_base(out: Path, name: str) -> str:
    """<name>_<time>, with _2, _3, ... when out holds files of that name (two runs a second)."""
    base = f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    k = 1
    while any(out.glob(glob.escape(base if k == 1 else f"{base}_{k}") + ".*")):
        k += 1
    return base if k == 1 else f"{base}_{k}"


def _score(cfg: DictConfig, src: _Model) -> ev.ScoreFn:
    """The score to sample with: unconditional, conditional on cfg.label or guided."""
    if (cfg.pretrained is not None and cfg.label is not None and cfg.guidance.scale != 1
            and src.null_label is None):
        raise ValueError(f"guidance.scale={cfg.guidance.scale:g} mixes in the unconditional score, "
                         f"and {src.name} has no null label of its own: add "
                         "guidance.null_label=<the label it was trained to treat as "
                         "unconditional>, or leave guidance.scale at 1 (conditional sampling)")
    return guided_score(src.model, src.num_classes, cfg.label, cfg.guidance.scale, run=src.name,
                        null_label=src.null_label)


def sample(cfg: DictConfig) -> Path | None:
    """Draw cfg.n samples with cfg.solver; write `<out>/<name>_<time>.{pt,npz or folder,json,png}`
    (and `.grid.json` for a tuned grid), the name made of the solver, `label<k>_w<scale>` for a
    label, `tuned` for a tuned grid and `inpaint` when inpainting; `score_sde.samples` reads them
    back.

    Returns:
        The samples written (.pt, .npz or the PNG folder; None on ranks other than 0).

    Raises:
        ValueError: a bad setting: a label of an unconditional model or out of range, guidance
            without a null label, inpainting files that are unreadable or of the wrong shape, a
            solver without a grid for them, a grid file that does not fit, an output folder that
            cannot be written, npz / png for points.
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    src = _load_model(cfg, device)
    out = output_folder(cfg.out.dir, src.home / "samples", cfg.run or str(src.home))
    _set_threads(cfg, src.threads)
    solver = build_solver(cfg)
    if cfg.cond.image is not None or cfg.cond.split is not None:
        if src.run is None:
            raise ValueError(f"cond.image / cond.split restore images with a run of score-sde "
                             f"train on a degradation; {src.name} is not one: use run=<folder>")
        return sample_restorations(cfg, src.run, solver, src.data, out,
                                   base=partial(_new_base, out), device=device, ctx=ctx,
                                   progress=bars_shown(cfg.progress) and ctx.is_main)
    is_image = len(src.shape) == 3
    if cfg.out.format != "pt" and not is_image:
        raise ValueError(f"out.format={cfg.out.format} writes images, but {src.name} samples "
                         f"points of shape {src.shape}; use out.format=pt")
    n = cfg.n or (64 if is_image else 2000)
    score_fn = _score(cfg, src)
    show = bars_shown(cfg.progress) and ctx.is_main
    name = cfg.solver._target_.rsplit(".", 1)[-1]
    if cfg.label is not None:
        name += f"_label{cfg.label}_w{cfg.guidance.scale:g}"
    grid = None
    if cfg.tune.pilot:
        start = time.perf_counter()
        grid = tune(cfg, src.sde, score_fn, solver, src.shape, device, progress=show)
        grid.update({**src.record, "sde": OmegaConf.to_container(src.sde_record, resolve=True)})
        if ctx.is_main:
            log.info(f"grid tuned on {cfg.tune.pilot} prior draws in "
                     f"{time.perf_counter() - start:.1f} s: "
                     f"t = {', '.join(f'{t:.4g}' for t in grid['ts'])}")
            log.info(f"pilot error (RMS distance to the PF-ODE's solution on the pilot draws): "
                     f"{grid['pilot_error']:.4g} on the tuned grid, {grid['own_grid_error']:.4g} "
                     f"on the solver's own grid ({grid['gain']:.3g}x smaller)")
    elif cfg.tune.load:
        grid = load_grid(cfg.tune.load, cfg, src.sde_record)
    if grid is not None:
        solver = on_grid(solver, grid)
        name += "_tuned"
    inpainting = load_inpainting(cfg.inpaint, src.shape, n)
    block_solver = None
    if inpainting is not None:
        block_solver = inpainting_solver(solver, inpainting)
        name += "_inpaint"
    start = time.perf_counter()
    with batch_fits("batch_size", cfg.batch_size, " (or n)"), solver_keys("solver.", cfg.solver):
        samples = ev.sharded_samples(src.sde, score_fn, solver, n, src.shape, seed=cfg.seed,
                                     batch_size=cfg.batch_size, device=device, ctx=ctx,
                                     block_solver=block_solver, progress=show)
    seconds = time.perf_counter() - start
    if samples is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    base = _new_base(out, name)  # files by name: a guidance scale such as w1.5 is no suffix
    grid_file = cfg.tune.load
    if cfg.tune.pilot:
        grid_file = str(save_grid(grid, out / f"{base}.grid.json"))
    settings = {k: v for k, v in OmegaConf.to_container(cfg.solver, resolve=True).items()
                if not k.startswith("_")}
    inpaint = OmegaConf.to_container(cfg.inpaint) if inpainting is not None else None
    meta = {"n": n, "shape": list(src.shape), "seed": cfg.seed, "batch_size": cfg.batch_size,
            "solver": cfg.solver._target_, "solver_settings": settings,
            "nfe_per_sample": samples.nfe_per_sample, "nfe_per_block": samples.nfe_per_block,
            **src.record, "label": cfg.label,
            "guidance_scale": cfg.guidance.scale if cfg.label is not None else None,
            "inpaint": inpaint, "grid": grid_file, "seconds": seconds,
            "world_size": ctx.world_size, "score_sde": __version__}
    suffix = {"pt": ".pt", "npz": ".npz", "png": ""}[cfg.out.format]
    path = save_samples(samples.x, meta, out / f"{base}{suffix}", fmt=cfg.out.format)
    step = f", step {src.step}" if src.step is not None else ""
    pic = ev.sample_picture(samples.x, src.data, out / f"{base}.png",
                            title=f"{name}, {samples.nfe_per_sample:g} NFE per sample{step}")
    ranks = f" on {ctx.world_size} ranks" if ctx.distributed else ""
    what = (src.name if src.step is None
            else f"{Path(src.record['checkpoint']).name} (step {src.step})")
    log.info(f"{n} samples from {what} with {name}: {samples.nfe_per_sample:g} NFE per sample, "
             f"{seconds:.1f} s{ranks}")
    if inpainting is not None and cfg.solver.get("denoise"):
        log.info("inpainting: solver.denoise is not applied (the known part is restored exactly)")
    shown = f" (the first {ev.GRID_MAX} of {n} samples)" if is_image and n > ev.GRID_MAX else ""
    log.info(f"samples: {path} (metadata: {meta_path(path).name})")
    if cfg.tune.pilot:
        log.info(f"grid: {grid_file} (reuse it with tune.load={grid_file})")
    log.info(f"picture: {pic}{shown}")
    return path


def _likelihood_data(cfg: DictConfig, src: _Model) -> Dataset:
    """The data of `likelihood`: data=<name> if given (its shape checked), else the run's."""
    if "_target_" not in cfg.data:
        return src.data
    node = {k: v for k, v in cfg.data.items() if k not in LIKELIHOOD_DATA_KEYS}
    data = build_data(OmegaConf.create({"data": node}))
    if data.shape != tuple(src.shape):
        raise ValueError(f"data {cfg.data._target_} has images of shape {data.shape}, but "
                         f"{src.name} takes {tuple(src.shape)}; pick data of that shape "
                         f"(data.size=... for an image folder)")
    return data


def likelihood(cfg: DictConfig) -> ev.NLLReport | None:
    """Exact NLL (and bits/dim for images) of cfg.data.n points of cfg.data.split under the run
    or pretrained model.

    Prints the result next to the true entropy when the data density is known, and appends it
    to `<out>/metrics.jsonl` (default: the run's; `outputs/pretrained/<name>` for a pretrained
    model) as a record of kind "likelihood".

    Returns:
        The report, whose `per_point` holds each point's NLL in order (None on ranks other
        than 0).
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    src = _load_model(cfg, device)
    out = output_folder(cfg.out, src.home, cfg.run or str(src.home))
    _set_threads(cfg, src.threads)
    data = _likelihood_data(cfg, src)
    x = data.split(cfg.data.split, cfg.data.n)
    kw = ev.resolve_divergence(nll_kwargs(cfg), x.shape[1:])
    start = time.perf_counter()
    with batch_fits("batch_size", cfg.batch_size, " (or chunk_size, dequant_draws)"), \
            solver_keys("", cfg):
        rep = ev.sharded_nll(src.sde, src.model, x.to(device), quantized=data.quantized,
                             seed=cfg.seed, batch_size=cfg.batch_size,
                             dequant_draws=cfg.dequant_draws, true_log_prob=data.log_prob,
                             ctx=ctx, progress=bars_shown(cfg.progress) and ctx.is_main, **kw)
    seconds = time.perf_counter() - start
    if rep is None:
        return None
    what = src.name if src.step is None else (f"{Path(src.record['checkpoint']).name} "
                                              f"(step {src.step})")
    probes = f", {cfg.probes} probe{'s' * (cfg.probes > 1)} per point" \
        if kw["divergence"] == "hutchinson" else ""
    steps = (f"{cfg.steps} steps" if cfg.method in GRID_METHODS else
             f"step_size={cfg.step_size}" if cfg.step_size else f"rtol={cfg.rtol}")
    log.info(f"{data.name} {cfg.data.split} ({rep.n} points), {what}, {kw['divergence']} "
             f"divergence{probes}, {cfg.method} {steps}: {seconds:.1f} s")
    if src.record.get("data_range") not in (None, list(UNIT)):
        log.info(f"the model's data range {src.record['data_range']} is mapped to [-1, 1] "
                 f"(sde {src.sde!r}); bits/dim are of the 8-bit images either way")
    log.info(f"NLL: {rep.nll:.4f} +- {rep.stderr:.4f} nats ({rep.nfe:.0f} NFE per point)")
    if rep.bpd is not None:
        log.info(f"bits/dim: {rep.bpd:.4f} +- {rep.bpd_stderr:.4f}")
    if data.entropy is not None:
        log.info(f"true entropy: {data.entropy:.4f} +- {data.entropy_stderr:.4f} nats "
                 f"(NLL - entropy = {rep.nll - data.entropy:+.4f})")
    if rep.true_nll is not None:
        log.info(f"true NLL of the same points: {rep.true_nll:.4f} nats")
    logger = MetricsLogger(out)
    values = {k: v for k, v in vars(rep).items() if v is not None and k != "per_point"}
    ident = {k: v for k, v in src.record.items() if k != "step"}
    logger.log("likelihood", src.step or 0, split=cfg.data.split, data=data.name, seconds=seconds,
               **ident, **kw, **values)
    logger.close()
    log.info(f"recorded in {out / 'metrics.jsonl'}")
    return rep


def fid(cfg: DictConfig) -> Any:
    """`score-sde fid`: the Frechet distance and KID of cfg.samples to cfg.reference, printed.

    Returns:
        The `score_sde.fid.FIDReport`.
    """
    from score_sde.fid import fid_command

    validate_eval(cfg)
    _set_threads(cfg, 0)
    return fid_command(cfg, resolve_device(cfg.device))
