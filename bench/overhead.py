"""Per-step overhead of the samplers' loops against a plain-torch loop, diffusers' scheduler loop
and torchsde, measured side by side in one run.

    OMP_NUM_THREADS=1 python bench/overhead.py [--steps 200] [--repeats 5] [--device cpu]

A trivial score (score(x, t) = -x) on float32 batches of 1000 x 2 and 64 x 3 x 32 x 32, VP SDE,
`steps` steps from T to 1e-3; each cell is the best of `repeats` runs, in microseconds per score
evaluation (of the process's CPU time on the CPU, so that other jobs on a shared machine do not
count). The plain-torch loops are what one writes by hand with the step's coefficients
precomputed as Python floats (the reverse-SDE Euler-Maruyama step with one noise draw, and DDIM's
deterministic step): the floor a sampler's own bookkeeping is measured against. "/ plain" divides
each row by the plain loop of its kind (stochastic rows by the Euler-Maruyama loop, deterministic
ones by the DDIM loop). diffusers' schedulers run their own `step` on their own 1000-step
schedule; torchsde runs our reverse SDE through `sdeint` (Euler, with a plain BrownianInterval; the
seeded path of `torchsde_reverse`'s default costs 10-20x more, bench/README.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import diffusers
import torch
import torchsde

from score_sde import solvers
from score_sde.sde_lib import VPSDE

T_EPS = 1e-3
SHAPES = {"1000 x 2": (1000, 2), "64 x 3 x 32 x 32": (64, 3, 32, 32)}


def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x


def plain_loops(sde: VPSDE, steps: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The hand-written loops: coefficients as Python floats, one score call and the update
    (written with the SDE's public methods only, so that the script runs on older trees too)."""
    ts = torch.linspace(sde.T, T_EPS, steps + 1, dtype=torch.float64)
    f, g2, h = sde.drift_coef(ts[:-1]), sde.diffusion(ts[:-1]) ** 2, ts[:-1] - ts[1:]
    em = list(zip((1 - f * h).tolist(), (g2 * h).tolist(), torch.sqrt(g2 * h).tolist()))
    alpha, sigma = sde.alpha(ts), sde.sigma(ts)
    a_t, s_t, a_s, s_s = alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]
    ddim = list(zip((a_s / a_t).tolist(), (s_t * (a_s * s_t / a_t - s_s)).tolist()))

    def euler_maruyama(x):
        t = ts.to(x)
        for i, (c_x, c_s, c_z) in enumerate(em):
            x = c_x * x + c_s * score(x, t[i].expand(x.shape[0])) + c_z * torch.randn_like(x)
        return x

    def ddim_eta0(x):
        t = ts.to(x)
        for i, (c_x, c_s) in enumerate(ddim):
            x = c_x * x + c_s * score(x, t[i].expand(x.shape[0]))
        return x

    return {"plain torch loop, Euler-Maruyama": euler_maruyama, "plain torch loop, DDIM": ddim_eta0}


def diffusers_loop(cls, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x):
        sched = cls(num_train_timesteps=1000)
        sched.set_timesteps(steps)
        for k in sched.timesteps.tolist():
            x = sched.step(-x, k, x).prev_sample
        return x

    return run


def rows(sde: VPSDE, steps: int) -> list[tuple[str, str, int, Callable[[torch.Tensor], object]]]:
    """(name, kind, score evaluations, run(x_T)) per row; kind "sde" or "ode" picks the plain
    loop it is divided by."""
    plain = plain_loops(sde, steps)
    em_plain, ddim_plain = plain.values()

    def torchsde_plain(x):
        bm = torchsde.BrownianInterval(-sde.T, -T_EPS, (x.shape[0], x[0].numel()))
        return solvers.torchsde_reverse(sde, score, x, steps=steps, bm=bm)

    return [
        ("plain torch loop, Euler-Maruyama", "sde", steps, em_plain),
        ("solvers.euler_maruyama", "sde", steps,
         lambda x: solvers.euler_maruyama(sde, score, x, steps=steps)),
        ("solvers.ddpm_ancestral", "sde", steps,
         lambda x: solvers.ddpm_ancestral(sde, score, x, steps=steps)),
        ("solvers.predictor_corrector (1 corrector step)", "sde", 2 * steps,
         lambda x: solvers.predictor_corrector(sde, score, x, steps=steps)),
        ("plain torch loop, DDIM", "ode", steps, ddim_plain),
        ("solvers.ddim", "ode", steps, lambda x: solvers.ddim(sde, score, x, steps=steps)),
        ("solvers.dpm_solver_multistep (3M)", "ode", steps,
         lambda x: solvers.dpm_solver_multistep(sde, score, x, steps=steps, order=3)),
        ("solvers.dpm_solver_multistep (3M, unipc)", "ode", steps,
         lambda x: solvers.dpm_solver_multistep(sde, score, x, steps=steps, order=3,
                                                corrector="unipc")),
        ("solvers.heun", "ode", 2 * steps,
         lambda x: solvers.heun(sde, score, x, steps=steps)),
        ("solvers.probability_flow (torchdiffeq euler)", "ode", steps,
         lambda x: solvers.probability_flow(sde, score, x, method="euler", steps=steps)),
        ("diffusers DDIMScheduler.step", "ode", steps,
         diffusers_loop(diffusers.DDIMScheduler, steps)),
        ("diffusers DPMSolverMultistepScheduler.step (2M)", "ode", steps,
         diffusers_loop(diffusers.DPMSolverMultistepScheduler, steps)),
        ("solvers.torchsde_reverse (torchsde.sdeint euler, plain BrownianInterval)", "sde",
         steps + 1, torchsde_plain),
    ]


def best_us_per_eval(run: Callable, x: torch.Tensor, evals: int, repeats: int) -> float:
    """The best of `repeats` runs, per score evaluation: the process's CPU time on the CPU (what
    other jobs on a shared machine leave alone), wall-clock time with synchronisation on CUDA."""
    clock = time.perf_counter if x.is_cuda else time.process_time
    run(x)  # warm up
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = clock()
        run(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(clock() - start)
    return min(times) / evals * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sde = VPSDE()
    table = rows(sde, args.steps)
    cells = {}
    for label, shape in SHAPES.items():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(args.device)
        cells[label] = [best_us_per_eval(run, x, evals, args.repeats)
                        for _, _, evals, run in table]
    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, torchsde {torchsde.__version__}, device "
          f"{args.device}, 1 thread; {args.steps} steps, best of {args.repeats}\n")
    print("| loop | " + " | ".join(f"{label}: us / NFE | / plain" for label in SHAPES) + " |")
    print("|---|" + "---|---|" * len(SHAPES))
    plain_row = {kind: j for j, (name, kind, _, _) in enumerate(table) if name.startswith("plain")}
    for j, (name, kind, _, _) in enumerate(table):
        out = []
        for label in SHAPES:
            plain = cells[label][plain_row[kind]]
            us = cells[label][j]
            out.append(f"{us:.0f} | {us / plain:.2f}")
        print(f"| {name} | " + " | ".join(out) + " |")


if __name__ == "__main__":
    main()
