"""Benchmark: coverage of the likelihood's confidence intervals on Gaussian mixtures.

    OMP_NUM_THREADS=1 python bench/likelihood_coverage.py --dims 4 8 16 32 64 --seeds 1 2
    OMP_NUM_THREADS=1 python bench/likelihood_coverage.py --redraw --tol 1e-3 --error-control batch
    OMP_NUM_THREADS=1 python bench/likelihood_coverage.py --redraw --grid-steps 32

For each dimension and seed: a 3-component mixture with random means (scale 1.5) and per-axis stds
(0.3-0.8), 1000 draws of it, the VP SDE in float64 with the exact score and the exact log p_T as the
prior, `solvers.log_likelihood(divergence="hutchinson", probes=P, rtol=atol=tol)` (tol 1e-4 unless
given), its probes held fixed (the default; per-coordinate standard errors) or redrawn at every
evaluation (`--redraw`; Student-t intervals on their spread); with `--grid-steps n` the solve is
`method="unipc", steps=n` (a fixed log-SNR grid, no tolerance) instead. A cell is the fraction of points whose
`interval(level)` holds the closed form -log p_{t_eps}(x); the "mean" columns split the 1000 points
into 200 data sets of 5 and count the data sets whose `mean_interval(level)` holds their exact mean
NLL. Binomial standard errors: 0.7% (points), 1.5% (data sets) at 95%.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers.likelihood import log_likelihood

D64 = torch.float64


def coverage(dim: int, seed: int, probes: int, level: float, redraw: bool, tol: float,
             control: str, steps: int | None) -> tuple[float, float]:
    g = torch.Generator().manual_seed(100 * dim + seed)
    gm = GaussianMixture(1.5 * torch.randn(3, dim, generator=g, dtype=D64),
                         0.3 + 0.5 * torch.rand(3, dim, generator=g, dtype=D64),
                         torch.tensor([0.5, 0.3, 0.2], dtype=D64))
    sde = VPSDE()
    x = gm.sample(1000, generator=g)
    exact = -gm.log_prob(x, 1e-5, sde)
    solve = ({"method": "unipc", "steps": steps} if steps else
             {"rtol": tol, "atol": tol, "error_control": control})
    res = log_likelihood(sde, lambda y, t: gm.score(y, t, sde), x, divergence="hutchinson",
                         probes=probes, redraw_probes=redraw, **solve,
                         prior_logp=lambda z: gm.log_prob(z, sde.T, sde), generator=g)
    lo, hi = res.interval(level)
    points = ((lo <= exact) & (exact <= hi)).double().mean().item()
    sets = 0
    for k in range(0, 1000, 5):
        part = slice(k, k + 5)
        sub = dataclasses.replace(res, nll=res.nll[part], z=res.z[part], stderr=res.stderr[part])
        mean_lo, mean_hi = sub.mean_interval(level)
        sets += mean_lo <= exact[part].mean().item() <= mean_hi
    return points, sets / 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--probes", type=int, nargs="+", default=[2, 4, 16])
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--redraw", action="store_true", help="redraw the probes at every evaluation")
    parser.add_argument("--error-control", default="per_sample", choices=["per_sample", "batch"])
    parser.add_argument("--tol", type=float, default=1e-4, help="rtol = atol of the solves")
    parser.add_argument("--grid-steps", type=int, help="solve on a log-SNR grid of this many steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| D | seed | " + " | ".join(f"P={p} points / mean" for p in args.probes) + " |")
    print("|---|---|" + "---|" * len(args.probes))
    for dim in args.dims:
        for seed in args.seeds:
            cells = [coverage(dim, seed, p, args.level, args.redraw, args.tol, args.error_control,
                              args.grid_steps) for p in args.probes]
            print(f"| {dim} | {seed} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in cells)
                  + " |", flush=True)


if __name__ == "__main__":
    main()
