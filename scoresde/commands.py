"""`score-sde sample` and `score-sde likelihood`: rebuild a trained run from its folder and use it.

Both read `<run>/config.yaml` (written by `score-sde train`) to rebuild the SDE, the network and
the data, then load the run's latest checkpoint (or `checkpoint=<file>`), the EMA weights unless
`ema=false`. `sample` takes `label=<class> guidance.scale=<w>` for a class-conditional run
(classifier-free guidance; `score_sde.conditional`) and `inpaint.known=<file> inpaint.mask=<file>`
to sample the unknown part given the known one (`score_sde.inpaint`); both go together.
`cond.image=<file>` or `cond.split=test` restores degraded images (`score_sde.restoration`).
`tune.pilot=<n>` tunes the solver's grid to the model first and `tune.load=<file>` reuses a tuned
grid (`score_sde.tuned`).

Outputs go to `out=<folder>`, by default the run folder (`<run>/samples` for samples): a read-only
run folder is only read. Nothing is written before the work is done, and nothing at all when a
setting is bad.

Under torchrun both commands share the work among the ranks (`score_sde.distributed`): each rank
solves its blocks of samples or batches of points with the bare model, rank 0 gathers the results
in order, prints and writes them. The results do not depend on the number of ranks.
"""

from __future__ import annotations

import glob
import os
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from score_sde import __version__, distributed
from score_sde import evaluate as ev
from score_sde.build import build_run_data, build_solver, load_run, resolve_device
from score_sde.conditional import guided_score
from score_sde.config import nll_kwargs, validate_eval
from score_sde.console import bars_shown, log
from score_sde.faults import batch_fits, solver_keys
from score_sde.inpaint import inpainting_solver, load_inpainting
from score_sde.metrics import MetricsLogger
from score_sde.restoration import sample_restorations
from score_sde.samples import save_samples
from score_sde.tuned import load_grid, on_grid, save_grid, tune


def _set_threads(cfg: DictConfig, run_cfg: DictConfig) -> None:
    threads = cfg.threads if cfg.threads is not None else run_cfg.get("threads", 0)
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


