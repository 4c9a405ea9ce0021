"""Benchmark: the likelihood's per-point error against CPU time, ours beside score_sde_pytorch's
method, on Gaussian mixtures whose exact score and exact log p_T are known.

    OMP_NUM_THREADS=1 python bench/likelihood.py --dims 64 --sde vp --repeats 3
    OMP_NUM_THREADS=1 python bench/likelihood.py --dims 3072 --sde vp --repeats 3
    OMP_NUM_THREADS=1 python bench/likelihood.py --run <digits-vp run folder> --reference ref.pt

--run measures a trained model instead (a `score-sde train experiment=digits-vp` run): 16 test
digits, dequantized once, scored under the run's SDE and score model with the N(0, I) prior; its
truth is the exact divergence in float64 at rtol = atol = 1e-5 (ours: no closed form exists; on
the 64-D mixture the same solve misses the closed form by 1.4e-4 nats per point), kept in the
file --reference names (a tensor, read back with weights_only) for the next run.

Every method gets the same data (float32), the same exact score function, the same exact log p_T
as the prior and t_eps = 1e-5, and is run at each of its tolerances (rtol = atol):
    score_sde RK45 P=k  score_sde_pytorch's `likelihood.get_likelihood_fn`, reimplemented: the
                        whole batch and one log-density per sample as one flat numpy vector,
                        scipy.integrate.solve_ivp(method="RK45"), so scipy's RMS error norm over
                        that vector; torch <-> numpy on every evaluation; the drift and the
                        Hutchinson divergence from two separate score evaluations; its probes
                        (Rademacher) drawn once and fixed (k = 1 is score_sde_pytorch; k > 1
                        averages k vector-Jacobian products, the same code otherwise)
    k-diffusion dopri5 P=1
                        k-diffusion's own `sampling.log_likelihood` (bench/kdiffusion.py): torchdiffeq
                        dopri5 in sigma / alpha on x / alpha with rtol = atol, one Rademacher
                        probe fixed through the solve, drift and divergence from one evaluation;
                        its N(0, sigma_max^2) prior swapped for the exact log p_T
    ours hutch P=k fixed <c>
                        solvers.log_likelihood(divergence="hutchinson", probes=k,
                        error_control=c, error_bars=False): probes held through the solve as
                        score_sde's (the default); "batch" is the flat RMS norm above,
                        "per_sample" ours; "+ error bars" also integrates the probes'
                        per-coordinate terms for `stderr` / `interval` (score_sde has none)
    ours hutch P=k redrawn <c>
                        the same with redraw_probes=True: probes redrawn at every evaluation, the
                        tolerance bounding their noise too; `stderr` / `interval` come free
    ours exact <dtype>  solvers.log_likelihood(divergence="exact", state_dtype=dtype)
    ours unipc ...      solvers.log_likelihood(method="unipc", steps=n): a fixed grid of n steps
                        uniform in log-SNR, n + 1 evaluations, no tolerance (the "rtol = atol /
                        steps" column gives n); Hutchinson with probes redrawn at every node, or
                        the exact divergence
"err" is |nll - (-log p_{t_eps}(x))| per point against the float64 closed form: solver plus
estimator error. Time is process CPU time (time.process_time, so other jobs on a shared machine do
not count), the median over `repeats` rounds that run every configuration once in turn
(interleaved), after one warm-up round. The front table gives, at each error level score_sde's
or k-diffusion's method reaches (then at levels below their best), the cheapest configuration of
each side whose mean per-point error is at or below it.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import kdiffusion
import numpy as np
import torch
from scipy.integrate import solve_ivp

from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture
from score_sde.solvers.likelihood import log_likelihood

T_EPS = 1e-5
SHAPES = {2: (2,), 64: (1, 8, 8), 3072: (3, 32, 32)}
BATCH = {2: 64, 64: 32, 3072: 8}
LEVELS = (1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3)
PEER_SIDES = ("score_sde", "k-diffusion")
Run = Callable[[], tuple[torch.Tensor, int]]


def make_problem(dim: int, sde: SDE):
    """(mixture in float32, data x (B, *D) float32, exact -log p_{t_eps}(x) in float64)."""
    g = torch.Generator().manual_seed(dim)
    shape, k = SHAPES[dim], (3 if dim == 2 else 4)
    spread, width = (1.5, 0.5) if dim == 2 else (0.5, 0.2)
    means = spread * (2 * torch.rand(k, *shape, generator=g, dtype=torch.float64) - 1)
    stds = width * (0.5 + torch.rand(k, *shape, generator=g, dtype=torch.float64))
    x = GaussianMixture(means, stds).sample(BATCH[dim], generator=g)
    exact = -GaussianMixture(means, stds).log_prob(x, T_EPS, sde)
    return GaussianMixture(means.float(), stds.float()), x.float(), exact


def trained_problem(run_dir: str, reference: str | None):
    """(sde, score_fn, prior_logp, x (16, 1, 8, 8) float32, reference -log p_{t_eps}(x) float64)
    for a trained digits run; the reference is ours, exact and tight (module doc)."""
    from score_sde.build import load_run
    from score_sde.data import digits
    from score_sde.solvers.likelihood import dequantize

    run = load_run(run_dir)
    model = run.model.eval().requires_grad_(False)
    x = dequantize(digits().test[:16], generator=torch.Generator().manual_seed(0))[0]
    if reference and Path(reference).exists():
        nll = torch.load(reference, weights_only=True)
    else:
        res = log_likelihood(run.sde, model, x, rtol=1e-5, atol=1e-5, t_eps=T_EPS,
                             state_dtype="float64")
        nll = res.nll.double()
        print(f"reference: exact divergence, float64 state, rtol = atol = 1e-5, {res.nfe} NFE",
              flush=True)
        if reference:
            torch.save(nll, reference)
    print(f"reference mean NLL {nll.mean().item():.4f} nats", flush=True)
    return run.sde, model, run.sde.prior_logp, x, nll


def score_sde_rk45(sde: SDE, score_fn, x: torch.Tensor, prior_logp, tol: float, probes: int
                   ) -> tuple[torch.Tensor, int]:
    """score_sde_pytorch's likelihood (module doc); returns (nll (B,), score evaluations)."""
    shape, b = x.shape, x.shape[0]
    g = torch.Generator().manual_seed(0)
    eps = torch.randint(0, 2, (probes, *shape), generator=g).to(x.dtype) * 2 - 1

    def drift_fn(y, t):
        return sde.probability_flow_drift(y, t, score_fn(y, t))

    def div_fn(y, t):
        with torch.enable_grad():
            y = y.detach().requires_grad_()
            drift = drift_fn(y, t)
            grads = [torch.autograd.grad(drift, y, e, retain_graph=k < probes - 1)[0] * e
                     for k, e in enumerate(eps)]
        return torch.stack(grads).flatten(2).sum(-1).mean(0)

    def ode_func(t, state):
        y = torch.from_numpy(state[:-b].reshape(shape)).to(x.dtype)
        vec_t = torch.full((b,), t, dtype=x.dtype)
        drift = drift_fn(y, vec_t).detach().numpy().reshape(-1)
        logp_grad = div_fn(y, vec_t).detach().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.numpy().reshape(-1), np.zeros(b)])
    sol = solve_ivp(ode_func, (T_EPS, sde.T), init, rtol=tol, atol=tol, method="RK45")
    zp = torch.from_numpy(sol.y[:, -1]).to(x.dtype)
    return -(prior_logp(zp[:-b].reshape(shape)) + zp[-b:]), 2 * sol.nfev


