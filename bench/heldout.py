"""Benchmark: the default fixed sampler against diffusers on a held-out family of mixtures.

    OMP_NUM_THREADS=1 python bench/heldout.py --mixtures 8 --n 500
    OMP_NUM_THREADS=1 python bench/heldout.py --select --seed-base 20000 --mixtures 16 --n 300

Mixture i is drawn from seed seed_base + i: dimension log-uniform in 2-64, 2-8 components with
Dirichlet(1) weights, means N(0, sep^2 I) with sep in [0.5, 3], per-axis stds in [0.1, 0.6]. Seeds
10_000+ are held out: never used to choose a grid or a default. Per mixture and SDE (VP, VE): n exact
draws of p_T at T = 1, each sampler at NFE 5 / 10 / 20 / 50. Ours is the default fixed configuration
DEFAULT, `dpm_solver_multistep(order=3, corrector="unipc", predictor="unip", grid="log_snr_window")`
(UniPC-3 with its own predictor, bh2, on `grids.log_snr_window` with its default stretch = 3), to
t_eps = 1e-3; diffusers runs as in bench/samplers.py (its sigma_min rows end at t_eps, its
recommended rows, final sigma 0, are judged against the PF-ODE continued to noise 0) and k-diffusion
as in bench/kdiffusion.py (Karras sigmas to noise 0, judged like diffusers' final-sigma-0 rows; DPM
fast to t_eps). Per sample: err = ||x - x_ref|| / sqrt(D), x_ref the PF-ODE solution by dopri5 at
1e-9 from the same x_T, and a mode flip when the most probable component of x differs from x_ref's.
Cells pool every sample of every mixture: median err / RMS err / flip fraction; below each table,
ours / the best peer (the lowest median and the lowest RMS of the diffusers and k-diffusion rows,
each its own best) per NFE. `--also` adds CANDIDATES rows (e.g. "unipc 3 (window x 3)", the
previous default: DPM-Solver++ 3M's predictor with UniC).

`--select` (refused on the held-out seeds) runs every CANDIDATE instead: orders 2 / 3, corrector none /
UniPC, and UniPC-3 with its own predictor ("unip+unic 3", bh2 and bh1), on `log_snr_window` with
stretch inf / 4 / 3 / 2 (and lo = -4), the log-SNR, Karras and uniform-t grids. The rule: the most
of the 16 cells (median and RMS at 4 NFE, VP and VE) within the goal, <= 0.7x the best peer's, then
the lowest worst ratio to the best peer over both SDEs and every NFE of max(median ratio, RMS
ratio); its table is printed last.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import diffusers
import kdiffusion
import torch
from samplers import T_EPS, diffusers_sampler, exact_draw, ode_limit

from score_sde import solvers
from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture
from score_sde.solvers import grids

NFES = (5, 10, 20, 50)
HELD_OUT, SELECTION = 10_000, 20_000  # seed bases: the judged mixtures, the ones the default is chosen on
# dpm_solver_multistep's settings: UniPC-3 (UniP-3 + UniC-3, bh2) on log_snr_window, chosen by --select
DEFAULT = dict(order=3, corrector="unipc", predictor="unip", grid="log_snr_window")
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
KDIFFUSION = kdiffusion.SAMPLERS if kdiffusion.installed() else {}
PEER_LABELS = (*PEERS, *KDIFFUSION)  # the best peer is the best of these
Sampler = Callable[[SDE, Callable, torch.Tensor, int], torch.Tensor]  # (sde, score, x_T, NFE) -> x


def multistep(order: int, corrector: str, grid: Callable[[SDE, int], torch.Tensor], **settings
              ) -> Sampler:
    return lambda sde, score, x_T, k: solvers.dpm_solver_multistep(
        sde, score, x_T, order=order, corrector=corrector, ts=grid(sde, k), **settings).x


def window(stretch: float, lo: float = -3.0) -> Callable[[SDE, int], torch.Tensor]:
    return lambda sde, k: grids.log_snr_window(sde, k, t_eps=T_EPS, stretch=stretch, lo=lo)


CANDIDATE_GRIDS = {  # the grids the default is chosen from; window x s: outer steps ~s x the window's
    "window x inf": window(math.inf), "window x 4": window(4.0), "window x 3": window(3.0),
    "window x 2": window(2.0), "window from -4 x 3": window(3.0, lo=-4.0),
    "log-SNR": lambda sde, k: grids.log_snr_uniform(sde, k, t_eps=T_EPS),
    "Karras": lambda sde, k: grids.karras(sde, k, t_eps=T_EPS),
    "uniform t": lambda sde, k: grids.uniform(sde, k, t_eps=T_EPS),
}
CANDIDATES = {f"{'unipc' if c == 'unipc' else 'dpm++'} {p} ({g})": multistep(p, c, grid)
              for p in (2, 3) for c in ("none", "unipc") for g, grid in CANDIDATE_GRIDS.items()}
CANDIDATES.update({  # UniPC's own predictor: UniP-3 then UniC-3, B(h) = expm1(-h) or -h
    f"unip+unic{'' if b == 'bh2' else ' bh1'} 3 ({g})": multistep(
        3, "unipc", grid, predictor="unip", unipc_variant=b)
    for b in ("bh2", "bh1") for g, grid in CANDIDATE_GRIDS.items()})


def default_sampler(sde: SDE, score: Callable, x_T: torch.Tensor, k: int) -> torch.Tensor:
    return solvers.dpm_solver_multistep(sde, score, x_T, steps=k, t_eps=T_EPS, **DEFAULT).x


def family_mixture(i: int, seed_base: int = HELD_OUT) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed_base + i)
    u = torch.rand(5, generator=g, dtype=torch.float64)
    dim = int(round(math.exp(math.log(2) + u[0].item() * math.log(32))))
    k = 2 + int(u[1].item() * 7)
    sep = 0.5 + 2.5 * u[2].item()
    weights = -torch.log(torch.rand(k, generator=g, dtype=torch.float64))  # Dirichlet(1)
    means = sep * torch.randn(k, dim, generator=g, dtype=torch.float64)
    stds = 0.1 + 0.5 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, weights / weights.sum())


def evaluate(gm: GaussianMixture, sde: SDE, n: int, seed: int, ours: dict[str, Sampler]
             ) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """sampler -> per NFE, (per-sample err (n,), per-sample mode flip (n,)) on one mixture, for
    `ours` and the peers (diffusers, k-diffusion)."""
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

    rows = {label: judged([run(sde, score, x_T, k) for k in NFES], False)
            for label, run in ours.items()}
    for label, (cls, cfg) in PEERS.items():
        rows[label] = judged([diffusers_sampler(cls, sde, score, x_T, k, **cfg)[0] for k in NFES],
                             cfg.get("final_sigmas_type", "zero") == "zero")
    for label in KDIFFUSION:
        rows[label] = judged([kdiffusion.sample(label, sde, score, x_T, k, T_EPS)[0]
                              for k in NFES], "sigma_min" not in label)
    return rows


def pooled(sde: SDE, mixtures: int, n: int, seed_base: int, ours: dict[str, Sampler]
           ) -> tuple[list[int], dict[str, list[tuple[float, float, float]]]]:
    """The mixtures' dimensions, and sampler -> per NFE (median err, RMS err, flip fraction) over
    every sample of every mixture."""
    parts: dict[str, list[list[tuple[torch.Tensor, torch.Tensor]]]] = {}
    dims = []
    for i in range(mixtures):
        gm = family_mixture(i, seed_base)
        dims.append(gm.means.shape[1])
        for label, cells in evaluate(gm, sde, n, i, ours).items():
            for j, cell in enumerate(cells):
                parts.setdefault(label, [[] for _ in NFES])[j].append(cell)
    stats = {}
    for label, per_nfe in parts.items():
        stats[label] = []
        for cell in per_nfe:
            e, f = torch.cat([c[0] for c in cell]), torch.cat([c[1] for c in cell])
            stats[label].append((e.median().item(), e.pow(2).mean().sqrt().item(), f.mean().item()))
    return dims, stats


def ratios(stats: dict[str, list[tuple[float, float, float]]], label: str
           ) -> list[tuple[float, float]]:
    """Per NFE, (median err, RMS err) of `label` over the best peer's (each its own best)."""
    best = [(min(stats[p][j][0] for p in PEER_LABELS), min(stats[p][j][1] for p in PEER_LABELS))
            for j in range(len(NFES))]
    return [(m / bm, r / br) for (m, r, _), (bm, br) in zip(stats[label], best)]


