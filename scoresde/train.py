"""The training loop: AdamW with warmup (and cosine decay), gradient clipping, EMA, the DSM loss with
the configured weighting, periodic evaluation, checkpoints, resume, clean stop on SIGINT / SIGTERM.

Host syncs: a step keeps its loss (and gradient norm) on the device; they are read, checked for
NaN / inf and (under DDP) summed over ranks together with the stop flag only at the steps that log,
checkpoint or evaluate, so on a GPU the host never waits for a step in between. A NaN is reported
at the next such step, naming the range of steps it appeared in.

Messages (the start, progress every tenth of the steps, the evaluations, the final summary) go
through the `score_sde` logger to the console and to `<run>/train.log` (`score_sde.console`).

Reproducibility: all training randomness comes from two generators seeded from `cfg.seed` (one for
the batch indices, one for times and noise) plus torch's global RNG (dropout); their states are in
every checkpoint, and the learning rate is a pure function of the step. A run resumed from a
checkpoint therefore takes exactly the steps the uninterrupted run takes (bit for bit on CPU).
Evaluation uses its own generator, seeded from the step, so it never shifts the training stream.

Class-conditional runs (`conditional=true`) build the network with the data's K classes and feed
it each batch's labels, a fraction `train.label_dropout` of them replaced by the null label K (drawn
from the batch-index generator), so one network learns the conditional and the unconditional
score that classifier-free guidance mixes. Their evaluation adds per-class samples at each of
`eval.guidance_scales` and, with `eval.judge`, how often a classifier trained on the training split
recognises the asked-for class (`score_sde.conditional`, `score_sde.judge`).

Restoration runs (`degradation=sr2`, ...) train an image-conditional network on (clean, degraded)
pairs built from each batch: y = A x0 + n with fresh noise from the noise generator, brought back
to image size as the condition, a fraction `train.cond_dropout` of the conditions replaced by the
null one (`score_sde.degradation`); with `eval.restore_n` their evaluation restores test images
and compares them with the baselines (`score_sde.restoration`).

Under torchrun (several processes) the model is wrapped in DistributedDataParallel; every rank
draws the same global batch from the shared generators and trains on its slice of it, so N ranks
take the steps of one process (see `score_sde.distributed`). Torch's global RNG (dropout) is seeded
per rank from the run seed. Only rank 0 logs, evaluates, draws pictures and writes checkpoints,
which hold the unwrapped model: a checkpoint of N ranks resumes in any number of processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from score_sde import distributed, models, plots
from score_sde.baselines import gmm_bits_per_dim
from score_sde.build import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    build_data,
    build_degradation,
    build_model,
    build_sde,
    build_solver,
    conditional_classes,
    resolve_device,
)
from score_sde.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    remove_temporary_files,
    save_checkpoint,
)
from score_sde.conditional import drop_labels, evaluate_classes
from score_sde.config import validate_train
from score_sde.console import bar, bars_shown, log, log_file
from score_sde.data import Dataset
from score_sde.degradation import Degradation, training_condition
from score_sde.evaluate import evaluate
from score_sde.faults import batch_fits
from score_sde.judge import fit_judge
from score_sde.loader import TrainBatches
from score_sde.metrics import METRICS_FILE, MetricsLogger, read_metrics, truncate_metrics
from score_sde.report import summary_lines
from score_sde.restoration import evaluate_restorations
from score_sde.resume import check_resumable
from score_sde.run_folder import check_train_folder, run_lock
from score_sde.sde_lib import SDE, append_dims, dsm_loss, sample_time
from score_sde.solvers import dequantize
from score_sde.stopping import StopFlag, catch_signals

LOG_FILE = "train.log"


@dataclass
class TrainResult:
    """What a call to `train` did.

    Attributes:
        run_dir: the run folder.
        step: the last step taken.
        interrupted: stopped by SIGINT / SIGTERM before the last step (a checkpoint was saved).
        checkpoint: the last checkpoint written.
        metrics: the final evaluation's metrics (empty if interrupted).
        pictures: the pictures written at the end.
        model: the trained network (unwrapped from DDP; every rank holds the same weights).
    """

    run_dir: Path
    step: int
    interrupted: bool
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    pictures: list[Path] = field(default_factory=list)
    model: torch.nn.Module | None = field(default=None, repr=False)


def learning_rate(step: int, *, lr: float, warmup: int, steps: int, cosine: bool) -> float:
    """Linear warmup over `warmup` steps, then constant or cosine decay to 0 at `steps`."""
    scale = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if cosine:
        scale *= 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))
    return lr * scale


class _NoLogger:
    """The logger of the ranks other than 0."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _dry_run(solver: Callable[..., Any], sde: Any, shape: tuple[int, ...], target: str) -> None:
    """Call the solver once on 2 prior draws with the exact score of N(0, I) data,
    -x / (alpha^2 + sigma^2), so that settings it rejects fail at start rather than after training.
    (Not a zero score: Langevin correctors scale their step by 1 / |score|.)"""
    gen = torch.Generator().manual_seed(0)
    x_T = sde.prior_sample((2, *shape), generator=gen)

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -x / append_dims(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, x.ndim)

    try:
        solver(sde, score, x_T, generator=gen)
    except (ValueError, TypeError) as err:
        raise ValueError(f"solver {target} rejects its settings: {err}") from err


