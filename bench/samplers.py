"""Samplers on the exact-score Gaussian mixture, against diffusers' schedulers and k-diffusion's
samplers on the same model.

    OMP_NUM_THREADS=1 python bench/samplers.py [--n 2000] [--dims 2,16] [--sdes vp,ve] [--quick]

Part 1, accuracy at NFE 5/10/20/50 on the VP (linear) and VE SDEs, from exact draws of p_T at T = 1
to t_eps = 1e-3, for mixtures in 2-D (3 components) and 16-D (4; --dims adds e.g. 64):
  ode_err  RMS over samples of ||x - x_ref|| / sqrt(d), x_ref the PF-ODE solution by dopri5 at
           rtol = atol = 1e-9 from the same x_T (deterministic samplers only);
  sw2      sliced 2-Wasserstein distance (64 random directions) between the n samples and 50 000
           fresh exact draws of p_t_eps (the n sorted projections against the draws' quantiles at
           levels (i + 1/2) / n); its noise floor, n exact draws (mean +- sd over 10 sets), is
           the "exact draws" row, and the deterministic samplers' limit the "PF-ODE reference" row.
diffusers sees the VP view of the SDE: y = x / s(t) with s = sqrt(alpha^2 + sigma^2) (s = 1 for VP),
alphas_cumprod[k] = alpha^2 / s^2 at t = (k + 1) / 1000 (so its timestep k is our t = (k + 1) / 1000
and its last sigma, alphas_cumprod[0], our t_eps), and eps(y, k) = -sigma(t) score(s y, t). The
PF-ODE in y is the PF-ODE in x, so the schedulers solve the same problem.
"pilot grid" rows use `solvers.tune_grid` on a pilot of N_PILOT other exact draws of p_T (another
seed), with Powell's search on the pilot for SEARCH_EVALS[NFE] sampler runs ("+ search"), and with
the model's evaluation times searched too ("shifted t", `shift=True`); the grid is judged on the n
evaluation draws, which it never saw; the tuning's seconds are printed per problem.
k-diffusion's samplers run as bench/kdiffusion.py says (EDM's variables, Karras sigmas, a last step
to noise 0, judged against the PF-ODE continued to noise 0 like diffusers' recommended rows; DPM
fast ends at t_eps). The summary table gives, per NFE, the best ode_err of ours and of the peers
(every diffusers and k-diffusion row) and their ratio, and the same for our fixed grids alone (no
pilot).
The per-step overhead of the loops is measured by bench/overhead.py.
"""

from __future__ import annotations

import argparse
import functools
import math
import platform
import time

import diffusers
import kdiffusion
import torch
import torchdiffeq
import torchsde

from score_sde import solvers
from score_sde.sde_lib import SDE, VESDE, VPSDE, GaussianMixture, append_dims

N_TRAIN, T_EPS, N_TRUE = 1000, 1e-3, 50_000
N_PILOT, SEARCH_EVALS = 1000, {5: 1000, 10: 1000, 20: 500}  # no search at other NFE


def mixture(dim: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(dim)
    k = 4 if dim > 2 else 3
    means = 2.0 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    stds = 0.2 + 0.4 * torch.rand(k, dim, generator=g, dtype=torch.float64)
    return GaussianMixture(means, stds, torch.arange(1, k + 1, dtype=torch.float64))


def exact_draw(gm, sde, n, t, g):
    x0 = gm.sample(n, generator=g)
    tt = torch.tensor(t, dtype=torch.float64)
    return sde.alpha(tt) * x0 + sde.sigma(tt) * torch.randn(x0.shape, generator=g,
                                                            dtype=torch.float64)


def sliced_w2(x, truth, n_dirs=64, seed=1):
    """Sliced W2 between samples x (n, d) and many exact draws `truth` (M, d), M >> n."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_dirs, generator=g, dtype=x.dtype)
    dirs = dirs / dirs.norm(dim=0)
    px = (x @ dirs).sort(0).values
    levels = (torch.arange(x.shape[0], dtype=x.dtype) + 0.5) / x.shape[0]
    py = torch.quantile(truth @ dirs, levels, dim=0)
    return ((px - py) ** 2).mean().sqrt().item()


def vp_view(sde: SDE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffusers' discrete VP view of `sde` (module docstring) at its timesteps k, t = (k + 1) /
    N_TRAIN: (scale (N_TRAIN,) with x = scale * y, alphas_cumprod, betas), float64."""
    t_k = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    scale = (sde.alpha(t_k) ** 2 + sde.sigma(t_k) ** 2).sqrt()
    abar = (sde.alpha(t_k) / scale) ** 2
    return scale, abar, 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])


