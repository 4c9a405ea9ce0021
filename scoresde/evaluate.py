"""Evaluation of a score model: samples (and their picture), the test NLL or bits/dim, sample paths.

One path for `score-sde train` (periodically and at the end), `score-sde sample` and `score-sde
likelihood`: the work is cut into blocks of `batch_size`, block j draws its noise (prior draws, SDE
noise, Hutchinson probes, dequantization) from its own generator seeded by (seed, j), and the ranks
of a process group share the blocks (`score_sde.distributed`; one process is a world of size 1). So
the test NLL at the end of training is what `score-sde likelihood` computes on the same checkpoint
with the same seed and settings, and the samples do not depend on the number of ranks. Nothing
here draws from torch's global RNG, so evaluating does not change the course of training.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from score_sde import distributed, plots, solvers
from score_sde.console import bar, log
from score_sde.data import Dataset
from score_sde.faults import solver_keys
from score_sde.sde_lib import SDE, ScoreFn

GRID_MAX = 256  # images in a sample picture (a 16 x 16 grid); the picture's title states the cap
EXACT_WARN_DIM = 256  # the exact divergence warns above this D (D backward passes per evaluation)


def resolve_divergence(kw: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """The NLL keywords `kw` with divergence "auto" resolved for points of shape D: "hutchinson"
    for images (D = C H W in the hundreds to hundreds of thousands), "exact" for other data."""
    if kw.get("divergence", "auto") != "auto":
        return kw
    return {**kw, "divergence": "hutchinson" if len(shape) == 3 else "exact"}


@dataclass
class Samples:
    """Samples drawn in blocks.

    Attributes:
        x: (n, *D) the samples, in block order.
        nfe_per_block: the NFE (score evaluations on the whole block) of each block's solve.
        block_sizes: the number of samples in each block.
    """

    x: Tensor
    nfe_per_block: list[int]
    block_sizes: list[int]

    @property
    def nfe_per_sample(self) -> float:
        """The score evaluations behind one sample (its block's NFE), averaged over the samples."""
        return sum(f * b for f, b in zip(self.nfe_per_block, self.block_sizes)) / sum(self.block_sizes)


@dataclass
class NLLReport:
    """The test NLL of a model on n points.

    Attributes:
        nll: mean negative log-likelihood in nats per sample (of the dequantized data for images).
        stderr: its standard error over the points (and dequantization draws).
        bpd: bits per dimension for 8-bit images, else None.
        bpd_stderr: its standard error, else None.
        nfe: score evaluations behind one point (its batch's ODE solve), averaged over the points.
        n: number of points.
        true_nll: the exact mean -log p of the same points, when the data density is known.
        per_point: the (n,) NLL of each point, in the order of the points (not logged).
    """

    nll: float
    stderr: float
    bpd: float | None
    bpd_stderr: float | None
    nfe: float
    n: int
    true_nll: float | None = None
    per_point: Tensor | None = field(default=None, repr=False)


class _SolveProgress:
    """Moves a bar through one solve of `size` items as its time runs from `t_from` to `t_to`."""

    def __init__(self, progress: Any, size: int, t_from: float, t_to: float):
        self.progress, self.size, self.t_from, self.t_to, self.done = progress, size, t_from, t_to, 0.0

    def at(self, t: float) -> None:
        target = self.size * min(max((t - self.t_from) / (self.t_to - self.t_from), 0.0), 1.0)
        if target > self.done:
            self.progress.update(target - self.done)
            self.done = target

    def finish(self) -> None:
        self.progress.update(self.size - self.done)


def _takes_callback(solver: Callable[..., Any]) -> bool:
    try:
        return "callback" in inspect.signature(solver).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def sharded_samples(sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any], n: int,
                    shape: tuple[int, ...], *, seed: int, batch_size: int,
                    device: torch.device | str = "cpu", ctx: distributed.Context | None = None,
                    block_solver: Callable[[slice], Callable[..., Any]] | None = None,
                    progress: bool = False, desc: str = "sampling") -> Samples | None:
    """n samples in blocks of `batch_size`, shared among the ranks, gathered on rank 0.

    Block j (samples j*batch_size, ...) is drawn and solved with a generator seeded by
    `distributed.block_seed(seed, j)`, so the samples depend on (seed, batch_size) only, not on
    the number of ranks. Each rank solves its blocks with the bare `score_fn`: no collective runs
    inside a solve. `block_solver`, if given, replaces `solver` by block_solver(rows) for the
    block of samples `rows` (per-sample settings such as inpainting's known values). `progress`
    draws a bar of rank 0's samples, moved by the solver's time where it takes a callback.

    Returns:
        On rank 0 the Samples (n, *shape) in order with each block's NFE; None on other ranks.
    """
    ctx = ctx or distributed.context()
    mine = distributed.my_blocks(math.ceil(n / batch_size), ctx)
    sizes = [min(batch_size, n - j * batch_size) for j in mine]
    xs, nfes = [], []
    with bar(sum(sizes), desc, "sample", show=progress and ctx.is_main) as shown:
        for j, b in zip(mine, sizes):
            gen = torch.Generator(device).manual_seed(distributed.block_seed(seed, j))
            solve = solver if block_solver is None else block_solver(
                slice(j * batch_size, j * batch_size + b))
            x_T = sde.prior_sample((b, *shape), generator=gen, device=device)
            track = _SolveProgress(shown, b, sde.T, 0.0)
            kw = {"callback": lambda i, t, x, track=track: track.at(t)} \
                if progress and _takes_callback(solve) else {}
            res = solve(sde, score_fn, x_T, generator=gen, **kw)
            track.finish()
            xs.append(res.x.cpu())
            nfes.append(int(res.nfe))
    parts = distributed.gather_to_main((xs, nfes, sizes), ctx)
    if parts is None:
        return None
    return Samples(torch.cat([x for p in parts for x in p[0]]), [f for p in parts for f in p[1]],
                   [b for p in parts for b in p[2]])