def kdiffusion_dopri5(sde: SDE, score_fn, x: torch.Tensor, prior_logp, tol: float
                      ) -> tuple[torch.Tensor, int]:
    """k-diffusion's `log_likelihood` with the exact prior (bench/kdiffusion.py), its probe drawn
    from torch's generator seeded 0; returns (nll (B,), score evaluations)."""
    torch.manual_seed(0)
    return kdiffusion.log_likelihood(sde, score_fn, x, T_EPS, tol, prior_logp)


def ours(sde: SDE, score_fn, x: torch.Tensor, prior_logp, setting: float, **kwargs
         ) -> tuple[torch.Tensor, int]:
    """solvers.log_likelihood with rtol = atol = setting, or steps = setting on the grid."""
    swept = ({"steps": int(setting)} if kwargs.get("method") == "unipc"
             else {"rtol": setting, "atol": setting})
    res = log_likelihood(sde, score_fn, x, t_eps=T_EPS, prior_logp=prior_logp,
                         generator=torch.Generator().manual_seed(0), **swept, **kwargs)
    return res.nll, res.nfe


def configurations(dim: int, probe_counts: list[int]) -> dict[str, tuple[str, Callable, dict]]:
    """name -> (side, method, settings without the tolerance or the grid's steps)."""
    out = ({"k-diffusion dopri5 P=1": ("k-diffusion", kdiffusion_dopri5, {})}
           if kdiffusion.installed() else {})
    for p in probe_counts:
        out[f"score_sde RK45 P={p}"] = ("score_sde", score_sde_rk45, {"probes": p})
        for control in ("batch", "per_sample"):
            out[f"ours hutch P={p} redrawn {control}"] = ("ours", ours, {
                "divergence": "hutchinson", "probes": p, "error_control": control,
                "redraw_probes": True})
            out[f"ours hutch P={p} fixed {control}"] = ("ours", ours, {
                "divergence": "hutchinson", "probes": p, "error_control": control,
                "redraw_probes": False, "error_bars": False})
        if p > 1:
            out[f"ours hutch P={p} fixed per_sample + error bars"] = ("ours", ours, {
                "divergence": "hutchinson", "probes": p, "redraw_probes": False})
        out[f"ours unipc P={p} redrawn"] = ("ours", ours, {
            "method": "unipc", "divergence": "hutchinson", "probes": p, "redraw_probes": True})
    if dim <= 64:
        for dtype in ("float32", "float64"):
            out[f"ours exact {dtype}"] = ("ours", ours, {"divergence": "exact",
                                                          "state_dtype": dtype})
        out["ours unipc exact float64"] = ("ours", ours, {"method": "unipc", "divergence": "exact",
                                                          "state_dtype": "float64"})
    return out