def diffusers_sampler(cls, sde: SDE, score, x_T, nfe, **config):
    """Run a diffusers scheduler on the VP view of `sde` (module docstring); returns (x, NFE)."""
    scale, abar, betas = vp_view(sde)
    sched = cls(num_train_timesteps=N_TRAIN, trained_betas=betas.numpy(), **config)
    sched.alphas_cumprod = abar.to(torch.float64)
    if hasattr(sched, "alpha_t"):  # DPM-Solver / UniPC cache alpha_t, sigma_t, lambda_t
        sched.alpha_t, sched.sigma_t = abar.sqrt(), (1 - abar).sqrt()
        sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
    sched.set_timesteps(nfe)
    y, calls = x_T / scale[-1], 0
    for k in sched.timesteps.tolist():
        t = torch.full((y.shape[0],), (k + 1) / N_TRAIN, dtype=y.dtype)
        eps = -append_dims(sde.sigma(t), y.ndim) * score(scale[k] * y, t)
        calls += 1
        y = sched.step(eps, k, y).prev_sample
    final_zero = config.get("final_sigmas_type", "zero") == "zero"  # diffusers' default
    return (y if final_zero else scale[0] * y), calls  # sigma 0 is t = 0 of the VP view: s = 1


OURS_ODE = {  # name: sampler(sde, score, x_T, nfe) -> SampleResult or None (NFE not reachable)
    "pf euler": lambda s, f, x, k: solvers.probability_flow(s, f, x, method="euler", steps=k),
    "ddim (uniform t)": lambda s, f, x, k: solvers.ddim(s, f, x, steps=k),
    "dpm++ 2M (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_multistep(s, f, x, order=2,
                                                                              steps=k),
    "dpm++ 3M (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_multistep(s, f, x, order=3,
                                                                              steps=k),
    "dpm++ 2S (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_singlestep(s, f, x, order=2,
                                                                               steps=k // 2),
    "dpm++ 3S (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_singlestep(
        s, f, x, order=3, steps=max(k // 3, 1)),
    "heun (Karras grid)": lambda s, f, x, k: solvers.heun(s, f, x, steps=k // 2),
    "unipc 2 (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_multistep(
        s, f, x, order=2, steps=k, corrector="unipc"),
    "unipc 3 (log-SNR grid)": lambda s, f, x, k: solvers.dpm_solver_multistep(
        s, f, x, order=3, steps=k, corrector="unipc"),
    "unipc 3 (uniform t)": lambda s, f, x, k: solvers.dpm_solver_multistep(
        s, f, x, order=3, steps=k, corrector="unipc", grid="uniform"),
    "unipc 3 (log-SNR window)": lambda s, f, x, k: solvers.dpm_solver_multistep(
        s, f, x, order=3, steps=k, corrector="unipc", grid="log_snr_window"),
    "dpm++ 3M (log-SNR window)": lambda s, f, x, k: solvers.dpm_solver_multistep(
        s, f, x, order=3, steps=k, grid="log_snr_window"),
}
PEERS = {
    "diffusers DDIM (trailing)": (diffusers.DDIMScheduler, dict(
        set_alpha_to_one=False, clip_sample=False, timestep_spacing="trailing")),
    "diffusers DPM-Solver++ 2M": (diffusers.DPMSolverMultistepScheduler, dict(
        solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min")),
    "diffusers DPM-Solver++ 3M": (diffusers.DPMSolverMultistepScheduler, dict(
        solver_order=3, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min")),
    "diffusers UniPC (bh2)": (diffusers.UniPCMultistepScheduler, dict(
        solver_order=2, final_sigmas_type="sigma_min")),
    "diffusers UniPC-3 (bh2)": (diffusers.UniPCMultistepScheduler, dict(
        solver_order=3, final_sigmas_type="sigma_min")),
}
# diffusers' recommended configurations (their defaults and docs): the last step to sigma = 0
# (final_sigmas_type="zero", a denoising step), lower_order_final=True, and for Karras / lu spacing
# euler_at_final=True; judged against the PF-ODE's limit at noise 0 (`ode_limit`), not at t_eps.
RECOMMENDED = {
    f"diffusers DPM-Solver++ {order}M ({label}, final sigma 0)": (
        diffusers.DPMSolverMultistepScheduler, dict(
            solver_order=order, algorithm_type="dpmsolver++", lower_order_final=True, **extra))
    for order in (2, 3)
    for label, extra in (("linspace", {}),
                         ("Karras", dict(use_karras_sigmas=True, euler_at_final=True)),
                         ("lu", dict(use_lu_lambdas=True, euler_at_final=True)))
} | {
    f"diffusers UniPC-{order} (bh2, final sigma 0)": (diffusers.UniPCMultistepScheduler, dict(
        solver_order=order, lower_order_final=True))
    for order in (2, 3)
}


class _NoiseLevel:
    """The mixture noised by N(0, s^2 I) at "time" s (alpha = 1, sigma = s), for its score."""

    T = 1.0

    def alpha(self, s):
        return torch.ones_like(s)

    def sigma(self, s):
        return s


def ode_limit(gm: GaussianMixture, sde: SDE, x: torch.Tensor, t: float) -> torch.Tensor:
    """The PF-ODE continued from x at time t to noise 0: in z = x / alpha(t) the ODE is
    dz/ds = -s grad log p^(s)(z) with p^(s) the mixture convolved with N(0, s^2 I), from
    s = sigma(t) / alpha(t) to 0 (dopri5, rtol = atol = 1e-9)."""
    tt = torch.tensor(t, dtype=torch.float64)
    s0 = (sde.sigma(tt) / sde.alpha(tt)).item()
    level = _NoiseLevel()

    def f(u, z):  # u = s0 - s runs forward from 0 to s0
        s = (s0 - u).clamp(0.0, s0)
        return s * gm.score(z, s.expand(z.shape[0]), level)

    ends = torch.tensor([0.0, s0], dtype=torch.float64)
    return torchdiffeq.odeint(f, x / sde.alpha(tt), ends, rtol=1e-9, atol=1e-9)[-1]


def accuracy_table(sde: SDE, dim: int, n: int, nfes: list[int], seed: int = 0,
                   peers_only: bool = False):
    """Rows (name, cells) of ode_err / sw2, and the best ode_err per NFE of ours and of the peers
    (peers_only: the peers' rows alone, diffusers' recommended configurations included)."""
    gm = mixture(dim)

    def score(x, t):
        return gm.score(x, t, sde)

    g = torch.Generator().manual_seed(seed)
    x_T = exact_draw(gm, sde, n, 1.0, g)
    truth = exact_draw(gm, sde, N_TRUE, T_EPS, g)
    ref = solvers.probability_flow(sde, score, x_T, rtol=1e-9, atol=1e-9, t_eps=T_EPS).x
    stochastic = {
        "euler_maruyama": lambda k: solvers.euler_maruyama(sde, score, x_T, steps=k, generator=g),
        "ddpm_ancestral": lambda k: solvers.ddpm_ancestral(sde, score, x_T, steps=k, generator=g),
    }
    pilot = exact_draw(gm, sde, N_PILOT, 1.0, torch.Generator().manual_seed(seed + 1))
    rows, best = [], {kind: [math.inf] * len(nfes) for kind in ("ours", "fixed", "peers")}

    def row(name, results, kind=None, target=ref):
        cells = []
        for j, (x, nfe) in enumerate(results):
            if x is None:
                cells.append("—")
                continue
            sw = sliced_w2(x, truth)
            cell = f"{sw:.3f}"
            if kind is not None:
                err = ((x - target).norm(dim=1) / math.sqrt(dim)).pow(2).mean().sqrt().item()
                cell = f"{err:.1e} / {cell}"
                if nfe <= nfes[j]:
                    for k in ("ours", "fixed") if kind == "fixed" else (kind,):
                        best[k][j] = min(best[k][j], err)
            else:
                cell = "— / " + cell
            cells.append(cell + ("" if nfe == nfes[j] else f" ({nfe})"))
        rows.append((name, cells))

    def results_of(run):
        out = []
        for k in nfes:
            r = run(k)
            out.append((None, k) if r is None else (r.x, r.nfe))
        return out

    tuning_s = 0.0
    for name, run in ({} if peers_only else stochastic).items():
        row(name, results_of(run))
    for name, run in ({} if peers_only else OURS_ODE).items():
        row(name, results_of(lambda k, run=run: run(sde, score, x_T, k)), "fixed")
    unipc3 = functools.partial(solvers.dpm_solver_multistep, order=3, corrector="unipc")
    start = time.perf_counter()
    for name, evals, shift in () if peers_only else (
            ("unipc 3 (pilot grid)", {}, False),
            ("unipc 3 (pilot grid + search)", SEARCH_EVALS, False),
            ("unipc 3 (pilot grid + search, shifted t)", SEARCH_EVALS, True)):
        row(name, results_of(lambda k, evals=evals, shift=shift: None if shift and k not in evals
                             else unipc3(sde, score, x_T, **solvers.tune_grid(
                                 sde, score, pilot, k, search_evals=evals.get(k, 0),
                                 shift=shift).kwargs)), "ours")
    tuning_s = time.perf_counter() - start
    for name, (cls, cfg) in PEERS.items():
        row(name, [diffusers_sampler(cls, sde, score, x_T, k, **cfg) for k in nfes], "peers")
    limit = ode_limit(gm, sde, ref, T_EPS)
    for name in kdiffusion.SAMPLERS if kdiffusion.installed() else ():
        row(name, [kdiffusion.sample(name, sde, score, x_T, k, T_EPS) for k in nfes], "peers",
            target=ref if "sigma_min" in name else limit)
    if peers_only:
        for name, (cls, cfg) in RECOMMENDED.items():
            row(name, [diffusers_sampler(cls, sde, score, x_T, k, **cfg) for k in nfes],
                "peers", target=limit)
    row("PF-ODE reference (dopri5, 1e-9)", [(ref, k) for k in nfes])
    floor = torch.tensor([sliced_w2(exact_draw(gm, sde, n, T_EPS, g), truth) for _ in range(10)])
    rows.append(("exact draws (noise floor: mean +- sd of 10)",
                 [f"— / {floor.mean():.3f} +- {floor.std():.3f}"] * len(nfes)))
    return rows, best, tuning_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per run")
    parser.add_argument("--dims", default="2,16", help="mixture dimensions, comma-separated")
    parser.add_argument("--sdes", default="vp,ve", help="SDEs, comma-separated: vp, ve")
    parser.add_argument("--quick", action="store_true", help="2-D VP only, NFE 10 and 50")
    parser.add_argument("--peers-only", action="store_true",
                        help="the peers' rows only, with diffusers' recommended configurations")
    args = parser.parse_args()
    torch.set_num_threads(1)
    nfes = [10, 50] if args.quick else [5, 10, 20, 50]
    dims = [2] if args.quick else [int(d) for d in args.dims.split(",")]
    sdes = {"vp": VPSDE, "ve": VESDE}
    names = ["vp"] if args.quick else args.sdes.split(",")
    print(f"# machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, diffusers {diffusers.__version__}, k-diffusion "
          f"{kdiffusion.version()}, torchsde {torchsde.__version__}, 1 thread; n = {args.n}\n")
    summary = []
    for name in names:
        for dim in dims:
            title = f"{name.upper()}, {dim}-D mixture"
            rows, best, tuning_s = accuracy_table(sdes[name](), dim, args.n, nfes,
                                                  peers_only=args.peers_only)
            print(f"## {title}: ode_err / sw2 at NFE " + " / ".join(map(str, nfes))
                  + f" (pilot grids: {tuning_s:.0f} s for the three rows, sampling included)")
            print("| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
            print("|---|" + "---|" * len(nfes))
            for row_name, cells in rows:
                print(f"| {row_name} | " + " | ".join(cells) + " |")
            print()
            summary.append((title, best))
    for kind, what in () if args.peers_only else (
            ("ours", "ours"), ("fixed", "ours on fixed grids (no pilot)")):
        print(f"## best ode_err of {what} / best of the peers (ratio) at NFE "
              + " / ".join(map(str, nfes)))
        print("| problem | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for title, best in summary:
            print(f"| {title} | " + " | ".join(f"{o:.1e} / {d:.1e} ({o / d:.2f})" for o, d in
                                               zip(best[kind], best["peers"])) + " |")
        print()


if __name__ == "__main__":
    main()
