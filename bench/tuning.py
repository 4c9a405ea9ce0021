"""Tuned grids (solvers.tune_grid) on a trained network, against the fixed grids, same x_T.

    score-sde train run=runs/ring logger=none          # the default ring-vp run, about 2 minutes
    OMP_NUM_THREADS=1 python bench/tuning.py --run runs/ring [--n 2000] [--pilot 1000]

UniPC-3 (`dpm_solver_multistep(order=3, corrector="unipc")`) with the run's EMA network in float32,
from n prior draws to t_eps = 1e-3 at NFE 5 / 10 / 20. ode_err = RMS over samples of
||x - x_ref|| / sqrt(d), x_ref the PF-ODE solution by dopri5 at rtol = atol = 1e-6 from the same
x_T. The tuned grids come from a pilot of other prior draws (another seed), with the same reference
tolerance: "tuned" (equidistribution, or a fixed log-SNR grid if better on the pilot), "+ search"
(Powell, 500 sampler runs on the pilot) and "+ search, shifted t" (shift=True). Each tuned cell also
gives the tuning's seconds.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from score_sde import solvers
from score_sde.build import build_data, load_run

NFES = (5, 10, 20)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder of `score-sde train`")
    parser.add_argument("--n", type=int, default=2000, help="evaluation draws of the prior")
    parser.add_argument("--pilot", type=int, default=1000, help="pilot draws of the prior")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    sde, shape = run.sde, tuple(build_data(run.cfg).shape)

    def score(x, t):
        return run.model(x, t)

    x_T = sde.prior_sample((args.n, *shape), generator=torch.Generator().manual_seed(0))
    pilot = sde.prior_sample((args.pilot, *shape), generator=torch.Generator().manual_seed(1))
    ref = solvers.probability_flow(sde, score, x_T, rtol=1e-6, atol=1e-6, t_eps=1e-3).x
    unipc3 = functools.partial(solvers.dpm_solver_multistep, order=3, corrector="unipc")

    def err(x):
        return (x - ref).flatten(1).norm(dim=1).pow(2).mean().div(x[0].numel()).sqrt().item()

    rows = {f"fixed: {g}": [f"{err(unipc3(sde, score, x_T, steps=k, grid=g).x):.1e}" for k in NFES]
            for g in ("log_snr", "log_snr_window", "karras", "uniform")}
    for name, kw in (("tuned", {}), ("tuned + search", dict(search_evals=500)),
                     ("tuned + search, shifted t", dict(search_evals=500, shift=True))):
        cells = []
        for k in NFES:
            start = time.perf_counter()
            tuned = solvers.tune_grid(sde, score, pilot, k, rtol=1e-6, atol=1e-6, **kw)
            seconds = time.perf_counter() - start
            cells.append(f"{err(unipc3(sde, score, x_T, **tuned.kwargs).x):.1e} ({seconds:.0f} s)")
        rows[name] = cells
    print(f"# run {args.run} (step {run.step}), {sde!r}, n = {args.n}, pilot = {args.pilot}\n")
    print("| UniPC-3 grid | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
