"""Evaluation of a score model: samples (and their picture), the test NLL or bits/dim, sample paths.

Used by `score-sde train` (periodically and at the end) and by `score-sde sample | likelihood`.
Every function draws its randomness from the generator it is given, never from the global RNG,
so evaluating does not change the course of training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from score_sde import distributed, plots, solvers
from score_sde.data import Dataset
from score_sde.sde_lib import SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class NLLReport:
    """The test NLL of a model on n points.

    Attributes:
        nll: mean negative log-likelihood in nats per sample (of the dequantized data for images).
        stderr: its standard error over the points (and dequantization draws).
        bpd: bits per dimension for 8-bit images, else None.
        bpd_stderr: its standard error, else None.
        nfe: score evaluations of the ODE solves, summed over batches.
        n: number of points.
        true_nll: the exact mean -log p of the same points, when the data density is known.
        per_point: the (n,) NLL of each point, in the order of the points (not logged).
    """

    nll: float
    stderr: float
    bpd: float | None
    bpd_stderr: float | None
    nfe: int
    n: int
    true_nll: float | None = None
    per_point: Tensor | None = field(default=None, repr=False)


@torch.no_grad()
def draw_samples(sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any], n: int,
                 shape: tuple[int, ...], *, generator: torch.Generator,
                 device: torch.device | str = "cpu", batch_size: int = 5000
                 ) -> tuple[Tensor, int]:
    """n samples of shape (n, *shape) from prior draws through `solver`; also the total NFE."""
    out, nfe = [], 0
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x_T = sde.prior_sample((b, *shape), generator=generator, device=device)
        res = solver(sde, score_fn, x_T, generator=generator)
        out.append(res.x)
        nfe += res.nfe
    return torch.cat(out), nfe


def _mean_stderr(v: Tensor) -> tuple[float, float]:
    v = v.double()
    se = (v.std() / math.sqrt(v.numel())).item() if v.numel() > 1 else float("nan")
    return v.mean().item(), se


def test_nll(sde: SDE, score_fn: ScoreFn, x: Tensor, *, quantized: bool, generator: torch.Generator,
             divergence: str = "exact", probes: int = 1, method: str = "dopri5",
             rtol: float = 1e-5, atol: float = 1e-5, t_eps: float = 1e-5, dequant_draws: int = 1,
             batch_size: int = 1000, true_log_prob: Callable[[Tensor], Tensor] | None = None
             ) -> NLLReport:
    """The NLL of x (N, *D) under the model's probability-flow ODE, in batches.

    Images (`quantized`) get bits/dim with uniform dequantization through `solvers.bits_per_dim`;
    other data the NLL in nats through `solvers.log_likelihood`. `true_log_prob`, if given, is
    evaluated on the same points for a paired comparison.
    """
    kw = dict(divergence=divergence, probes=probes, method=method, rtol=rtol, atol=atol,
              t_eps=t_eps, generator=generator)
    nlls, bpds, nfe = [], [], 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size]
        if quantized:
            res = solvers.bits_per_dim(sde, score_fn, xb, dequant_draws=dequant_draws, **kw)
            bpds.append(res.bpd.detach().cpu())
            nlls.append(res.nll.detach().cpu())
        else:
            res = solvers.log_likelihood(sde, score_fn, xb, **kw)
            nlls.append(res.nll.detach().cpu())
        nfe += int(res.nfe)
    return _report(torch.cat(nlls), torch.cat(bpds) if bpds else None, nfe, x, true_log_prob)


def _report(nll: Tensor, bpd: Tensor | None, nfe: int, x: Tensor,
            true_log_prob: Callable[[Tensor], Tensor] | None) -> NLLReport:
    mean, se = _mean_stderr(nll)
    bpd_mean, bpd_se = _mean_stderr(bpd) if bpd is not None else (None, None)
    true = None
    if true_log_prob is not None:
        true = (-true_log_prob(x.double().cpu())).mean().item()
    return NLLReport(mean, se, bpd_mean, bpd_se, nfe, x.shape[0], true, nll)


@torch.no_grad()
def sharded_samples(sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any], n: int,
                    shape: tuple[int, ...], *, seed: int, batch_size: int,
                    device: torch.device | str = "cpu", ctx: distributed.Context | None = None,
                    block_solver: Callable[[slice], Callable[..., Any]] | None = None
                    ) -> tuple[Tensor | None, int]:
    """n samples in blocks of `batch_size`, shared among the ranks, gathered on rank 0.

    Block j (samples j*batch_size, ...) is drawn and solved with a generator seeded by
    `distributed.block_seed(seed, j)`, so the samples depend on (seed, batch_size) only, not on
    the number of ranks. Each rank solves its blocks with the bare `score_fn`: no collective runs
    inside a solve. `block_solver`, if given, replaces `solver` by block_solver(rows) for the
    block of samples `rows` (per-sample settings such as inpainting's known values).

    Returns:
        On rank 0 the (n, *shape) samples in order and the NFE summed over all blocks; on the
        other ranks (None, 0).
    """
    ctx = ctx or distributed.context()
    xs, nfe = [], 0
    for j in distributed.my_blocks(math.ceil(n / batch_size), ctx):
        gen = torch.Generator(device).manual_seed(distributed.block_seed(seed, j))
        b = min(batch_size, n - j * batch_size)
        solve = solver if block_solver is None else block_solver(
            slice(j * batch_size, j * batch_size + b))
        x_T = sde.prior_sample((b, *shape), generator=gen, device=device)
        res = solve(sde, score_fn, x_T, generator=gen)
        xs.append(res.x.cpu())
        nfe += int(res.nfe)
    parts = distributed.gather_to_main((xs, nfe), ctx)
    if parts is None:
        return None, 0
    return torch.cat([x for p in parts for x in p[0]]), sum(p[1] for p in parts)


def sharded_nll(sde: SDE, score_fn: ScoreFn, x: Tensor, *, quantized: bool, seed: int,
                batch_size: int = 1000, dequant_draws: int = 1,
                true_log_prob: Callable[[Tensor], Tensor] | None = None,
                ctx: distributed.Context | None = None, **kw: Any) -> NLLReport | None:
    """`test_nll` of x (N, *D) with its batches shared among the ranks, gathered on rank 0.

    Batch j (points j*batch_size, ...) draws its probes and dequantization noise from a generator
    seeded by `distributed.block_seed(seed, j)`, so the per-point NLL does not depend on the
    number of ranks. `kw` goes to the solver (divergence, probes, method, rtol, atol, t_eps).

    Returns:
        On rank 0 the report, whose `per_point` holds the NLL of every point in the order of x;
        None on the other ranks.
    """
    ctx = ctx or distributed.context()
    nlls, bpds, nfe = [], [], 0
    for j in distributed.my_blocks(math.ceil(x.shape[0] / batch_size), ctx):
        xb = x[j * batch_size:(j + 1) * batch_size]
        gen = torch.Generator(x.device).manual_seed(distributed.block_seed(seed, j))
        if quantized:
            res = solvers.bits_per_dim(sde, score_fn, xb, dequant_draws=dequant_draws,
                                       generator=gen, **kw)
            bpds.append(res.bpd.detach().cpu())
        else:
            res = solvers.log_likelihood(sde, score_fn, xb, generator=gen, **kw)
        nlls.append(res.nll.detach().cpu())
        nfe += int(res.nfe)
    parts = distributed.gather_to_main((nlls, bpds, nfe), ctx)
    if parts is None:
        return None
    bpd = [b for p in parts for b in p[1]]
    return _report(torch.cat([v for p in parts for v in p[0]]), torch.cat(bpd) if bpd else None,
                   sum(p[2] for p in parts), x, true_log_prob)


def sample_picture(samples: Tensor, data: Dataset, path: Path, *, title: str = "") -> Path:
    """A scatter next to the test data (2-D points) or a grid of the first 64 images."""
    if data.is_image:
        return plots.image_grid(samples[:64], path, title=title)
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


def _log_prob_of(data: Dataset) -> Callable[[Tensor], Tensor] | None:
    return getattr(data, "log_prob", None)


def evaluate(sde: SDE, score_fn: ScoreFn, solver: Callable[..., Any], data: Dataset, *,
             settings: Any, out_dir: Path, tag: str, generator: torch.Generator,
             device: torch.device | str = "cpu") -> tuple[dict[str, float], list[Path]]:
    """Samples and their picture, the sample paths (2-D), and the test NLL on held-out points.

    Args:
        settings: the `eval` settings (n_samples, nll_points, divergence, rtol, atol, ...).
        out_dir: the folder for the pictures.
        tag: a suffix for the file names, e.g. "step001000" or "final".

    Returns:
        The metrics (nfe, test_nll, ..., entropy when known) and the pictures written.
    """
    metrics: dict[str, float] = {}
    pictures = []
    samples, nfe = draw_samples(sde, score_fn, solver, settings.n_samples, data.shape,
                                generator=generator, device=device)
    metrics["sample_nfe"] = nfe
    pictures.append(sample_picture(samples, data, out_dir / f"samples_{tag}.png",
                                   title=f"{data.name}: samples at {tag}"))
    if settings.paths and data.shape == (2,):
        pictures.append(paths_picture(sde, score_fn, data, out_dir / f"paths_{tag}.png",
                                      generator=generator, device=device))
    if settings.nll_points > 0:
        x = data.test[:settings.nll_points].to(device)
        rep = test_nll(sde, score_fn, x, quantized=data.quantized, generator=generator,
                       divergence=settings.divergence, rtol=settings.rtol, atol=settings.atol,
                       dequant_draws=settings.dequant_draws, true_log_prob=_log_prob_of(data))
        metrics.update(test_nll=rep.nll, test_nll_stderr=rep.stderr, nll_nfe=rep.nfe,
                       nll_points=rep.n)
        if rep.bpd is not None:
            metrics.update(test_bpd=rep.bpd, test_bpd_stderr=rep.bpd_stderr)
        if rep.true_nll is not None:
            metrics["true_nll_same_points"] = rep.true_nll
    if data.entropy is not None:
        metrics.update(entropy=data.entropy, entropy_stderr=data.entropy_stderr or 0.0)
    return metrics, pictures
