"""Restoration of degraded images with a score model: k posterior samples per input, their mean
(the restoration) and per-pixel std (the uncertainty), for `score-sde sample cond.*` and the end
of a `degradation=` training run.

Methods (cond.method):
    model   the run's image-conditional network (trained on pairs of `score_sde.degradation`),
            with classifier-free guidance on the condition (`condition_guidance`):
            s_w = s(x, t, null) + w (s(x, t, c) - s(x, t, null)), w = guidance.scale
    dps     training-free, `solvers.measurement_guidance` on the run's (unconditional) score with
    pigdm   the same operator and noise; guidance.scale weights the likelihood term

They are measured against the baselines of `score_sde.restoration_report` on the same
measurements. The samples run through `evaluate.sharded_samples`, so `score-sde sample` shares
them among the ranks under torchrun, and they do not depend on the number of ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from score_sde import __version__, distributed, solvers
from score_sde.build import TrainedRun, build_degradation
from score_sde.console import log
from score_sde.data import Dataset
from score_sde.degradation import Degradation
from score_sde.evaluate import sharded_samples
from score_sde.inpaint import load_array
from score_sde.restoration_report import baselines, flat_metrics, main_baseline, picture, report
from score_sde.samples import save_samples
from score_sde.sde_lib import SDE, ScoreFn


def condition_guidance(model: Callable[..., Tensor], cond: Tensor, scale: float) -> ScoreFn:
    """Classifier-free guidance on an image condition, as a score_fn(x, t):

        s_w(x, t) = s(x, t, null) + w (s(x, t, cond) - s(x, t, null)),

    null the all-zero condition (`cond=None`); w = 1 is the conditional score, one network call
    on B; other w one call on 2B.

    Args:
        model: model(x, t, cond=c) -> like x, e.g. a `models.ScoreModel` over a U-Net with
            cond_channels.
        cond: (B, C_cond, H, W) the conditions of the batch.
        scale: w >= 0.
    """
    if not scale >= 0:
        raise ValueError(f"guidance.scale must be >= 0, got {scale!r}")

    def guided(x: Tensor, t: Tensor) -> Tensor:
        c = cond.to(x)
        if scale == 1:
            return model(x, t, cond=c)
        both = model(torch.cat([x, x]), torch.cat([t, t]), cond=torch.cat([c, torch.zeros_like(c)]))
        s_cond, s_null = both.chunk(2)
        return s_null + scale * (s_cond - s_null)

    return guided


@dataclass
class Restorations:
    """k samples for each of n inputs.

    Attributes:
        samples: (n, k, *D).
        nfe_per_sample: score evaluations behind one sample.
    """

    samples: Tensor
    nfe_per_sample: float

    @property
    def mean(self) -> Tensor:
        """The restoration, (n, *D): the mean of the k samples (the posterior mean's estimate)."""
        return self.samples.mean(1)

    @property
    def std(self) -> Tensor:
        """The uncertainty, (n, *D): the per-pixel std of the k samples (0 for k = 1)."""
        return self.samples.std(1, correction=0)


def _restoration_score(method: str, model: Callable[..., Tensor], sde: SDE,
                       degradation: Degradation, y: Tensor, scale: float, prior: dict[str, Any]
                       ) -> ScoreFn:
    if method == "model":
        return condition_guidance(model, degradation.condition(y), scale)
    return solvers.measurement_guidance(sde, model, degradation.operator, y,
                                        degradation.noise_std, method=method, scale=scale, **prior)


def _solve_rows(rows: slice, *, solver: Callable[..., Any], method: str,
                degradation: Degradation, y: Tensor, scale: float, prior: dict[str, Any]
                ) -> Callable[..., Any]:
    """The solver for the samples `rows`, scoring with their measurements."""

    def solve(sde: SDE, score_fn: Any, x_T: Tensor, **kw: Any) -> Any:
        score = _restoration_score(method, score_fn, sde, degradation, y[rows].to(x_T.device),
                                   scale, prior)
        return solver(sde, score, x_T, **kw)

    return solve


def restore(sde: SDE, model: Callable[..., Tensor], solver: Callable[..., Any],
            degradation: Degradation, y: Tensor, *, samples: int, seed: int, batch_size: int,
            method: str = "model", scale: float = 1.0, data_std: float = 0.5,
            jacobian: str = "network", clamp: bool = True,
            device: torch.device | str = "cpu", ctx: distributed.Context | None = None,
            progress: bool = False) -> Restorations | None:
    """`samples` posterior samples for each measurement y (n, M).

    Args:
        model: the score model: image-conditional for method "model", any for "dps" / "pigdm".
        solver: a partial sampler, solver(sde, score_fn, x_T, generator=...).
        samples: k, the samples per input.
        seed, batch_size: as `evaluate.sharded_samples` (block j of the n * k samples, input-major,
            from a generator seeded by (seed, j)).
        method: "model", "dps" or "pigdm".
        scale: guidance.scale (classifier-free on the condition, or the likelihood weight).
        data_std, jacobian: dps / pigdm's prior std per pixel and d x0_hat / d x_t
            (`solvers.measurement_guidance`).
        clamp: clip the samples to [-1, 1] (images).

    Returns:
        On rank 0 the Restorations, None on the other ranks.
    """
    y_rep = y.repeat_interleave(samples, 0)
    block = partial(_solve_rows, solver=solver, method=method, degradation=degradation,
                    y=y_rep, scale=scale, prior=dict(data_std=data_std, jacobian=jacobian))
    out = sharded_samples(sde, model, solver, y_rep.shape[0], degradation.shape, seed=seed,
                          batch_size=batch_size, device=device, ctx=ctx, block_solver=block,
                          progress=progress, desc="restoring")
    if out is None:
        return None
    x = out.x.clamp(-1, 1) if clamp else out.x
    return Restorations(x.reshape(y.shape[0], samples, *degradation.shape), out.nfe_per_sample)


def measurements(degradation: Degradation, x: Tensor, seed: int) -> Tensor:
    """y = A x + n of clean images x (n, *D), the noise from a generator seeded by `seed` (the same
    y for every method and rank given the seed)."""
    gen = torch.Generator().manual_seed(distributed.block_seed(seed, 0, stream=3))
    return degradation.measure(x.cpu(), generator=gen)


def rows_of(res: Restorations, method: str) -> dict[str, Tensor]:
    """The restorations of a method by row name: the mean of the k samples and the first sample."""
    return {f"{method}, mean of {res.samples.shape[1]}": res.mean,
            f"{method}, one sample": res.samples[:, 0]}


# -- the sample command -------------------------------------------------------------------------
def read_degraded(path: str, degradation: Degradation) -> Tensor:
    """Degraded images from a file as measurements (n, M): a .png (8-bit grey or RGB), or a .npy /
    .pt / .npz array of shape (*Y) or (n, *Y) in the data's units ([-1, 1]; uint8 arrays are
    scaled), Y = `degradation.measurement_shape`.

    Raises:
        ValueError: naming cond.image: an unreadable file or an array of another shape.
    """
    p = Path(path).expanduser()
    if p.suffix == ".png":
        from PIL import Image

        if not p.is_file():
            raise ValueError(f"cond.image must be an existing .png, .npy, .npz or .pt file, got "
                             f"{path!r}")
        with Image.open(p) as im:
            a = np.asarray(im.convert("L" if degradation.measurement_shape[0] == 1 else "RGB"))
        value = torch.as_tensor(a.reshape(*a.shape[:2], -1).transpose(2, 0, 1).copy())
    else:
        value = load_array(path, "cond.image")
    if value.dtype == torch.uint8:
        value = value.float() / 255 * 2 - 1
    shape = degradation.measurement_shape
    if tuple(value.shape) == shape:
        value = value[None]
    if tuple(value.shape[1:]) != shape:
        raise ValueError(f"cond.image {path} holds an array of shape {tuple(value.shape)}, but "
                         f"the degradation {degradation.name} gives degraded images of shape "
                         f"{shape}: give {shape} or (n, {', '.join(map(str, shape))})")
    return degradation.from_image(value.float())


def run_degradation(cfg: DictConfig, run_cfg: DictConfig, shape: tuple[int, ...]) -> Degradation:
    """The degradation to restore: the run's (a run trained on pairs) or `degradation=` (for the
    training-free methods on any run).

    Raises:
        ValueError: none given, two that differ, or method "model" on a run without a condition.
    """
    own, given = run_cfg.get("degradation"), cfg.get("degradation")
    if cfg.cond.method == "model" and own is None:
        raise ValueError(f"cond.method=model restores with the run's image-conditional network, "
                         f"but run {cfg.run} was trained without degradation=; use "
                         "cond.method=dps or pigdm with degradation=<sr2|blur|...>")
    if own is not None and given is not None and OmegaConf.to_container(own) != \
            OmegaConf.to_container(given):
        raise ValueError(f"degradation is fixed by run {cfg.run} "
                         f"({OmegaConf.to_container(own)}); drop degradation=")
    if own is None and given is None:
        raise ValueError(f"run {cfg.run} has no degradation: add degradation=<sr2|sr4|blur|mask|"
                         "grey> for the training-free cond.method=dps or pigdm")
    return build_degradation(own if own is not None else given, shape)


def check_sample_settings(cfg: DictConfig) -> None:
    """The settings restoration does not combine with."""
    for key, value, why in (("label", cfg.label, "class labels"),
                            ("inpaint.known", cfg.inpaint.known, "inpainting files"),
                            ("tune.pilot", cfg.tune.pilot or None, "grid tuning"),
                            ("tune.load", cfg.tune.load, "a tuned grid")):
        if value is not None:
            raise ValueError(f"{key}={value}: restoration (cond.*) does not take {why}; drop it")


def sample_restorations(cfg: DictConfig, run: TrainedRun, solver: Callable[..., Any], data: Dataset,
                        out: Path, *, base: Callable[[str], str], device: torch.device,
                        ctx: distributed.Context, progress: bool) -> Path | None:
    """`score-sde sample run=R cond.image=<file>` or `cond.split=test [cond.n=N]`: restore, write
    `<out>/<base>.pt` (the (n * k, *D) samples, input-major) with its .json (settings and, for a
    split, the metrics), `<base>.restored.pt` ({"mean", "std", "degraded", "truth"}) and the
    picture `<base>.png`; print the table against the baselines for a split.

    Args:
        base: the file base name for a name (`commands` adds the time).

    Returns:
        The samples' .pt (None on ranks other than 0).
    """
    check_sample_settings(cfg)
    c = cfg.cond
    degradation = run_degradation(cfg, run.cfg, data.shape)
    truth = labels = None
    if c.image is not None:
        y = read_degraded(c.image, degradation)
    else:
        x = data.test if c.split == "test" else data.train
        lab = data.test_labels if c.split == "test" else data.train_labels
        n = c.n or x.shape[0]
        truth, labels = x[:n], None if lab is None else lab[:n]
        y = measurements(degradation, truth, cfg.seed)
    start = time.perf_counter()
    res = restore(run.sde, run.model, solver, degradation, y, samples=c.samples, seed=cfg.seed,
                  batch_size=cfg.batch_size, method=c.method, scale=cfg.guidance.scale,
                  data_std=c.data_std, jacobian=c.jacobian, clamp=data.quantized, device=device, ctx=ctx,
                  progress=progress)
    seconds = time.perf_counter() - start
    if res is None:
        return None
    name = f"{cfg.solver._target_.rsplit('.', 1)[-1]}_restore_{c.method}_k{c.samples}"
    if cfg.guidance.scale != 1:
        name += f"_w{cfg.guidance.scale:g}"
    out.mkdir(parents=True, exist_ok=True)
    stem = base(name)
    found = baselines(degradation, y, data)
    metrics: dict[str, Any] = {}
    if truth is not None:
        rows, lines = report({**found, **rows_of(res, c.method)}, truth, labels, data)
        metrics = {k: vars(q) for k, q in rows.items()}
        for line in lines:
            log.info(line)
    settings = {k: v for k, v in OmegaConf.to_container(cfg.solver, resolve=True).items()
                if not k.startswith("_")}
    meta = {"n_inputs": y.shape[0], "samples_per_input": c.samples, "shape": list(data.shape),
            "cond": OmegaConf.to_container(c), "degradation": degradation.name,
            "noise_std": degradation.noise_std, "guidance_scale": cfg.guidance.scale,
            "seed": cfg.seed, "batch_size": cfg.batch_size, "solver": cfg.solver._target_,
            "solver_settings": settings, "nfe_per_sample": res.nfe_per_sample,
            "run": str(cfg.run), "checkpoint": str(run.checkpoint), "step": run.step,
            "ema": cfg.ema, "metrics": metrics, "seconds": seconds,
            "world_size": ctx.world_size, "score_sde": __version__}
    path = save_samples(res.samples.flatten(0, 1), meta, out / f"{stem}.pt")
    torch.save({"mean": res.mean, "std": res.std, "degraded": degradation.as_image(y),
                **({} if truth is None else {"truth": truth})}, out / f"{stem}.restored.pt")
    pic = picture(degradation, y, rows_of(res, c.method), res.std, main_baseline(found),
                  out / f"{stem}.png",
                  title=f"{degradation.name}, {c.method}, k={c.samples}, step {run.step}",
                  truth=truth)
    log.info(f"{y.shape[0]} inputs x {c.samples} samples from {run.checkpoint.name} (step "
             f"{run.step}) with {name}: {res.nfe_per_sample:g} NFE per sample, {seconds:.1f} s")
    log.info(f"samples: {path} (restorations: {stem}.restored.pt, metadata: {stem}.json)")
    log.info(f"picture: {pic}")
    return path


# -- training's evaluation ----------------------------------------------------------------------
def evaluate_restorations(sde: SDE, model: Callable[..., Tensor], solver: Callable[..., Any],
                          data: Dataset, degradation: Degradation, *, n: int, samples: int,
                          seed: int, batch_size: int, out_dir: Path, tag: str,
                          device: torch.device | str = "cpu") -> tuple[dict[str, float], list[str], Path]:
    """At the end of a degradation run: the first n test images degraded and restored (k =
    `samples` each, classifier-free scale 1), compared with the baselines.

    Returns:
        The metrics (`flat_metrics`), the table's lines and the picture.
    """
    truth = data.test[:n]
    labels = None if data.test_labels is None else data.test_labels[:n]
    y = measurements(degradation, truth, seed)
    res = restore(sde, model, solver, degradation, y, samples=samples, seed=seed,
                  batch_size=batch_size, clamp=data.quantized, device=device,
                  ctx=distributed.Context())
    found = baselines(degradation, y, data)
    rows, lines = report({**found, **rows_of(res, "model")}, truth, labels, data)
    pic = picture(degradation, y, rows_of(res, "model"), res.std, main_baseline(found),
                  out_dir / f"restorations_{tag}.png",
                  title=f"{data.name}: {degradation.name}, k={samples}, {tag}", truth=truth)
    return flat_metrics(rows), lines, pic
