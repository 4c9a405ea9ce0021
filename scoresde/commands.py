"""`score-sde sample` and `score-sde likelihood`: rebuild a trained run from its folder and use it.

Both read `<run>/config.yaml` (written by `score-sde train`) to rebuild the SDE, the network and
the data, then load the run's latest checkpoint (or `checkpoint=<file>`), the EMA weights unless
`ema=false`. `sample` takes `label=<class> guidance.scale=<w>` for a class-conditional run
(classifier-free guidance; `score_sde.conditional`) and `inpaint.known=<file> inpaint.mask=<file>`
to sample the unknown part given the known one (`score_sde.inpaint`); both go together.
`tune.pilot=<n>` tunes the solver's grid to the model first (`score_sde.tuned`).

Under torchrun both commands share the work among the ranks (`score_sde.distributed`): each rank
solves its blocks of samples or batches of points with the bare model, rank 0 gathers the results
in order, prints and writes them. The results do not depend on the number of ranks.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from score_sde import distributed
from score_sde import evaluate as ev
from score_sde.build import build_data, build_solver, load_run, resolve_device
from score_sde.conditional import guided_score
from score_sde.config import validate_eval
from score_sde.inpaint import inpainting_solver, load_inpainting
from score_sde.metrics import MetricsLogger
from score_sde.tuned import tuned_solver


def _set_threads(cfg: DictConfig, run_cfg: DictConfig) -> None:
    threads = cfg.threads if cfg.threads is not None else run_cfg.get("threads", 0)
    if threads and threads > 0:
        torch.set_num_threads(threads)


def sample(cfg: DictConfig) -> Path | None:
    """Draw cfg.n samples with cfg.solver; write `<run>/samples/<name>_<time>.{pt,png}`, the name
    made of the solver, `label<k>_w<scale>` for a label and `inpaint` when inpainting.

    Returns:
        The .pt file holding the (n, *D) samples (None on ranks other than 0).

    Raises:
        ValueError: a bad setting: a label of an unconditional run or out of range, inpainting
            files that are unreadable or of the wrong shape, a solver without a grid for them.
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    run = load_run(cfg.run, checkpoint=cfg.checkpoint, ema=cfg.ema, device=device)
    _set_threads(cfg, run.cfg)
    solver = build_solver(cfg)
    data = build_data(run.cfg)
    score_fn = guided_score(run.model, run.num_classes, cfg.label, cfg.guidance.scale,
                            run=f"run {cfg.run}")
    name = cfg.solver._target_.rsplit(".", 1)[-1]
    if cfg.label is not None:
        name += f"_label{cfg.label}_w{cfg.guidance.scale:g}"
    if cfg.tune.pilot:
        start = time.perf_counter()
        solver, ts = tuned_solver(cfg, run.sde, score_fn, solver, data.shape, device)
        name += "_tuned"
        print(f"grid tuned on {cfg.tune.pilot} prior draws in {time.perf_counter() - start:.1f} s: "
              f"t = {', '.join(f'{t:.4g}' for t in ts.tolist())}")
    inpainting = load_inpainting(cfg.inpaint, data.shape, cfg.n)
    block_solver = None
    if inpainting is not None:
        block_solver = inpainting_solver(solver, inpainting)
        name += "_inpaint"
    start = time.perf_counter()
    x, nfe = ev.sharded_samples(run.sde, score_fn, solver, cfg.n, data.shape, seed=cfg.seed,
                                batch_size=cfg.batch_size, device=device, ctx=ctx,
                                block_solver=block_solver)
    seconds = time.perf_counter() - start
    if x is None:
        return None
    out = Path(cfg.run) / "samples" / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(x.cpu(), out.with_suffix(".pt"))
    pic = ev.sample_picture(x.cpu(), data, out.with_suffix(".png"),
                            title=f"{name}, {nfe} NFE, step {run.step}")
    ranks = f" on {ctx.world_size} ranks" if ctx.distributed else ""
    print(f"{cfg.n} samples from {run.checkpoint.name} with {name}: {nfe} NFE, "
          f"{seconds:.1f} s{ranks}")
    if inpainting is not None and cfg.solver.get("denoise"):
        print("inpainting: solver.denoise is not applied (the known part is restored exactly)")
    print(f"samples: {out.with_suffix('.pt')}\npicture: {pic}")
    return out.with_suffix(".pt")


def likelihood(cfg: DictConfig) -> ev.NLLReport | None:
    """Exact NLL (and bits/dim for images) of cfg.data.n points of cfg.data.split under the run.

    Prints the result next to the true entropy when the data density is known, and appends it
    to `<run>/metrics.jsonl` as a record of kind "likelihood".

    Returns:
        The report, whose `per_point` holds each point's NLL in order (None on ranks other
        than 0).
    """
    validate_eval(cfg)
    ctx = distributed.context()
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    run = load_run(cfg.run, checkpoint=cfg.checkpoint, ema=cfg.ema, device=device)
    _set_threads(cfg, run.cfg)
    data = build_data(run.cfg)
    x = data.test if cfg.data.split == "test" else data.train
    if cfg.data.n:
        x = x[:cfg.data.n]
    start = time.perf_counter()
    rep = ev.sharded_nll(run.sde, run.model, x.to(device), quantized=data.quantized,
                         seed=cfg.seed, batch_size=cfg.batch_size,
                         dequant_draws=cfg.dequant_draws, true_log_prob=data.log_prob, ctx=ctx,
                         divergence=cfg.divergence, probes=cfg.probes, method=cfg.method,
                         rtol=cfg.rtol, atol=cfg.atol, t_eps=cfg.t_eps)
    seconds = time.perf_counter() - start
    if rep is None:
        return None
    print(f"{data.name} {cfg.data.split} ({rep.n} points), {run.checkpoint.name}, "
          f"{cfg.divergence} divergence, {cfg.method} rtol={cfg.rtol}: {seconds:.1f} s")
    print(f"NLL: {rep.nll:.4f} +- {rep.stderr:.4f} nats ({rep.nfe} NFE)")
    if rep.bpd is not None:
        print(f"bits/dim: {rep.bpd:.4f} +- {rep.bpd_stderr:.4f}")
    if data.entropy is not None:
        print(f"true entropy: {data.entropy:.4f} +- {data.entropy_stderr:.4f} nats "
              f"(NLL - entropy = {rep.nll - data.entropy:+.4f})")
    if rep.true_nll is not None:
        print(f"true NLL of the same points: {rep.true_nll:.4f} nats")
    logger = MetricsLogger(cfg.run)
    values = {k: v for k, v in vars(rep).items() if v is not None and k != "per_point"}
    logger.log("likelihood", run.step, split=cfg.data.split, divergence=cfg.divergence,
               **values)
    logger.close()
    return rep