def _rng_states(gens: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), **{k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _set_rng_states(states: dict[str, torch.Tensor], gens: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(states["torch"])
    for k, g in gens.items():
        g.set_state(states[k])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def train(cfg: DictConfig, run_dir: str | Path, *,
          callback: Callable[[int, torch.Tensor], None] | None = None) -> TrainResult:
    """Train (or resume) the run of a composed train config in `run_dir`.

    Everything is built and checked (data, SDE, model, solver, the checkpoint to resume from)
    before anything but the run's lock file is written, so a bad setting leaves no trace on disk.
    The lock (`run_folder.run_lock`) is held until the end: one writer per run folder. On a
    resume the temporary files of a killed checkpoint write are removed, and metrics.jsonl loses
    the records after the checkpoint's step and any partial line.

    Args:
        cfg: a config composed from `conf/train.yaml` (`score_sde.config.compose`), validated here.
        run_dir: the run folder; if it holds checkpoints, training resumes from the latest.
        callback: called as callback(step, loss) after every step, the loss a tensor on the
            device (tests, notebooks; reading it costs a host sync).

    Returns:
        A TrainResult. A stop by SIGINT / SIGTERM saves a checkpoint and returns interrupted=True.

    Raises:
        ValueError: a bad setting; a run folder that is not a run, or that another process is
            training; a resume with a different config, or to fewer steps than its checkpoint's;
            a batch that does not fit in memory (`faults.batch_fits`).
        FloatingPointError: the loss became NaN or infinite.
        CheckpointError: the latest checkpoint cannot be read, or a new one cannot be written.
    """
    validate_train(cfg)
    ctx = distributed.context()
    mine = distributed.split_batch(cfg.train.batch_size, ctx)
    run_dir = Path(distributed.broadcast_from_main(str(run_dir), ctx))
    check_train_folder(run_dir)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    cfg_dict["run"] = str(run_dir)
    t, ev = cfg.train, cfg.eval
    device = distributed.device_for(resolve_device(cfg.device), ctx)

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg)
    num_classes = conditional_classes(cfg, data)
    cfg_dict["conditional"] = num_classes is not None  # null and false are the same run
    sde = build_sde(cfg)
    model = build_model(cfg, sde, data.shape, num_classes).to(device)
    degradation = build_degradation(cfg.degradation, data.shape) if cfg.get("degradation") \
        else None
    solver = build_solver(cfg)
    _dry_run(solver, sde, data.shape, cfg.solver._target_)
    # fused: the step counts stay on the device (the default reads them with .item() per step)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    ema = models.EMA(model, t.ema_decay, warmup=True)
    gens = {"data": torch.Generator().manual_seed(cfg.seed + 1),
            "noise": torch.Generator(device).manual_seed(cfg.seed + 2)}

    run_dir.mkdir(parents=True, exist_ok=True)  # nothing but the lock is written before the checks
    with ExitStack() as stack:
        if ctx.is_main:  # one writer per run folder: a second trainer stops here
            stack.enter_context(run_lock(run_dir))
        step, last = 0, latest_checkpoint(run_dir / CHECKPOINT_DIR)
        if last is not None:
            state = load_checkpoint(last, map_location=device)
            check_resumable(state["config"], cfg_dict, run_dir)
            step = int(state["step"])
            if step > t.steps:
                raise ValueError(f"train.steps must be at least the step of {last} to resume it, "
                                 f"got {t.steps} < {step}; give train.steps={step} or more "
                                 "(equal: evaluate it again)")
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            _set_rng_states(state["rng"], gens)
        judge = fit_judge(data) if num_classes is not None and ev.judge and ctx.is_main else None
        if ctx.is_main:
            stack.enter_context(log_file(run_dir / LOG_FILE))
            for tmp in remove_temporary_files(run_dir / CHECKPOINT_DIR):
                log.info(f"removed {tmp}, left by a checkpoint write that was killed")
            bad = truncate_metrics(run_dir, step)
            if bad:
                log.warning(f"{run_dir / METRICS_FILE}: dropped line(s) {bad}, which were not "
                            "records (a write cut short)")
            OmegaConf.save(OmegaConf.create(cfg_dict), run_dir / CONFIG_FILE)
            if last is not None:
                log.info(f"resuming {run_dir} from {last.name} (step {step} of {t.steps})")
            else:
                log.info(f"training {data.name} with {cfg.sde._target_.rsplit('.', 1)[-1]} and "
                         f"{cfg.model.net._target_.rsplit('.', 1)[-1]} for {t.steps} steps in "
                         f"{run_dir}")
        logger = MetricsLogger(run_dir, backend=cfg.logger.backend, mode=cfg.logger.mode,
                               project=cfg.logger.project, entity=cfg.logger.entity,
                               name=cfg.get("name"), config=cfg_dict) if ctx.is_main \
            else _NoLogger()
        stack.callback(logger.close)
        return _loop(cfg, ctx, run_dir, _Parts(data, sde, model, solver, opt, ema, gens,
                                               num_classes, judge, cfg_dict, mine, device,
                                               degradation),
                     step, last, logger, callback)


@dataclass
class _Parts:
    """What `train` built for `_loop`."""

    data: Dataset
    sde: SDE
    model: models.ScoreModel
    solver: Callable[..., Any]
    opt: torch.optim.Optimizer
    ema: models.EMA
    gens: dict[str, torch.Generator]
    num_classes: int | None
    judge: Any
    cfg_dict: dict[str, Any]
    mine: slice
    device: torch.device
    degradation: Degradation | None = None


def _loop(cfg: DictConfig, ctx: distributed.Context, run_dir: Path, parts: _Parts, step: int,
          saved: Path | None, logger: Any, callback: Callable[[int, torch.Tensor], None] | None
          ) -> TrainResult:
    """The training steps from `step`, the periodic and final evaluations (see `train`)."""
    data, sde, model, solver, opt, ema, gens = (parts.data, parts.sde, parts.model, parts.solver,
                                                parts.opt, parts.ema, parts.gens)
    num_classes, judge, cfg_dict, mine, device = (parts.num_classes, parts.judge, parts.cfg_dict,
                                                  parts.mine, parts.device)
    t, ev = cfg.train, cfg.eval
    ckpt_dir, pic_dir = run_dir / CHECKPOINT_DIR, run_dir / "pictures"
    show = bars_shown(cfg.progress) and ctx.is_main
    net: torch.nn.Module = model
    if ctx.distributed:
        torch.manual_seed(distributed.rank_seed(cfg.seed + step, ctx.rank))
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint() -> Path | None:
        if not ctx.is_main:
            return None
        state = {"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                 "optimizer": opt.state_dict(), "rng": _rng_states(gens), "config": cfg_dict,
                 "data_shape": list(data.shape), "num_classes": num_classes}
        return save_checkpoint(state, ckpt_dir, step, keep=cfg.checkpoint.keep)

    def stopped(path: Path | None) -> TrainResult:
        if ctx.is_main:
            log.info(f"stopped by {flag.name} at step {step}; saved {path}. Resume with "
                     f"`score-sde train run={run_dir}`.")
        return TrainResult(run_dir, step, True, path, model=model)

    def run_eval(tag: str) -> tuple[dict[str, float], list[Path]]:
        log.info(f"evaluating at step {step}: {ev.n_samples} samples with "
                 f"{cfg.solver._target_.rsplit('.', 1)[-1]}"
                 + (f", the NLL of {ev.nll_points} test points" if ev.nll_points else ""))
        with batch_fits("eval.batch_size", ev.batch_size):
            metrics, pics = evaluate(sde, ema.module, solver, data, settings=ev, seed=cfg.seed,
                                     out_dir=pic_dir, tag=tag, device=device, progress=show)
            if num_classes is not None:
                more, class_pics = evaluate_classes(sde, ema.module, solver, data, settings=ev,
                                                    out_dir=pic_dir, tag=tag, judge=judge,
                                                    seed=cfg.seed + 20_000 + step, device=device)
                metrics.update(more)
                pics += class_pics
            if parts.degradation is not None and ev.restore_n:
                more, lines, pic = evaluate_restorations(
                    sde, ema.module, solver, data, parts.degradation, n=ev.restore_n,
                    samples=ev.restore_samples, seed=cfg.seed, batch_size=ev.batch_size,
                    out_dir=pic_dir, tag=tag, device=device)
                metrics.update(more)
                pics.append(pic)
                for line in [f"restorations of {ev.restore_n} test images at step {step}:", *lines]:
                    log.info(line)
        logger.log("eval", step, **metrics)
        for p in pics:
            logger.log_image(f"eval/{p.stem.rsplit('_', 1)[0]}", p, step)
        if tag != "final" and "test_nll" in metrics:
            log.info(f"step {step}: test NLL {metrics['test_nll']:.4f} +- "
                     f"{metrics['test_nll_stderr']:.4f} nats")
        return metrics, pics

    batches = TrainBatches(data, batch_size=t.batch_size, hflip=t.hflip, generator=gens["data"],
                           seed=cfg.seed, start=step, steps=t.steps, workers=t.workers,
                           device=device, labels=num_classes is not None)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if t.amp and device.type == "cuda" \
        else nullcontext()
    flag = StopFlag()
    # the loss summed since the last record (a device tensor), its count, and the last grad norm
    window, count, grad_norm = torch.zeros((), device=device), 0, None
    first = step + 1  # the first step of the window: a NaN is reported as "between first and step"
    milestone = max(1, t.steps // 10)
    progress = bar(t.steps, f"train {data.name}", "step", show=show, initial=step)
    tick = started = time.perf_counter()
    with progress, catch_signals(flag), batch_fits("train.batch_size", t.batch_size):
        while step < t.steps:
            model.train()
            lr = learning_rate(step, lr=t.lr, warmup=t.warmup, steps=t.steps, cosine=t.cosine_decay)
            for group in opt.param_groups:
                group["lr"] = lr
            # the global batch, drawn alike on every rank; this rank trains on its slice
            x0, y = batches.next()
            score_fn = net
            if y is not None:  # the batch's labels, some replaced by the null label
                y = drop_labels(y, num_classes, t.label_dropout, gens["data"])
                score_fn = partial(net, y=y[mine])
            if data.quantized:
                x0 = dequantize(x0, generator=gens["noise"], check=False)[0]
            if parts.degradation is not None:  # (x0, A x0 + n) pairs: the condition of each x0
                cond = training_condition(parts.degradation, x0, t.cond_dropout, gens["noise"],
                                          gens["data"])
                score_fn = partial(score_fn, cond=cond[mine])
            times = sample_time(sde, t.batch_size, t_eps=t.t_eps, importance=t.importance_sampling,
                                generator=gens["noise"], dtype=x0.dtype, device=device)
            noise = torch.randn(x0.shape, generator=gens["noise"], dtype=x0.dtype, device=device)
            with amp:
                loss = dsm_loss(sde, score_fn, x0[mine], weighting=t.weighting, t_eps=t.t_eps,
                                importance_sampling=t.importance_sampling, t=times[mine],
                                noise=noise[mine], check=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            ema.update(model)
            step += 1
            window, count = window + loss.detach().float(), count + 1
            progress.update(1)
            if callback is not None:
                callback(step, loss.detach())
            due_log = step % t.log_every == 0 or step == t.steps
            due_ckpt = step % cfg.checkpoint.every == 0 or step == t.steps
            due_eval = bool(ev.every) and step % ev.every == 0 and step < t.steps
            stop = flag.signum is not None
            if not (due_log or due_ckpt or due_eval or (stop and not ctx.distributed)):
                continue
            # a sync point: the window's mean loss over all ranks, and any rank's stop flag
            both = distributed.all_reduce_sum(torch.stack(
                [window, torch.tensor(float(stop), device=device)]), ctx).tolist()
            mean, stop = both[0] / count / ctx.world_size, both[1] > 0
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"the training loss became {mean} between steps {first} and {step} (lr "
                    f"{lr:.3g}); lower train.lr, keep train.grad_clip > 0, or resume from the last "
                    f"good checkpoint ({saved or 'none yet'})")
            if due_log:
                now = time.perf_counter()
                norm = grad_norm.item() if grad_norm is not None else float("nan")
                logger.log("train", step, loss=mean, lr=lr, grad_norm=norm,
                           steps_per_s=count / max(now - tick, 1e-9))
                progress.set_postfix(loss=f"{mean:.4g}", refresh=False)
                if step // milestone > (step - count) // milestone or step == t.steps:
                    log.info(f"step {step}/{t.steps}: loss {mean:.4g}, "
                             f"{count / max(now - tick, 1e-9):.1f} steps/s")
                window, count, tick, first = torch.zeros((), device=device), 0, now, step + 1
            if stop:
                return stopped(checkpoint())
            if due_ckpt:
                saved = checkpoint()
            if due_eval and ctx.is_main and not flag.unless_stopped(
                    partial(run_eval, f"step{step:08d}")):
                log.info(f"{flag.name} cut the evaluation at step {step} short")
                if not ctx.distributed:  # (under DDP the ranks stop together at the next record)
                    return stopped(saved if due_ckpt else checkpoint())
    if not ctx.is_main:
        return TrainResult(run_dir, step, False, None, model=model)
    train_seconds = time.perf_counter() - started
    final: list[tuple[dict[str, float], list[Path]]] = []

    def final_eval() -> None:
        metrics, pics = run_eval("final")
        if ev.gmm_baseline and data.quantized:
            log.info("fitting the baseline: sklearn's GaussianMixture on the same dequantized data")
            base = gmm_bits_per_dim(data.split("train"), data.split("test"), seed=cfg.seed)
            metrics.update(gmm_bpd=base.bpd, gmm_bpd_stderr=base.stderr,
                           gmm_components=base.n_components)
            logger.log("baseline", step, gmm_bpd=base.bpd, gmm_bpd_stderr=base.stderr,
                       gmm_components=base.n_components)
        final.append((metrics, pics))

    with catch_signals(flag):
        if not flag.unless_stopped(final_eval):
            log.info(f"{flag.name} cut the final evaluation short; {saved} holds the trained "
                     f"model: `score-sde train run={run_dir}` evaluates it again")
            return TrainResult(run_dir, step, True, saved, model=model)
    ((metrics, pics),) = final
    metrics.update(train_seconds=train_seconds,
                   eval_seconds=time.perf_counter() - started - train_seconds)
    logger.log("summary", step, train_seconds=metrics["train_seconds"],
               eval_seconds=metrics["eval_seconds"])
    records = read_metrics(run_dir, "train")
    pics.append(plots.loss_curve([r["step"] for r in records], [r["loss"] for r in records],
                                 pic_dir / "loss.png"))
    res = TrainResult(run_dir, step, False, saved, metrics, pics, model)
    for line in summary_lines(res):
        log.info(line)
    return res
