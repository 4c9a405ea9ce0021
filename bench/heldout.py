"""Benchmark: the default fixed sampler against diffusers on a held-out family of mixtures.

    OMP_NUM_THREADS=1 python bench/heldout.py --mixtures 8 --n 500

Mixtures drawn from seeds 10_000 + i (never used to choose a grid or a default): dimension
log-uniform in 2-64, 2-8 components with Dirichlet(1) weights, means N(0, sep^2 I) with sep in
[0.5, 3], per-axis stds in [0.1, 0.6]. Per mixture and SDE (VP, VE): n exact draws of p_T at T = 1,
each sampler at NFE 5 / 10 / 20 / 50. Ours is the default fixed configuration, UniPC-3 on
`grids.log_snr_window` (`dpm_solver_multistep(order=3, corrector="unipc", grid="log_snr_window")`),
to t_eps = 1e-3; diffusers runs as in bench/samplers.py (its sigma_min rows end at t_eps, its
recommended rows, final sigma 0, are judged against the PF-ODE continued to noise 0). Per sample:
err = ||x - x_ref|| / sqrt(D), x_ref the PF-ODE solution by dopri5 at 1e-9 from the same x_T, and a
mode flip when the most probable component of x differs from x_ref's. Cells pool every sample of
every mixture: median err / RMS err / flip fraction.
"""

from __future__ import annotations

import argparse
import math

import diffusers
import torch
from samplers import T_EPS, diffusers_sampler, exact_draw, ode_limit

from score_sde import solvers
from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture

NFES = (5, 10, 20, 50)
PEERS = {
    "diffusers UniPC-3 (bh2, sigma_min)": (diffusers.UniPCMultistepScheduler, dict(
        solver_order=3, final_sigmas_type="sigma_min")),
    "diffusers UniPC-3 (bh2, final sigma 0)": (diffusers.UniPCMultistepScheduler, dict(
        solver_order=3, lower_order_final=True)),
    "diffusers DPM-Solver++ 3M (lu, final sigma 0)": (diffusers.DPMSolverMultistepScheduler, dict(
        solver_order=3, algorithm_type="dpmsolver++", lower_order_final=True, use_lu_lambdas=True,
        euler_at_final=True)),
    "diffusers DPM-Solver++ 2M (linspace, final sigma 0)": (
        diffusers.DPMSolverMultistepScheduler, dict(
            solver_order=2, algorithm_type="dpmsolver++", lower_order_final=True)),
}


def held_out_mixture(i: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(10_000 + i)
    u = torch.rand(5, generator=g, dtype=torch.float64)
    dim = int(round(math.exp(math.log(2) + u[0].item() * math.log(32))))
    k = 2 + int(u[1].item() * 7)
    sep = 0.5 + 2.5 * u[2].item()
    weights = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # Dirichlet(1)
    means = sep * torch.randn(k, dim, generator=g, dtype=torch.float64)
    stds = 0.1 + 0.5 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, weights / weights.sum())


def evaluate(gm: GaussianMixture, sde, n: int, seed: int
             ) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """sampler -> per NFE, (per-sample err (n,), per-sample mode flip (n,)) on one mixture."""
    def score(x, t):
        return gm.score(x, t, sde)

    x_T = exact_draw(gm, sde, n, 1.0, torch.Generator().manual_seed(seed))
    ref = solvers.probability_flow(sde, score, x_T, rtol=1e-9, atol=1e-9, t_eps=T_EPS).x
    limit = ode_limit(gm, sde, ref, T_EPS)

    def judged(xs, zero):
        target = limit if zero else ref
        mode = (gm.posterior(target) if zero else gm.posterior(target, T_EPS, sde)).argmax(1)
        out = []
        for x in xs:
            post = gm.posterior(x) if zero else gm.posterior(x, T_EPS, sde)
            out.append(((x - target).norm(dim=1) / math.sqrt(x.shape[1]),
                        (post.argmax(1) != mode).double()))
        return out

    rows = {"ours: unipc 3 (log-SNR window)": judged([solvers.dpm_solver_multistep(
        sde, score, x_T, order=3, corrector="unipc", steps=k, grid="log_snr_window").x
        for k in NFES], False)}
    for label, (cls, cfg) in PEERS.items():
        rows[label] = judged([diffusers_sampler(cls, sde, score, x_T, k, **cfg)[0] for k in NFES],
                             cfg.get("final_sigmas_type", "zero") == "zero")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=8)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, sde in (("VP", VPSDE()), ("VE", VESDE())):
        pooled: dict[str, list[list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        dims = []
        for i in range(args.mixtures):
            gm = held_out_mixture(i)
            dims.append(gm.means.shape[1])
            for label, cells in evaluate(gm, sde, args.n, i).items():
                for j, cell in enumerate(cells):
                    pooled.setdefault(label, [[] for _ in NFES])[j].append(cell)
        print(f"\n### {name}: {args.mixtures} held-out mixtures (D = {dims}), n = {args.n} each; "
              "median err / RMS err / mode flips at NFE " + " / ".join(map(str, NFES)) + "\n")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
        print("|---|" + "---|" * len(NFES))
        for label, per_nfe in pooled.items():
            cells = []
            for parts in per_nfe:
                e = torch.cat([p[0] for p in parts])
                f = torch.cat([p[1] for p in parts])
                cells.append(f"{e.median():.1e} / {e.pow(2).mean().sqrt():.1e} / {f.mean():.3f}")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
