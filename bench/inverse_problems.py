"""Training-free posterior sampling against the exact posterior: the bias of each method by NFE and
measurement noise.

    OMP_NUM_THREADS=1 python bench/inverse_problems.py [--n 2000] [--nfes 20,100,500] [--quick]

Priors are Gaussian mixtures with exact noised scores (`GaussianMixture.score`); for y = A x + n,
n ~ N(0, s_y^2 I), `GaussianMixture.condition(A, y, s_y)` is the exact posterior. Problems:
  2-D    the three-mode mixture of the sampler tests; A = a random 1 x 2 matrix, a mask (x_1 known)
  16-D   a 4-mode full-covariance mixture of 1 x 4 x 4 images; A = a random 8 x 16 matrix, a mask
         (the top half known), 2 x 2 average pooling (super-resolution), a 3 x 3 Gaussian blur
  12-D   a 4-mode full-covariance mixture of 3 x 2 x 2 RGB images; A = colour to grey
y = A x + n is, of 200 draws x of the prior, the one whose exact posterior spreads its mass most
evenly over the modes (the largest entropy of the posterior weights): the hard, multimodal case.
Methods (`solvers.measurement_guidance`): dps, pigdm
(data_std = the prior's mean per-coordinate std) with the network's Jacobian d x0_hat / d x_t (a
backward pass through the score, the papers' form) and with jacobian="gaussian" ("dps gaussian J",
"pigdm gaussian J": its value under an N(m, data_std^2 I) prior, the CLI's default), replacement
(masks only), and "exact", the exact posterior's own score (the sampler's discretization error
alone). Each runs Euler-Maruyama on the
VP SDE from n prior draws to t_eps = 1e-3 with NFE steps.
Columns, against the exact posterior:
  mean     ||mean - mean_true|| / sqrt(tr Cov_true)
  cov      ||Cov - Cov_true||_F / ||Cov_true||_F
  modes    total variation between the mode masses (each sample's responsibilities under the exact
           posterior, averaged) and the posterior's weights
  sw2      sliced W2 to 20 000 exact posterior draws; the "draws" row is n exact draws (the floor)
"diverged" marks a run whose samples left the data's range (mean error > 100 or not finite).
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import torch
from samplers import sliced_w2

from score_sde.sde_lib import VPSDE, GaussianMixture
from score_sde.solvers import euler_maruyama, measurement_guidance, operators

D64, T_EPS, N_TRUE = torch.float64, 1e-3, 20_000


def full_mixture(shape: tuple[int, ...], k: int, seed: int) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    means = 0.8 * torch.randn((k, *shape), generator=g, dtype=D64)
    f = torch.randn(k, n, n, generator=g, dtype=D64) / n**0.5
    covs = 0.2 * f @ f.transpose(1, 2) + 0.03 * torch.eye(n, dtype=D64)
    return GaussianMixture(means, weights=torch.rand(k, generator=g, dtype=D64) + 0.3, covs=covs)


def problems() -> list[tuple[str, GaussianMixture, operators.LinearOperator]]:
    g = torch.Generator().manual_seed(7)
    two = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=D64),
                          torch.tensor([[0.4, 0.25], [0.3, 0.6], [0.5, 0.5]], dtype=D64),
                          torch.tensor([1.0, 2.0, 1.0], dtype=D64))
    img, rgb = full_mixture((1, 4, 4), 4, 1), full_mixture((3, 2, 2), 4, 2)
    top = torch.zeros(1, 4, 4)
    top[:, :2] = 1
    return [
        ("2-D random", two, operators.matrix_operator(torch.randn(1, 2, generator=g, dtype=D64))),
        ("2-D mask", two, operators.mask_operator(torch.tensor([1, 0]))),
        ("16-D random", img, operators.matrix_operator(torch.randn(8, 16, generator=g, dtype=D64)
                                                       / 4, (1, 4, 4))),
        ("16-D mask", img, operators.mask_operator(top)),
        ("16-D avg-pool", img, operators.avg_pool_operator((1, 4, 4), 2)),
        ("16-D blur", img, operators.blur_operator((1, 4, 4), 3, 1.0)),
        ("12-D grey", rgb, operators.grey_operator((3, 2, 2))),
    ]


def hardest_measurement(prior: GaussianMixture, op: operators.LinearOperator, noise: float,
                        g: torch.Generator, candidates: int = 200
                        ) -> tuple[GaussianMixture, torch.Tensor]:
    """Of y = A x + n for `candidates` prior draws x, the one whose posterior weights have the
    largest entropy, with its exact posterior."""
    a = op.matrix()
    ys = op(prior.sample(candidates, generator=g)) + noise * torch.randn(
        candidates, op.num_measurements, generator=g, dtype=D64)
    posts = [prior.condition(a, y, noise) for y in ys]
    entropy = [-(p.weights * p.weights.clamp_min(1e-300).log()).sum().item() for p in posts]
    best = max(range(candidates), key=entropy.__getitem__)
    return posts[best], ys[best]


def errors(x: torch.Tensor, post: GaussianMixture, truth: torch.Tensor) -> dict[str, float]:
    x = x.flatten(1)
    mean, cov = post.mean().flatten(), post.covariance()
    masses = post.posterior(x.reshape(-1, *post.means.shape[1:])).mean(0)
    return {"mean": ((x.mean(0) - mean).norm() / torch.trace(cov).sqrt()).item(),
            "cov": ((torch.cov(x.T).reshape(cov.shape) - cov).norm() / cov.norm()).item(),
            "modes": 0.5 * (masses - post.weights).abs().sum().item(),
            "sw2": sliced_w2(x, truth)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--nfes", default="20,100,500")
    ap.add_argument("--noise", default="0.05,0.2")
    ap.add_argument("--quick", action="store_true", help="2-D problems, NFE 20 and 100")
    args = ap.parse_args()
    nfes = [20, 100] if args.quick else [int(v) for v in args.nfes.split(",")]
    sde = VPSDE()
    print(f"VP SDE, Euler-Maruyama to t_eps = {T_EPS}, n = {args.n}, float64, "
          f"{torch.get_num_threads()} thread(s)")
    for name, prior, op in problems()[:2 if args.quick else None]:
        data_std = torch.diagonal(prior.covariance()).sqrt().mean().item()
        for noise in (float(v) for v in args.noise.split(",")):
            g = torch.Generator().manual_seed(0)
            post, y = hardest_measurement(prior, op, noise, g)
            truth = post.sample(N_TRUE, generator=g).flatten(1)
            print(f"\n### {name} ({op.name}, M = {op.num_measurements}), noise_std = {noise}, "
                  f"posterior weights {', '.join(f'{w:.2f}' for w in post.weights.tolist())}")
            print("| method | NFE | mean | cov | modes | sw2 | s |\n|---|---|---|---|---|---|---|")
            floor = errors(post.sample(args.n, generator=g), post, truth)
            print(f"| draws | - | {floor['mean']:.3f} | {floor['cov']:.3f} | "
                  f"{floor['modes']:.3f} | {floor['sw2']:.3f} | - |")
            methods = (["exact", "dps", "pigdm", "dps gaussian J", "pigdm gaussian J"]
                       + (["replacement"] if op.known is not None else []))
            for method in methods:
                if method == "exact":
                    score = functools.partial(post.score, sde=sde)
                else:
                    base, _, jac = method.partition(" ")
                    score = measurement_guidance(sde, functools.partial(prior.score, sde=sde), op,
                                                 y, noise, method=base, data_std=data_std,
                                                 jacobian="gaussian" if jac else "network")
                for nfe in nfes:
                    x_T = sde.prior_sample((args.n, *prior.means.shape[1:]),
                                           generator=torch.Generator().manual_seed(1), dtype=D64)
                    start = time.perf_counter()
                    x = euler_maruyama(sde, score, x_T, steps=nfe, t_eps=T_EPS,
                                       generator=torch.Generator().manual_seed(2)).x
                    sec = time.perf_counter() - start
                    e = errors(x, post, truth)
                    if not e["mean"] < 100:
                        print(f"| {method} | {nfe} | diverged | | | | {sec:.1f} |", flush=True)
                        continue
                    print(f"| {method} | {nfe} | {e['mean']:.3f} | {e['cov']:.3f} | "
                          f"{e['modes']:.3f} | {e['sw2']:.3f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