def sample(cfg: DictConfig) -> Path | None:
    """Draw cfg.n samples with cfg.solver; write `<out>/<name>_<time>.{pt,json,png}` (and
    `.grid.json` for a tuned grid), the name made of the solver, `label<k>_w<scale>` for a label,
    `tuned` for a tuned grid and `inpaint` when inpainting; `score_sde.samples` reads them back.

    Returns:
        The .pt file holding the (n, *D) samples (None on ranks other than 0).

    Raises:
        ValueError: a bad setting: a label of an unconditional run or out of range, inpainting
            files that are unreadable or of the wrong shape, a solver without a grid for them,
            a grid file that does not fit, an output folder that cannot be written.
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    run = load_run(cfg.run, checkpoint=cfg.checkpoint, ema=cfg.ema, device=device)
    out = output_folder(cfg.out, Path(cfg.run) / "samples", cfg.run)
    _set_threads(cfg, run.cfg)
    solver = build_solver(cfg)
    data = build_run_data(run)
    if cfg.cond.image is not None or cfg.cond.split is not None:
        return sample_restorations(cfg, run, solver, data, out, base=partial(_new_base, out),
                                   device=device, ctx=ctx,
                                   progress=bars_shown(cfg.progress) and ctx.is_main)
    n = cfg.n or (64 if data.is_image else 2000)
    score_fn = guided_score(run.model, run.num_classes, cfg.label, cfg.guidance.scale,
                            run=f"run {cfg.run}")
    show = bars_shown(cfg.progress) and ctx.is_main
    name = cfg.solver._target_.rsplit(".", 1)[-1]
    if cfg.label is not None:
        name += f"_label{cfg.label}_w{cfg.guidance.scale:g}"
    grid = None
    if cfg.tune.pilot:
        start = time.perf_counter()
        grid = tune(cfg, run.sde, score_fn, solver, data.shape, device, progress=show)
        grid.update(sde=OmegaConf.to_container(run.cfg.sde, resolve=True), run=str(cfg.run),
                    checkpoint=str(run.checkpoint), step=run.step)
        if ctx.is_main:
            log.info(f"grid tuned on {cfg.tune.pilot} prior draws in "
                     f"{time.perf_counter() - start:.1f} s: "
                     f"t = {', '.join(f'{t:.4g}' for t in grid['ts'])}")
            log.info(f"pilot error (RMS distance to the PF-ODE's solution on the pilot draws): "
                     f"{grid['pilot_error']:.4g} on the tuned grid, {grid['own_grid_error']:.4g} "
                     f"on the solver's own grid ({grid['gain']:.3g}x smaller)")
    elif cfg.tune.load:
        grid = load_grid(cfg.tune.load, cfg, run.cfg.sde)
    if grid is not None:
        solver = on_grid(solver, grid)
        name += "_tuned"
    inpainting = load_inpainting(cfg.inpaint, data.shape, n)
    block_solver = None
    if inpainting is not None:
        block_solver = inpainting_solver(solver, inpainting)
        name += "_inpaint"
    start = time.perf_counter()
    with batch_fits("batch_size", cfg.batch_size, " (or n)"), solver_keys("solver.", cfg.solver):
        samples = ev.sharded_samples(run.sde, score_fn, solver, n, data.shape, seed=cfg.seed,
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
    meta = {"n": n, "shape": list(data.shape), "seed": cfg.seed, "batch_size": cfg.batch_size,
            "solver": cfg.solver._target_, "solver_settings": settings,
            "nfe_per_sample": samples.nfe_per_sample, "nfe_per_block": samples.nfe_per_block,
            "run": str(cfg.run), "checkpoint": str(run.checkpoint), "step": run.step,
            "ema": cfg.ema, "label": cfg.label,
            "guidance_scale": cfg.guidance.scale if cfg.label is not None else None,
            "inpaint": inpaint, "grid": grid_file, "seconds": seconds,
            "world_size": ctx.world_size, "score_sde": __version__}
    path = save_samples(samples.x, meta, out / f"{base}.pt")
    pic = ev.sample_picture(samples.x, data, out / f"{base}.png",
                            title=f"{name}, {samples.nfe_per_sample:g} NFE per sample, "
                                  f"step {run.step}")
    ranks = f" on {ctx.world_size} ranks" if ctx.distributed else ""
    log.info(f"{n} samples from {run.checkpoint.name} (step {run.step}) with {name}: "
             f"{samples.nfe_per_sample:g} NFE per sample, {seconds:.1f} s{ranks}")
    if inpainting is not None and cfg.solver.get("denoise"):
        log.info("inpainting: solver.denoise is not applied (the known part is restored exactly)")
    shown = (f" (the first {ev.GRID_MAX} of {n} samples)" if data.is_image and n > ev.GRID_MAX
             else "")
    log.info(f"samples: {path} (metadata: {path.with_suffix('.json').name})")
    if cfg.tune.pilot:
        log.info(f"grid: {grid_file} (reuse it with tune.load={grid_file})")
    log.info(f"picture: {pic}{shown}")
    return path


def likelihood(cfg: DictConfig) -> ev.NLLReport | None:
    """Exact NLL (and bits/dim for images) of cfg.data.n points of cfg.data.split under the run.

    Prints the result next to the true entropy when the data density is known, and appends it
    to `<out>/metrics.jsonl` (default: the run's) as a record of kind "likelihood".

    Returns:
        The report, whose `per_point` holds each point's NLL in order (None on ranks other
        than 0).
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    run = load_run(cfg.run, checkpoint=cfg.checkpoint, ema=cfg.ema, device=device)
    out = output_folder(cfg.out, Path(cfg.run), cfg.run)
    _set_threads(cfg, run.cfg)
    data = build_run_data(run)
    x = data.test if cfg.data.split == "test" else data.train
    if cfg.data.n:
        x = x[:cfg.data.n]
    start = time.perf_counter()
    with batch_fits("batch_size", cfg.batch_size, " (or chunk_size, dequant_draws)"), \
            solver_keys("", cfg):
        rep = ev.sharded_nll(run.sde, run.model, x.to(device), quantized=data.quantized,
                             seed=cfg.seed, batch_size=cfg.batch_size,
                             dequant_draws=cfg.dequant_draws, true_log_prob=data.log_prob,
                             ctx=ctx, progress=bars_shown(cfg.progress) and ctx.is_main,
                             **nll_kwargs(cfg))
    seconds = time.perf_counter() - start
    if rep is None:
        return None
    log.info(f"{data.name} {cfg.data.split} ({rep.n} points), {run.checkpoint.name} (step "
             f"{run.step}), {cfg.divergence} divergence, {cfg.method} rtol={cfg.rtol}: "
             f"{seconds:.1f} s")
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
    logger.log("likelihood", run.step, split=cfg.data.split, checkpoint=str(run.checkpoint),
               **nll_kwargs(cfg), **values)
    logger.close()
    log.info(f"recorded in {out / 'metrics.jsonl'}")
    return rep
