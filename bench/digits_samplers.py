"""Samplers on a trained digits model: ours against diffusers' schedulers and k-diffusion's samplers,
same model, same x_T.

    OMP_NUM_THREADS=1 python bench/digits_samplers.py --run <digits-vp run folder> [--n 1000]
        [--nll-n 50] [--tune-pilot 100] [--ours "dpm_solver_multistep:order=3,corrector=unipc,
        predictor=unip,grid=log_snr_window; ddim; ..."] [--nfes 5,10,20,50]

The model: a `score-sde train experiment=digits-vp` run (8x8 sklearn digits, VP linear SDE, U-Net,
EMA weights) loaded with `score_sde.build.load_run`. x_T: n draws of the prior N(0, I) at T = 1
(seed 0), shared by every sampler at NFE 5 / 10 / 20 / 50.
Ours (`--ours`, ';'-separated `solver[:key=value,...]` of `score_sde.solvers`, the first being the
default fixed configuration, by default bench/heldout.py's DEFAULT) run from T = 1 to t_eps = 1e-3
on the image-shaped batch; heun takes NFE // 2 steps (2 NFE a step). "tuned" is
`solvers.tune_grid` (no search) for the first configuration, on a pilot of --tune-pilot other prior
draws (seed 1), the reference of its pilot by dopri5 at 1e-6. diffusers sees the VP view of
bench/samplers.py (`diffusers_sampler`: timestep k is our t = (k + 1) / 1000, so alphas_cumprod[0]
is t_eps = 1e-3; eps = -sigma(t) score) in its recommended configurations
(`samplers.RECOMMENDED`, DDIM trailing), all ending at noise 0 (final sigma 0, DDIM's
set_alpha_to_one); Euler / Heun (Karras sigmas) step in sigma = rho = sigma(t) / alpha(t) on
x / alpha (`scale_model_input` gives the model x), here. k-diffusion's samplers run as
bench/kdiffusion.py says (Karras sigmas from sigma(T) / alpha(T) to sigma(t_eps) / alpha(t_eps),
then noise 0; DPM fast ends at t_eps).
Measures per (sampler, NFE):
  FD      Frechet distance in the digits judge's features (`score_sde.fid.distances`, features
          "judge": the logits of the logistic regression fitted on the training digits) between
          the samples as uint8 images and the 359 test digits;
  err     per-sample ||x - x_ref|| / sqrt(64), median and RMS, x_ref the PF-ODE solution from the
          same x_T by dopri5 at rtol = atol = 1e-6 to t_eps (ours), continued in rho to noise 0
          (diffusers' rows: dopri5 on dx/d rho = eps, x = x_t / alpha);
  bpd     the model's own NLL of the first --nll-n samples (`solvers.log_likelihood` from t_eps
          = 1e-3, Hutchinson, one Rademacher probe drawn from the same seed for every row, dopri5
          at 1e-3) as (NLL / 64 + log 128) / log 2 (the samples are not dequantized: it reads as a
          density, comparable between rows), and its mean difference from the reference samples'
          (the reference its err is taken against) +- the standard error of the paired differences.
"""

from __future__ import annotations

import argparse
import ast
import functools
import math
import platform
import time
from collections.abc import Callable

import diffusers
import kdiffusion
import torch
import torchdiffeq
from heldout import DEFAULT
from samplers import N_TRAIN, PEERS, RECOMMENDED, diffusers_sampler, vp_view
from torch import Tensor

from score_sde import solvers
from score_sde.build import build_run_data, load_run
from score_sde.data import as_uint8
from score_sde.fid import distances, feature_extractor
from score_sde.judge import fit_judge
from score_sde.sde_lib import SDE

NFES = (5, 10, 20, 50)
BOOTSTRAP = 50
T_EPS, REF_TOL, NLL_TOL = 1e-3, 1e-6, 1e-3
DEFAULT_OURS = ("dpm_solver_multistep:" + ",".join(f"{k}={v}" for k, v in DEFAULT.items())
                + "; dpm_solver_multistep:order=3,corrector=unipc,grid=log_snr_window; "
                "dpm_solver_multistep:order=2,grid=log_snr; "
                "dpm_solver_multistep:order=3,corrector=unipc,grid=log_snr; ddim; heun")
NFE_PER_STEP = {"heun": 2}
SIGMA_PEERS = {  # diffusers' sigma-space schedulers, Karras sigmas, final sigma 0
    "diffusers Euler (Karras)": (diffusers.EulerDiscreteScheduler, dict(use_karras_sigmas=True)),
    "diffusers Heun (Karras)": (diffusers.HeunDiscreteScheduler, dict(use_karras_sigmas=True)),
}


