"""Samplers on the exact-score Gaussian mixture, against diffusers' schedulers on the same eps model.

    OMP_NUM_THREADS=1 python bench/samplers.py [--n 4000] [--quick]

Part 1, accuracy at NFE 5/10/20/50 on a linear VP SDE, from exact draws of p_T at T = 1 to
t_eps = 1e-3, for a 2-D and a 64-D mixture:
  ode_err  RMS over samples of ||x - x_ref|| / sqrt(d), x_ref the PF-ODE solution by dopri5 at
           rtol = atol = 1e-9 from the same x_T (deterministic samplers only);
  sw2      sliced 2-Wasserstein distance (64 random directions) to fresh exact draws of p_t_eps;
           its noise floor (exact draws against exact draws) is printed as "exact draws", and
           that of the deterministic samplers' limit as "PF-ODE reference".
diffusers gets alphas_cumprod[k] = alpha((k + 1) / 1000)^2 from our SDE (so its timestep k is our
t = (k + 1) / 1000 and its last sigma, alphas_cumprod[0], is our t_eps), and the eps model
eps(x, k) = -sigma(t) score(x, t).
Part 2, per-step overhead: microseconds per step with a trivial score (-x), batch 1000 x 2,
float32, 1000 steps, best of 3, for our loops, torchsde.sdeint and diffusers' step.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import diffusers
import torch
import torchsde

import solvers
from sde_lib import VPSDE, GaussianMixture
from solvers import grids

N_TRAIN, T_EPS = 1000, 1e-3


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


def sliced_w2(x, y, g, n_dirs=64):
    dirs = torch.randn(x.shape[1], n_dirs, generator=g, dtype=x.dtype)
    dirs = dirs / dirs.norm(dim=0)
    px, py = (x @ dirs).sort(0).values, (y @ dirs).sort(0).values
    return ((px - py) ** 2).mean().sqrt().item()


def diffusers_sampler(cls, sde, score, x_T, nfe, **config):
    t_k = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    abar = sde.alpha(t_k) ** 2
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    sched = cls(num_train_timesteps=N_TRAIN, trained_betas=betas.numpy(), **config)
    sched.alphas_cumprod = abar.to(torch.float64)
    if hasattr(sched, "alpha_t"):  # DPM-Solver / UniPC cache alpha_t, sigma_t, lambda_t
        sched.alpha_t, sched.sigma_t = abar.sqrt(), (1 - abar).sqrt()
        sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)
    sched.set_timesteps(nfe)
    x, calls = x_T, 0
    for k in sched.timesteps.tolist():
        t = torch.full((x.shape[0],), (k + 1) / N_TRAIN, dtype=x.dtype)
        eps = -sde.sigma(t)[:, None] * score(x, t)
        calls += 1
        x = sched.step(eps, k, x).prev_sample
    return x, calls


def accuracy_table(dim, n, nfes, seed=0):
    sde, gm = VPSDE(), mixture(dim)

    def score(x, t):
        return gm.score(x, t, sde)

    g = torch.Generator().manual_seed(seed)
    x_T = exact_draw(gm, sde, n, 1.0, g)
    target = exact_draw(gm, sde, n, T_EPS, g)
    ref = solvers.probability_flow(sde, score, x_T, rtol=1e-9, atol=1e-9, t_eps=T_EPS).x

    def trailing(nfe):  # diffusers' DDIM "trailing" timesteps, then alphas_cumprod[0]
        return torch.cat([grids.ddpm_subsequence(sde, nfe, spacing="trailing")[:-1],
                          torch.tensor([T_EPS], dtype=torch.float64)])

    ours = {
        "euler_maruyama": (False, lambda k: solvers.euler_maruyama(sde, score, x_T, steps=k,
                                                                   generator=g)),
        "pc (rd + langevin)": (False, lambda k: solvers.predictor_corrector(
            sde, score, x_T, steps=max(k // 2, 1), snr=0.1, generator=g)),
        "ddpm_ancestral": (False, lambda k: solvers.ddpm_ancestral(
            sde, score, x_T, ts=grids.uniform(sde, k), generator=g)),
        "ddim eta=1": (False, lambda k: solvers.ddim(sde, score, x_T, steps=k, eta=1.0,
                                                     generator=g)),
        "torchsde euler": (False, lambda k: solvers.torchsde_reverse(
            sde, score, x_T, steps=k - 1, generator=g)),
        "pf euler": (True, lambda k: solvers.probability_flow(sde, score, x_T, method="euler",
                                                              steps=k)),
        "pf rk4 (log-SNR grid)": (True, lambda k: solvers.probability_flow(
            sde, score, x_T, method="rk4", steps=k // 4, grid="log_snr") if k >= 4 else None),
        "ddim (uniform t)": (True, lambda k: solvers.ddim(sde, score, x_T, steps=k)),
        "ddim (log-SNR grid)": (True, lambda k: solvers.ddim(sde, score, x_T, steps=k,
                                                             grid="log_snr")),
        "ddim (trailing, = diffusers grid)": (True, lambda k: solvers.ddim(sde, score, x_T,
                                                                           ts=trailing(k))),
        "dpm++ 2M (log-SNR grid)": (True, lambda k: solvers.dpm_solver_multistep(
            sde, score, x_T, order=2, steps=k)),
        "dpm++ 3M (log-SNR grid)": (True, lambda k: solvers.dpm_solver_multistep(
            sde, score, x_T, order=3, steps=k)),
        "dpm++ 2S (log-SNR grid)": (True, lambda k: solvers.dpm_solver_singlestep(
            sde, score, x_T, order=2, steps=k // 2)),
        "dpm++ 3S (log-SNR grid)": (True, lambda k: solvers.dpm_solver_singlestep(
            sde, score, x_T, order=3, steps=max(k // 3, 1))),
        "heun (Karras grid)": (True, lambda k: solvers.heun(sde, score, x_T, steps=k // 2)),
    }
    peers = {
        "diffusers DDIM (trailing)": (diffusers.DDIMScheduler, dict(
            set_alpha_to_one=False, clip_sample=False, timestep_spacing="trailing")),
        "diffusers DPM-Solver++ 2M": (diffusers.DPMSolverMultistepScheduler, dict(
            solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min")),
        "diffusers DPM-Solver++ 3M": (diffusers.DPMSolverMultistepScheduler, dict(
            solver_order=3, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min")),
        "diffusers UniPC (bh2)": (diffusers.UniPCMultistepScheduler, dict(
            solver_order=2, final_sigmas_type="sigma_min")),
    }
    rows = []

    def row(name, deterministic, results):
        cells = []
        for x, nfe in results:
            if x is None:
                cells.append("—")
                continue
            err = ((x - ref).norm(dim=1) / math.sqrt(dim)).pow(2).mean().sqrt().item()
            sw = sliced_w2(x, target, torch.Generator().manual_seed(1))
            cells.append((f"{err:.1e} / " if deterministic else "— / ") + f"{sw:.3f}"
                         + ("" if nfe in nfes else f" ({nfe})"))
        rows.append((name, cells))

    for name, (det, run) in ours.items():
        results = []
        for k in nfes:
            r = run(k)
            results.append((None, k) if r is None else (r.x, r.nfe))
        row(name, det, results)
    for name, (cls, cfg) in peers.items():
        row(name, True, [diffusers_sampler(cls, sde, score, x_T, k, **cfg) for k in nfes])
    row("PF-ODE reference (dopri5, 1e-9)", True, [(ref, k) for k in nfes])
    floor = sliced_w2(exact_draw(gm, sde, n, T_EPS, g), target, torch.Generator().manual_seed(1))
    rows.append(("exact draws (noise floor)", [f"— / {floor:.3f}"] * len(nfes)))
    return rows


def overhead_table(steps=1000, repeats=3):
    sde = VPSDE()
    x_T = torch.randn(1000, 2)

    def score(x, t):
        return -x

    def best(fn):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) / steps * 1e6

    def diffusers_loop(cls, **cfg):
        sched = cls(num_train_timesteps=N_TRAIN, **cfg)
        sched.set_timesteps(steps)
        x = x_T
        for k in sched.timesteps.tolist():
            x = sched.step(-x, k, x).prev_sample

    class Forward(torch.nn.Module):  # the forward VP SDE, straight to torchsde
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -y

        def g(self, t, y):
            return torch.ones_like(y)

    def torchsde_plain():
        bm = torchsde.BrownianInterval(-1.0, -T_EPS, (1000, 2))
        solvers.torchsde_reverse(sde, score, x_T, steps=steps, bm=bm)

    return [
        ("solvers.euler_maruyama", best(lambda: solvers.euler_maruyama(sde, score, x_T,
                                                                       steps=steps))),
        ("solvers.ddim (eta=0)", best(lambda: solvers.ddim(sde, score, x_T, steps=steps))),
        ("solvers.ddpm_ancestral", best(lambda: solvers.ddpm_ancestral(sde, score, x_T,
                                                                       steps=steps))),
        ("solvers.predictor_corrector (per NFE)", best(lambda: solvers.predictor_corrector(
            sde, score, x_T, steps=steps // 2)) / 2),
        ("solvers.probability_flow euler (torchdiffeq)", best(lambda: solvers.probability_flow(
            sde, score, x_T, method="euler", steps=steps))),
        ("solvers.torchsde_reverse euler, seeded path", best(lambda: solvers.torchsde_reverse(
            sde, score, x_T, steps=steps, entropy=0))),
        ("solvers.torchsde_reverse euler, plain BrownianInterval", best(torchsde_plain)),
        ("torchsde.sdeint euler, bare forward SDE", best(lambda: torchsde.sdeint(
            Forward(), x_T, torch.tensor([0.0, 1.0]), dt=1 / steps * (1 + 1e-9)))),
        ("diffusers DDIMScheduler.step", best(lambda: diffusers_loop(diffusers.DDIMScheduler))),
        ("diffusers DPMSolverMultistepScheduler.step (2M)", best(lambda: diffusers_loop(
            diffusers.DPMSolverMultistepScheduler))),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="samples per run")
    parser.add_argument("--quick", action="store_true", help="2-D only, NFE 10 and 50")
    args = parser.parse_args()
    torch.set_num_threads(1)
    nfes = [10, 50] if args.quick else [5, 10, 20, 50]
    print(f"# machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, diffusers {diffusers.__version__}, torchsde "
          f"{torchsde.__version__}, 1 thread; n = {args.n}\n")
    for dim in ([2] if args.quick else [2, 64]):
        print(f"## VP, {dim}-D mixture: ode_err / sw2 at NFE " + " / ".join(map(str, nfes)))
        print("| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for name, cells in accuracy_table(dim, args.n, nfes):
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()
    print("## per-step overhead, trivial score, batch 1000 x 2 float32, 1000 steps")
    print("| loop | us / step |\n|---|---|")
    for name, us in overhead_table():
        print(f"| {name} | {us:.0f} |")


if __name__ == "__main__":
    main()
