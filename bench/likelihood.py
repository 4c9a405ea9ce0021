"""Benchmark: exact log-likelihood through the probability-flow ODE, ours against two baselines.

    python bench/likelihood.py                 # 2-D, 64-D (1x8x8) and 3072-D (3x32x32), VP SDE
    python bench/likelihood.py --dims 2 64 --repeats 5 --dtype float64

Same inputs, same tolerances (rtol = atol = 1e-5, t_eps = 1e-5, dopri5 / RK45), one process:
    ours exact        solvers.log_likelihood(divergence="exact"): vmapped vector-Jacobian products
    ours hutch P=k    solvers.log_likelihood(divergence="hutchinson", probes=k)
    torchdiffeq loop  a plain torchdiffeq solve whose divergence is one autograd pass per dimension
    scipy RK45        score_sde_pytorch's approach: scipy.integrate.solve_ivp on a flat numpy state,
                      torch <-> numpy on every evaluation, one Hutchinson probe, and the velocity
                      and the divergence from two separate score evaluations
Data: a Gaussian mixture (3 components in 2-D, 4 otherwise), whose exact score is the score
function and whose exact log p_T is the prior for every method, so "err" is solver plus estimator
error against the closed form -log p_{t_eps}(x). NFE counts right-hand-side evaluations. Time is the
median wall time of the repeats after one warm-up; memory is the peak RSS above the pre-run level
(VmHWM reset through /proc/self/clear_refs; CUDA: max_memory_allocated). Exact divergence is skipped
in 3072-D (the loop would take 3072 backward passes per evaluation).
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers.likelihood import log_likelihood

T_EPS, TOL = 1e-5, 1e-5
SHAPES = {2: (2,), 64: (1, 8, 8), 3072: (3, 32, 32)}
BATCH = {2: 64, 64: 32, 3072: 8}


def make_problem(dim: int, dtype: torch.dtype, device: str):
    g = torch.Generator().manual_seed(dim)
    shape, k = SHAPES[dim], (3 if dim == 2 else 4)
    spread, width = (1.5, 0.5) if dim == 2 else (0.5, 0.2)
    means = spread * (2 * torch.rand(k, *shape, generator=g, dtype=torch.float64) - 1)
    stds = width * (0.5 + torch.rand(k, *shape, generator=g, dtype=torch.float64))
    x = GaussianMixture(means, stds).sample(BATCH[dim], generator=g).to(device)
    gm64 = GaussianMixture(means.to(device), stds.to(device))
    gm = GaussianMixture(means.to(device, dtype), stds.to(device, dtype))
    sde = VPSDE()
    exact = -gm64.log_prob(x, T_EPS, sde)  # float64 closed form at the data
    return sde, gm, x.to(dtype), exact


# -- the methods: each maps (sde, score_fn, x, prior_logp) to (nll (B,), nfe) -------------------
def ours(divergence: str, probes: int = 1):
    def run(sde, score_fn, x, prior_logp):
        res = log_likelihood(sde, score_fn, x, divergence=divergence, probes=probes, rtol=TOL,
                             atol=TOL, t_eps=T_EPS, prior_logp=prior_logp,
                             generator=torch.Generator(x.device).manual_seed(0))
        return res.nll, res.nfe
    return run


def torchdiffeq_loop(sde, score_fn, x, prior_logp):
    """The plain way: autograd of the velocity, one backward pass per dimension; default norm."""
    b, n, nfe = x.shape[0], x[0].numel(), 0

    def f(t, state):
        nonlocal nfe
        nfe += 1
        t = t.to(x.dtype).clamp(max=sde.T).expand(b)
        with torch.enable_grad():
            y = state[0].detach().requires_grad_()
            v = sde.probability_flow_drift(y, t, score_fn(y, t)).flatten(1)
            div = sum(torch.autograd.grad(v[:, i].sum(), y, retain_graph=i < n - 1)[0]
                      .flatten(1)[:, i] for i in range(n))
        return v.detach().view_as(y), div.detach()

    ts = torch.tensor([T_EPS, sde.T], dtype=x.dtype, device=x.device)
    xs, deltas = torchdiffeq.odeint(f, (x, x.new_zeros(b)), ts, rtol=TOL, atol=TOL,
                                    method="dopri5")
    return -(prior_logp(xs[-1]) + deltas[-1]), nfe


def scipy_rk45(sde, score_fn, x, prior_logp):
    """score_sde_pytorch's likelihood: flat numpy state, solve_ivp RK45, one fixed Rademacher
    probe, drift and Hutchinson divergence from two score evaluations."""
    shape, b = x.shape, x.shape[0]
    g = torch.Generator(x.device).manual_seed(0)
    eps = torch.randint(0, 2, shape, generator=g, device=x.device).to(x.dtype) * 2 - 1

    def drift_fn(y, t):
        return sde.probability_flow_drift(y, t, score_fn(y, t))

    def div_fn(y, t):
        with torch.enable_grad():
            y = y.detach().requires_grad_()
            fn_eps = torch.sum(drift_fn(y, t) * eps)
            grad = torch.autograd.grad(fn_eps, y)[0]
        return torch.sum(grad * eps, dim=tuple(range(1, y.ndim)))

    def ode_func(t, state):
        y = torch.from_numpy(state[:-b].reshape(shape)).to(x.device, x.dtype)
        vec_t = torch.full((b,), t, dtype=x.dtype, device=x.device)
        drift = drift_fn(y, vec_t).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(y, vec_t).detach().cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros(b)])
    sol = solve_ivp(ode_func, (T_EPS, sde.T), init, rtol=TOL, atol=TOL, method="RK45")
    zp = torch.from_numpy(sol.y[:, -1]).to(x.device, x.dtype)
    return -(prior_logp(zp[:-b].reshape(shape)) + zp[-b:]), sol.nfev


# -- measuring ----------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def measure(run: Callable, device: str, repeats: int) -> tuple[torch.Tensor, int, float, float]:
    """(nll, nfe, median seconds, peak MiB) of run(): a warm-up call, one call for the peak memory,
    then `repeats` timed calls."""
    run()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _status_mib("VmRSS")
    nll, nfe = run()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _status_mib("VmHWM") - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return nll, nfe, statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 3072], choices=SHAPES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    methods = {"ours exact": ours("exact"), "ours hutch P=1": ours("hutchinson"),
               "ours hutch P=16": ours("hutchinson", 16), "torchdiffeq loop": torchdiffeq_loop,
               "scipy RK45 (score_sde)": scipy_rk45}
    print(f"VP SDE, {args.dtype}, {args.device}, torch threads {torch.get_num_threads()}, "
          f"rtol = atol = {TOL}, t_eps = {T_EPS}, median of {args.repeats}")
    print("| D | B | method | mean abs err (nats) | max abs err | NFE | time (s) | "
          "peak mem (MiB) | time / ours |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for dim in args.dims:
        sde, gm, x, exact = make_problem(dim, dtype, args.device)
        score_fn = lambda y, t, gm=gm, sde=sde: gm.score(y, t, sde)  # noqa: E731
        prior_logp = lambda z, gm=gm, sde=sde: gm.log_prob(z, sde.T, sde)  # noqa: E731
        reference = None
        for name, method in methods.items():
            if dim > 64 and name in ("ours exact", "torchdiffeq loop"):
                continue
            run = functools.partial(method, sde, score_fn, x, prior_logp)
            nll, nfe, sec, peak = measure(run, args.device, args.repeats)
            err = (nll.double() - exact).abs()
            if name == ("ours exact" if dim <= 64 else "ours hutch P=1"):
                reference = sec
            ratio = f"{sec / reference:.2f}" if reference else "-"
            print(f"| {dim} | {x.shape[0]} | {name} | {err.mean().item():.2e} | "
                  f"{err.max().item():.2e} | {nfe} | {sec:.3f} | {peak:.1f} | {ratio} |",
                  flush=True)


if __name__ == "__main__":
    main()