def parse_ours(spec: str) -> list[tuple[str, Callable[..., solvers.SampleResult], int]]:
    """`solver[:k=v,...]; ...` -> (label, sampler(sde, score_fn, x_T, steps=...), NFE per step)."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, args = item.partition(":")
        kwargs = {}
        for pair in filter(None, (a.strip() for a in args.split(","))):
            key, _, value = pair.partition("=")
            try:
                kwargs[key.strip()] = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                kwargs[key.strip()] = value.strip()
        if not hasattr(solvers, name.strip()):
            raise ValueError(f"--ours: no sampler {name.strip()!r} in score_sde.solvers")
        out.append((f"ours: {item}", functools.partial(getattr(solvers, name.strip()), **kwargs),
                    NFE_PER_STEP.get(name.strip(), 1)))
    return out


def sigma_space_sampler(cls, sde: SDE, score, x_T: Tensor, nfe: int, **config
                        ) -> tuple[Tensor, int]:
    """A diffusers Euler / Heun scheduler on the VP model: state x / alpha at its sigma = rho;
    Heun takes (nfe + 1) // 2 sigmas (2 N - 1 NFE). Returns (x at sigma 0, NFE)."""
    betas = vp_view(sde)[2]
    sched = cls(num_train_timesteps=N_TRAIN, trained_betas=betas.numpy(), **config)
    sched.set_timesteps((nfe + 1) // 2 if cls is diffusers.HeunDiscreteScheduler else nfe)
    y, calls = x_T * (1 + sched.sigmas[0].double() ** 2).sqrt().to(x_T.dtype), 0
    for k in sched.timesteps:
        t = torch.full((y.shape[0],), (float(k) + 1) / N_TRAIN, dtype=y.dtype)
        eps = -sde.sigma(t)[:, None] * score(sched.scale_model_input(y, k), t)
        calls += 1
        y = sched.step(eps, k, y).prev_sample
    return y, calls


def to_noise_zero(sde: SDE, score, x: Tensor, t_eps: float, t_min: float) -> Tensor:
    """The PF-ODE from x at t_eps continued to noise 0: dz/d rho = eps(alpha z, t(rho)) for
    z = x / alpha, rho = sigma / alpha from rho(t_eps) to 0 (dopri5 at REF_TOL; the model is asked
    at t >= t_min, its training cutoff)."""
    t0 = torch.tensor(t_eps, dtype=torch.float64)
    rho0 = (sde.sigma(t0) / sde.alpha(t0)).item()

    def f(u, z):  # u = rho0 - rho runs forward from 0 to rho0; d z / d u = -eps
        rho = (rho0 - u).clamp(min=0).double()
        t = sde.t_from_log_snr(-2 * rho.clamp(min=1e-12).log()).clamp(min=t_min)
        tt = t.to(z.dtype).expand(z.shape[0])
        return sde.sigma(tt)[:, None] * score(sde.alpha(tt)[:, None] * z, tt)

    ends = torch.tensor([0.0, rho0], dtype=x.dtype)
    z = torchdiffeq.odeint(f, x / sde.alpha(t0).to(x.dtype), ends, rtol=REF_TOL, atol=REF_TOL)
    return z[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a digits-vp run folder")
    parser.add_argument("--n", type=int, default=1000, help="samples per cell")
    parser.add_argument("--nll-n", type=int, default=50, help="samples whose NLL is solved (0: none)")
    parser.add_argument("--tune-pilot", type=int, default=100, help="pilot draws (0: no tuned row)")
    parser.add_argument("--ours", default=DEFAULT_OURS, help="our configurations; the first is "
                        "the default fixed one")
    parser.add_argument("--nfes", default=",".join(map(str, NFES)))
    args = parser.parse_args()
    torch.set_num_threads(1)
    nfes = [int(k) for k in args.nfes.split(",")]
    clock = time.process_time()
    run = load_run(args.run)
    sde, model, shape = run.sde, run.model, run.data_shape
    dim = math.prod(shape)
    data = build_run_data(run)

    def flat_score(x: Tensor, t: Tensor) -> Tensor:  # diffusers' drivers index (B, D) batches
        return model(x.view(-1, *shape), t).flatten(1)

    extractor = feature_extractor("judge", judge_data=data)
    judge = fit_judge(data)

    def fd_to(x: Tensor, reference: Tensor) -> float:
        return distances(as_uint8(x.view(-1, *shape)), as_uint8(reference.view(-1, *shape)),
                         extractor, kid=False).fid

    def fd(x: Tensor) -> float:
        return fd_to(x, data.test)

    x_T = sde.prior_sample((args.n, *shape), generator=torch.Generator().manual_seed(0))
    ref = solvers.probability_flow(sde, model, x_T, rtol=REF_TOL, atol=REF_TOL, t_eps=T_EPS)
    ref_x = ref.x.flatten(1)
    ref_zero = to_noise_zero(sde, flat_score, ref_x, T_EPS, float(run.cfg.train.t_eps))
    print(f"# machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, k-diffusion {kdiffusion.version()}, 1 thread; "
          f"run {args.run} (step {run.step}, EMA); "
          f"n = {args.n}, NLL of {args.nll_n}")
    print(f"# PF-ODE reference: dopri5 at {REF_TOL}, {ref.nfe} NFE, {time.process_time() - clock:.0f}"
          f" s of process time so far; reference to noise 0 moves it by RMS "
          f"{(ref_zero - ref_x).norm(dim=1).pow(2).mean().div(dim).sqrt():.1e}")

    probs = torch.as_tensor(judge.classifier.predict_proba(ref_x.double().numpy()))
    own = {k: v for k, v in run.cfg.solver.items() if not k.startswith("_")}
    own_x = solvers.euler_maruyama(sde, model, x_T, generator=torch.Generator().manual_seed(2),
                                   **own).x
    own_probs = torch.as_tensor(judge.classifier.predict_proba(own_x.flatten(1).double().numpy()))
    test_probs = torch.as_tensor(judge.classifier.predict_proba(
        data.test.flatten(1).double().numpy()))
    print(f"# judge (test accuracy {judge.test_accuracy:.3f}) mean confidence: test digits "
          f"{test_probs.max(1).values.mean():.3f}, the run's own sampler ({own}) "
          f"{own_probs.max(1).values.mean():.3f}, PF-ODE reference {probs.max(1).values.mean():.3f};"
          f" class fractions of the own sampler's samples "
          f"{[round(f, 3) for f in torch.bincount(own_probs.argmax(1), minlength=10).div(args.n).tolist()]}")
    print(f"# FD floors: training digits {fd(data.train):.3f}"
          f", the run's own sampler {fd(own_x):.3f}, PF-ODE reference {fd(ref_x):.3f}, to noise 0 "
          f"{fd(ref_zero):.3f}")

    def bpd(x: Tensor) -> Tensor:
        res = solvers.log_likelihood(sde, model, x.reshape(-1, *shape), divergence="hutchinson",
                                     redraw_probes=False, t_eps=T_EPS, rtol=NLL_TOL, atol=NLL_TOL,
                                     generator=torch.Generator().manual_seed(3))
        return (res.nll / dim + math.log(128)) / math.log(2)

    ref_bpd = {}  # id of a reference -> the bits/dim of its first nll_n samples
    for name, target in (("reference", ref_x), ("reference to noise 0", ref_zero)):
        if args.nll_n:
            ref_bpd[id(target)] = b = bpd(target[:args.nll_n])
            print(f"# {name}: {b.mean():.4f} +- {b.std() / math.sqrt(len(b)):.4f} bits/dim "
                  f"(first {args.nll_n})")

    table: dict[str, list[dict[str, float | str]]] = {}  # row -> per NFE, its measures

    kept: dict[str, list[Tensor | None]] = {}  # row -> per NFE, the samples (n, D)

    def measure(x: Tensor | None, nfe: int, target: Tensor, j: int) -> dict[str, float | str]:
        if x is None:
            return {"note": "—"}
        if not bool(torch.isfinite(x).all()):
            return {"note": "failed (non-finite)"}
        x = x.flatten(1).to(target.dtype)
        err = (x - target).norm(dim=1) / math.sqrt(dim)
        out = {"fd": fd(x), "fd_ref": fd_to(x, target), "median": err.median().item(),
               "rms": err.pow(2).mean().sqrt().item(),
               "note": "" if nfe == nfes[j] else f" ({nfe} NFE)"}
        if ref_bpd:
            diff = bpd(x[:args.nll_n]) - ref_bpd[id(target)]
            out |= {"bpd": (ref_bpd[id(target)] + diff).mean().item(), "dbpd": diff.mean().item(),
                    "dbpd_se": diff.std().item() / math.sqrt(len(diff))}
        return out

    def row(name: str, results: list[tuple[Tensor | None, int]], target: Tensor) -> None:
        start = time.process_time()
        table[name] = [measure(x, nfe, target, j) for j, (x, nfe) in enumerate(results)]
        kept[name] = [None if x is None else x.flatten(1) for x, _ in results]
        print(f"{name}: {table[name]} ({time.process_time() - start:.0f} s)", flush=True)

    ours = parse_ours(args.ours)
    for name, sampler, per_step in ours:
        results = []
        for k in nfes:
            res = sampler(sde, model, x_T, steps=k // per_step) if k >= per_step else None
            results.append((None, k) if res is None else (res.x, res.nfe))
        row(name, results, ref_x)
    if args.tune_pilot:
        pilot = sde.prior_sample((args.tune_pilot, *shape),
                                 generator=torch.Generator().manual_seed(1))
        name, sampler, _ = ours[0]
        start = time.process_time()
        tuned = [solvers.tune_grid(sde, model, pilot, k, sampler=sampler, rtol=REF_TOL,
                                   atol=REF_TOL) for k in nfes]
        row(f"{name} (tuned grid, pilot {args.tune_pilot}; {time.process_time() - start:.0f} s "
            "tuning)", [(sampler(sde, model, x_T, **g.kwargs).x, k) for g, k in zip(tuned, nfes)],
            ref_x)
    flat_T = x_T.flatten(1)
    peers = {"diffusers DDIM (trailing, final alpha 1)": (
        PEERS["diffusers DDIM (trailing)"][0],
        PEERS["diffusers DDIM (trailing)"][1] | dict(set_alpha_to_one=True))} | RECOMMENDED
    for name, (cls, cfg) in peers.items():
        row(name, [diffusers_sampler(cls, sde, flat_score, flat_T, k, **cfg) for k in nfes],
            ref_zero)
    for name, (cls, cfg) in SIGMA_PEERS.items():
        row(name, [sigma_space_sampler(cls, sde, flat_score, flat_T, k, **cfg) for k in nfes],
            ref_zero)
    for name in kdiffusion.SAMPLERS if kdiffusion.installed() else ():
        row(name, [kdiffusion.sample(name, sde, flat_score, flat_T, k, T_EPS) for k in nfes],
            ref_x if "sigma_min" in name else ref_zero)

    formats = {
        "FD to the test digits (judge features)": lambda m: f"{m['fd']:.3f}",
        "FD to the PF-ODE reference samples": lambda m: f"{m['fd_ref']:.3f}",
        "per-sample error against the PF-ODE reference: median / RMS":
            lambda m: f"{m['median']:.1e} / {m['rms']:.1e}",
    }
    if ref_bpd:
        formats[f"bits/dim of the first {args.nll_n} samples (difference from its reference's, "
                "+- se)"] = (
            lambda m: f"{m['bpd']:.3f} ({m['dbpd']:+.3f} +- {m['dbpd_se']:.3f})")
    for title, show in formats.items():
        print(f"\n### {title}, NFE " + " / ".join(map(str, nfes)) + "\n")
        print("| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for name, cells in table.items():
            print(f"| {name} | " + " | ".join(
                (show(m) if "fd" in m else "") + m["note"] for m in cells) + " |")
    default = ours[0][0]
    print(f"\n# lowest FD to the test digits per NFE (goal: {default}); the paired bootstrap "
          f"({BOOTSTRAP} resamples of the n x_T) of FD(default) - FD(other), its 5-95% range:")
    for j, k in enumerate(nfes):
        fds = {name: cells[j].get("fd", math.inf) for name, cells in table.items()}
        best = min((name for name in fds if name != default), key=fds.__getitem__)
        g = torch.Generator().manual_seed(4)
        diffs = []
        for _ in range(BOOTSTRAP):
            idx = torch.randint(args.n, (args.n,), generator=g)
            diffs.append(fd(kept[default][j][idx]) - fd(kept[best][j][idx]))
        lo, hi = torch.tensor(diffs).quantile(torch.tensor([0.05, 0.95], dtype=torch.float64)
                                              .float()).tolist()
        print(f"#   NFE {k}: default {fds[default]:.3f}, lowest other {best} {fds[best]:.3f}; "
              f"difference {fds[default] - fds[best]:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"# process time: {time.process_time() - clock:.0f} s")


if __name__ == "__main__":
    main()