def score(stats: dict[str, list[tuple[float, float, float]]], label: str) -> tuple[int, float]:
    """(cells within the goal: median and RMS ratios to the best peer <= 0.7, over NFE; the worst
    ratio, max over NFE of max(median ratio, RMS ratio))."""
    cells = ratios(stats, label)
    return sum(v <= 0.7 for pair in cells for v in pair), max(max(pair) for pair in cells)


def print_table(stats: dict[str, list[tuple[float, float, float]]]) -> None:
    print("| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for label, cells in stats.items():
        print(f"| {label} | " + " | ".join(f"{m:.1e} / {r:.1e} / {f:.4f}" for m, r, f in cells)
              + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=8)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed-base", type=int, default=HELD_OUT,
                        help=f"mixture i is drawn from seed seed_base + i ({HELD_OUT}: held out)")
    parser.add_argument("--select", action="store_true",
                        help=f"rank the CANDIDATES instead (on other seeds, e.g. {SELECTION})")
    parser.add_argument("--also", default="", help="comma-separated CANDIDATES to add as rows")
    args = parser.parse_args()
    if args.select and args.seed_base == HELD_OUT:
        raise ValueError(f"--select must not see the held-out seeds: pass --seed-base {SELECTION}")
    extra = [name for name in args.also.split(",") if name]
    if unknown := [name for name in extra if name not in CANDIDATES]:
        raise ValueError(f"--also takes names from {list(CANDIDATES)}, got {unknown}")
    ours = dict(CANDIDATES) if args.select else {
        "ours: " + ", ".join(f"{k}={v}" for k, v in DEFAULT.items()): default_sampler,
        **{name: CANDIDATES[name] for name in extra}}
    torch.set_num_threads(1)
    scores: dict[str, dict[str, tuple[int, float]]] = {}
    for name, sde in (("VP", VPSDE()), ("VE", VESDE())):
        dims, stats = pooled(sde, args.mixtures, args.n, args.seed_base, ours)
        print(f"\n### {name}: {args.mixtures} mixtures from seeds {args.seed_base}+ (D = {dims}), "
              f"n = {args.n} each; median err / RMS err / mode flips at NFE "
              + " / ".join(map(str, NFES)) + "\n")
        print_table(stats)
        print(f"\n{name}, ours / best peer, median / RMS at NFE " + " / ".join(map(str, NFES))
              + ":\n")
        for label in ours:
            scores.setdefault(label, {})[name] = score(stats, label)
            print(f"- {label}: " + ", ".join(f"{m:.2f} / {r:.2f}" for m, r in ratios(stats, label))
                  + f" ({scores[label][name][0]} of {2 * len(NFES)} <= 0.7)", flush=True)
    if args.select:
        print("\n### Selection: the most cells within the goal (median and RMS <= 0.7x the best peer's"
              " at each NFE, VP and VE), then the lowest worst ratio (max over NFE of max(median,"
              " RMS) / the best peer's)\n")
        print("| candidate | cells <= 0.7 | VP worst | VE worst |\n|---|---|---|---|")
        total = {label: (sum(v[0] for v in sc.values()), max(v[1] for v in sc.values()))
                 for label, sc in scores.items()}
        for label in sorted(total, key=lambda k: (-total[k][0], total[k][1])):
            sc = scores[label]
            print(f"| {label} | {total[label][0]} of {4 * len(NFES)} | {sc['VP'][1]:.2f} | "
                  f"{sc['VE'][1]:.2f} |")


if __name__ == "__main__":
    main()