def _mean_stderr(v: Tensor) -> tuple[float, float]:
    v = v.double()
    se = (v.std() / math.sqrt(v.numel())).item() if v.numel() > 1 else float("nan")
    return v.mean().item(), se


def sharded_nll(sde: SDE, score_fn: ScoreFn, x: Tensor, *, quantized: bool, seed: int,
                batch_size: int = 1000, dequant_draws: int = 1,
                true_log_prob: Callable[[Tensor], Tensor] | None = None,
                ctx: distributed.Context | None = None, progress: bool = False,
                **kw: Any) -> NLLReport | None:
    """The NLL of x (N, *D) under the model's probability-flow ODE, its batches shared among the
    ranks and gathered on rank 0.

    Images (`quantized`) get bits/dim with uniform dequantization through `solvers.bits_per_dim`,
    other data the NLL in nats through `solvers.log_likelihood`. Batch j (points j*batch_size, ...)
    draws its probes and dequantization noise from a generator seeded by
    `distributed.block_seed(seed, j)`, so the per-point NLL does not depend on the number of
    ranks. `kw` goes to the solver (divergence, probes, method, rtol, atol, t_eps, max_steps,
    step_size, ...; `score_sde.config.nll_kwargs`); divergence "auto" is Hutchinson for images
    and exact otherwise (`resolve_divergence`), and the exact one on D > EXACT_WARN_DIM warns
    with its cost. `true_log_prob`, if given, is evaluated on
    the same points for a paired comparison. `progress` draws a bar of rank 0's points, moved by
    the ODE's time (reading it costs a host sync per evaluation, so only with the bar).

    Returns:
        On rank 0 the report, whose `per_point` holds the NLL of every point in the order of x;
        None on the other ranks.
    """
    ctx = ctx or distributed.context()
    kw = resolve_divergence(kw, tuple(x.shape[1:]))
    dim = x[0].numel()
    if kw["divergence"] == "exact" and dim > EXACT_WARN_DIM and ctx.is_main:
        log.warning(f"the exact divergence on D = {dim} costs {dim} backward passes per function "
                    f"evaluation ({dim}x a Hutchinson probe; memory grows with chunk_size): "
                    "divergence=hutchinson probes=<k> estimates it, with the standard error")
    kw = {"error_bars": False, **kw}  # the report's error is the spread over points (probes included)
    mine = distributed.my_blocks(math.ceil(x.shape[0] / batch_size), ctx)
    nlls, bpds, nfes = [], [], []
    t_eps = kw.get("t_eps", 1e-5)
    with bar(sum(min(batch_size, x.shape[0] - j * batch_size) for j in mine), "test NLL", "point",
             show=progress and ctx.is_main) as shown:
        for j in mine:
            xb = x[j * batch_size:(j + 1) * batch_size]
            gen = torch.Generator(x.device).manual_seed(distributed.block_seed(seed, j))
            track = _SolveProgress(shown, xb.shape[0], t_eps, sde.T)
            score = score_fn
            if progress:
                def score(y: Tensor, t: Tensor, track: _SolveProgress = track) -> Tensor:
                    track.at(float(t.reshape(-1)[0]))
                    return score_fn(y, t)
            if quantized:
                res = solvers.bits_per_dim(sde, score, xb, dequant_draws=dequant_draws,
                                           generator=gen, **kw)
                bpds.append(res.bpd.detach().cpu())
            else:
                res = solvers.log_likelihood(sde, score, xb, generator=gen, **kw)
            track.finish()
            nlls.append(res.nll.detach().cpu())
            nfes.append(int(res.nfe) * xb.shape[0])
    parts = distributed.gather_to_main((nlls, bpds, nfes), ctx)
    if parts is None:
        return None
    nll = torch.cat([v for p in parts for v in p[0]])
    bpd = [b for p in parts for b in p[1]]
    mean, se = _mean_stderr(nll)
    bpd_mean, bpd_se = _mean_stderr(torch.cat(bpd)) if bpd else (None, None)
    true = None if true_log_prob is None else (-true_log_prob(x.double().cpu())).mean().item()
    return NLLReport(mean, se, bpd_mean, bpd_se, sum(f for p in parts for f in p[2]) / x.shape[0],
                     x.shape[0], true, nll)


