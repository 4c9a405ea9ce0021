"""Benchmark: GPU readiness of the image path, next to diffusers' own pipelines on the same UNet.

    python bench/gpu.py                          # CUDA: experiment=cifar10-ddpmpp-vp, the full net
    python bench/gpu.py --device cpu --tiny      # smoke mode: 32 channels, 1 block, batch 4

One process, one network: the DDPM++ UNet2DModel of `experiment=cifar10-ddpmpp-vp`
(`models.DiffusersUNet`, random init: speed does not depend on the weights), on 3x32x32 images.
    train fp32 / bf16  images/s of training steps (DSM loss, backward, AdamW, EMA; bf16 autocast
                       on CUDA, as train.amp=true), batch --batch
    sample ours        solvers.ddim and solvers.dpm_solver_multistep (order 2) at each NFE of --nfe,
                       images/s of the whole solve on a batch of --batch
    sample diffusers   DDIMPipeline and DDPMPipeline with DPMSolverMultistepScheduler (order 2)
                       on the same UNet2DModel, num_inference_steps = NFE, output_type="np"
    likelihood         seconds per image of solvers.bits_per_dim (Hutchinson, 1 probe, dopri5
                       rtol = atol = --rtol) on --batch random 8-bit images, with its NFE
Times are the median of --repeats runs after one warm-up, synchronised on CUDA.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

from score_sde import models, solvers
from score_sde.build import build_model, build_sde
from score_sde.config import compose
from score_sde.sde_lib import dsm_loss


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs after one warm-up."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="32 channels, 1 block a level (CPU smoke)")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (128; tiny: 4)")
    ap.add_argument("--train-steps", type=int, default=None, help="steps per timing (20; tiny: 2)")
    ap.add_argument("--nfe", type=int, nargs="+", default=None, help="(10 20 50; tiny: 10)")
    ap.add_argument("--repeats", type=int, default=None, help="(3; tiny: 1)")
    ap.add_argument("--rtol", type=float, default=None, help="likelihood rtol = atol (1e-5; tiny: 1e-2)")
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (4 if args.tiny else 128)
    steps = args.train_steps or (2 if args.tiny else 20)
    nfes = args.nfe or ([10] if args.tiny else [10, 20, 50])
    repeats = args.repeats or (1 if args.tiny else 3)
    rtol = args.rtol or (1e-2 if args.tiny else 1e-5)
    shrink = ["model.net.channels=32", "model.net.num_res_blocks=1"] if args.tiny else []
    cfg = compose("train", ["experiment=cifar10-ddpmpp-vp", *shrink])
    sde = build_sde(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, sde, (3, 32, 32)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device).manual_seed(0)
    x0 = torch.rand((batch, 3, 32, 32), generator=gen, device=device) * 2 - 1
    rows: list[tuple[str, ...]] = []

    def row(*cells: str) -> None:
        rows.append(cells)
        print("  ".join(cells).rstrip(), flush=True)

    row("network", f"DDPM++ {n_params / 1e6:.1f}M parameters, batch {batch}, {device}", "", "")

    def train_steps(amp: bool) -> Callable[[], None]:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
        ema = models.EMA(model, 0.9999)
        ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
               else torch.autocast(device.type, enabled=False))

        def run() -> None:
            model.train()
            for _ in range(steps):
                with ctx:
                    loss = dsm_loss(sde, model, x0, weighting="sigma2", importance_sampling=False)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                ema.update(model)
        return run

    for amp in (False, True):
        if amp and device.type != "cuda":
            row("train bf16", "CUDA only (train.amp)", "", "")
            continue
        sec = _timed(train_steps(amp), device, repeats)
        row(f"train {'bf16' if amp else 'fp32'}", f"{steps * batch / sec:.1f} images/s", "", "")

    model.eval().requires_grad_(False)
    import diffusers

    unet = model.net.unet
    x_T = sde.prior_sample((batch, 3, 32, 32), generator=gen, device=device)
    pipelines = {
        "ddim": (lambda n: solvers.ddim(sde, model, x_T, steps=n),
                 diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler())),
        "dpm_solver++": (lambda n: solvers.dpm_solver_multistep(sde, model, x_T, steps=n, order=2),
                         diffusers.DDPMPipeline(
                             unet=unet, scheduler=diffusers.DPMSolverMultistepScheduler(solver_order=2))),
    }
    for name, (ours, pipe) in pipelines.items():
        pipe.set_progress_bar_config(disable=True)
        for n in nfes:
            with torch.no_grad():
                mine = _timed(functools.partial(ours, n), device, repeats)
                theirs = _timed(functools.partial(pipe, batch_size=batch, num_inference_steps=n,
                                                  output_type="np",
                                                  generator=torch.Generator(device)),
                                device, repeats)
            row(f"sample {name} {n} NFE", f"{batch / mine:.1f} images/s",
                f"{batch / theirs:.1f} images/s", f"{theirs / mine:.2f}x")

    levels = torch.randint(0, 256, (batch, 3, 32, 32), generator=gen, device=device)
    images = levels.float() / 127.5 - 1
    result = {}

    def nll() -> None:
        result["res"] = solvers.bits_per_dim(sde, model, images, divergence="hutchinson",
                                             rtol=rtol, atol=rtol, generator=gen)
    sec = _timed(nll, device, 1)
    row("likelihood (Hutchinson)", f"{sec / batch:.3f} s/image, {float(result['res'].nfe):.0f} NFE",
        "", "")

    print()
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("what", "ours", "diffusers", "diffusers / ours time")
    widths = [max(w, len(h)) for w, h in zip(widths, head)]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    main()