def problems(args):
    """(title, D, (sde, score_fn, prior_logp, x, exact)) for each problem asked for."""
    if args.run:
        yield (f"trained digits-vp run {args.run}, D = 64", 64,
               trained_problem(args.run, args.reference))
        return
    for name in args.sde:
        sde = VPSDE() if name == "vp" else VESDE(sigma_min=0.01, sigma_max=50.0)
        for dim in args.dims:
            gm, x, exact = make_problem(dim, sde)
            yield f"{name.upper()}, D = {dim}", dim, (
                sde, lambda y, t, gm=gm, sde=sde: gm.score(y, t, sde),
                lambda z, gm=gm, sde=sde: gm.log_prob(z, sde.T, sde), x, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[64], choices=SHAPES)
    parser.add_argument("--sde", nargs="+", default=["vp"], choices=["vp", "ve"])
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--hutch-tols", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4, 1e-5])
    parser.add_argument("--exact-tols", type=float, nargs="+", default=[1e-3, 1e-5, 1e-7])
    parser.add_argument("--grid-steps", type=int, nargs="+", default=[12, 16, 24, 32, 48, 64],
                        help="the steps of the unipc rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", help="a trained digits run folder (module doc) instead of mixtures")
    parser.add_argument("--reference", help="with --run: a file keeping the reference NLLs")
    parser.add_argument("--only", nargs="*", default=[],
                        help="run only the configurations whose name contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, float32 data and score, t_eps = {T_EPS}, "
          f"CPU seconds: median of {args.repeats} interleaved rounds")
    for title, dim, (sde, score_fn, prior_logp, x, exact) in problems(args):
        runs: dict[tuple[str, float], tuple[str, Run]] = {}
        for label, (side, method, kwargs) in configurations(dim, args.probes).items():
            if args.only and not any(part in label for part in args.only):
                continue
            tols = (args.grid_steps if "unipc" in label else
                    args.exact_tols if "exact" in label else args.hutch_tols)
            for tol in tols:
                runs[label, tol] = (side, functools.partial(
                    method, sde, score_fn, x, prior_logp, tol, **kwargs))
        times: dict[tuple[str, float], list[float]] = {key: [] for key in runs}
        results = {}
        for rnd in range(args.repeats + 1):  # round 0 warms up
            for key, (_, run) in runs.items():
                start = time.process_time()
                nll, nfe = run()
                if rnd:
                    times[key].append(time.process_time() - start)
                results[key] = ((nll.double() - exact).abs(), nfe)
        print(f"\n### {title}, B = {x.shape[0]}\n")
        print("| method | rtol = atol / steps | mean err (nats) | max err | score evals | CPU s |")
        print("|---|---|---|---|---|---|")
        rows = []
        for key, (side, _) in runs.items():
            err, nfe = results[key]
            sec = statistics.median(times[key])
            rows.append((side, key[0], key[1], err.mean().item(), sec))
            print(f"| {key[0]} | {setting(key[1])} | {err.mean().item():.2e} | "
                  f"{err.max().item():.2e} | {nfe} | {sec:.3f} |")
        print(f"\n### front, {title}\n")
        print_front(rows)


def setting(value: float) -> str:
    """A tolerance as 1e-03, a grid's steps as an integer."""
    return f"{value:.0e}" if value < 1 else f"{int(value)} steps"


def print_front(rows: list[tuple[str, str, float, float, float]]) -> None:
    """At each error level a peer reaches (the mean errors of score_sde's Pareto-optimal
    configurations, then k-diffusion's), then at LEVELS below the best of them: the cheapest
    configuration of each side whose mean per-point error is at or below the level, and ours' CPU
    time over each peer's. rows: (side, name, tol, mean err, CPU s)."""
    levels = []
    for peer in PEER_SIDES:
        ranked = sorted((r for r in rows if r[0] == peer), key=lambda r: r[4])
        levels += [r[3] for k, r in enumerate(ranked) if all(r[3] < q[3] for q in ranked[:k])]
    levels = sorted(set(levels), reverse=True)
    levels += [v for v in LEVELS if v < min(levels, default=float("inf"))]
    print("| level (nats) | " + " | ".join(PEER_SIDES) + " | ours | "
          + " | ".join(f"CPU ours / {peer}" for peer in PEER_SIDES) + " |")
    print("|---|" + "---|" * (2 * len(PEER_SIDES) + 1))
    for level in levels:
        best = {}
        for side in (*PEER_SIDES, "ours"):
            ok = [r for r in rows if r[0] == side and r[3] <= level]
            best[side] = min(ok, key=lambda r: r[4]) if ok else None
        if not any(best.values()):
            continue
        cells = [f"{r[1]} {setting(r[2])}: {r[4]:.3f} s" if r else "not reached"
                 for r in (*(best[p] for p in PEER_SIDES), best["ours"])]
        ratios = [f"{best['ours'][4] / best[p][4]:.2f}" if best["ours"] and best[p] else "-"
                  for p in PEER_SIDES]
        print(f"| {level:.3g} | " + " | ".join(cells + ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