def sample_picture(samples: Tensor, data: Dataset | None, path: Path, *, title: str = "") -> Path:
    """A scatter of all samples next to the test data (2-D points), or a grid of the first
    GRID_MAX images (the title says so when there are more); data None: images without a data
    set (a pretrained model)."""
    if data is None or data.is_image:
        if samples.shape[0] > GRID_MAX:
            title = f"{title} (first {GRID_MAX} of {samples.shape[0]})".strip()
        return plots.image_grid(samples[:GRID_MAX], path, title=title)
    if data.shape == (2,):
        return plots.scatter(samples, data.test, path, title=title)
    raise ValueError(f"no picture for data of shape {data.shape}: only (2,) points and images")


@torch.no_grad()
def paths_picture(sde: SDE, score_fn: ScoreFn, data: Dataset, path: Path, *,
                  generator: torch.Generator, device: torch.device | str = "cpu", n: int = 40,
                  steps: int = 200) -> Path:
    """Paths of the reverse SDE (Euler-Maruyama) and the PF-ODE from the same prior draws (2-D)."""
    x_T = sde.prior_sample((n, *data.shape), generator=generator, device=device)
    rs = solvers.euler_maruyama(sde, score_fn, x_T, steps=steps, generator=generator,
                                return_trajectory=True)
    po = solvers.probability_flow(sde, score_fn, x_T, ts=solvers.grids.uniform(sde, steps),
                                  return_trajectory=True)
    return plots.sample_paths(rs.trajectory, po.trajectory, rs.ts, po.ts, data.test, path)


def evaluate(sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any], data: Dataset, *,
             settings: Any, seed: int, out_dir: Path, tag: str, device: torch.device | str = "cpu",
             progress: bool = False) -> tuple[dict[str, float], list[Path]]:
    """Samples and their picture, the sample paths (2-D), and the test NLL on held-out points, in
    one process, through `sharded_samples` and `sharded_nll` (what `score-sde sample` and
    `score-sde likelihood` run) with `seed`.

    Args:
        settings: the `eval` settings (n_samples, nll_points, batch_size and the NLL's solver
            settings, `score_sde.config.EvalSettings`).
        seed: the seed of the samples and the NLL's random draws.
        out_dir: the folder for the pictures.
        tag: a suffix for the file names, e.g. "step001000" or "final".
        progress: draw progress bars.

    Returns:
        The metrics (sample_nfe and nll_nfe per sample, test_nll, ..., entropy when known) and
        the pictures written.
    """
    from score_sde.config import nll_kwargs

    one = distributed.Context()  # rank 0 evaluates alone while the other ranks wait
    metrics: dict[str, float] = {}
    pictures = []
    with solver_keys("solver.", getattr(solver, "keywords", {})):
        samples = sharded_samples(sde, score_fn, solver, settings.n_samples, data.shape,
                                  seed=seed, batch_size=settings.batch_size, device=device,
                                  ctx=one, progress=progress)
    metrics["sample_nfe"] = samples.nfe_per_sample
    pictures.append(sample_picture(samples.x, data, out_dir / f"samples_{tag}.png",
                                   title=f"{data.name}: samples at {tag}"))
    if settings.get("fid") and data.is_image:
        from score_sde.fid import training_fid

        metrics.update(training_fid(samples.x, data, settings, seed=seed, device=device))
    if settings.paths and data.shape == (2,):
        gen = torch.Generator(device).manual_seed(distributed.block_seed(seed, 0, stream=2))
        pictures.append(paths_picture(sde, score_fn, data, out_dir / f"paths_{tag}.png",
                                      generator=gen, device=device))
    if settings.nll_points > 0:
        with solver_keys("eval.", settings):
            rep = sharded_nll(sde, score_fn, data.test[:settings.nll_points].to(device),
                              quantized=data.quantized, seed=seed, batch_size=settings.batch_size,
                              dequant_draws=settings.dequant_draws, true_log_prob=data.log_prob,
                              ctx=one, progress=progress, **nll_kwargs(settings))
        metrics.update(test_nll=rep.nll, test_nll_stderr=rep.stderr, nll_nfe=rep.nfe,
                       nll_points=rep.n)
        if rep.bpd is not None:
            metrics.update(test_bpd=rep.bpd, test_bpd_stderr=rep.bpd_stderr)
        if rep.true_nll is not None:
            metrics["true_nll_same_points"] = rep.true_nll
    if data.entropy is not None:
        metrics.update(entropy=data.entropy, entropy_stderr=data.entropy_stderr or 0.0)
    return metrics, pictures
