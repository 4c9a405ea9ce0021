"""The Score SDE paper's CIFAR-10 presets (experiment=cifar10-*): each composes with the paper's
settings, builds the network whose parameter count the library reports for it (on the meta device:
no memory), and takes 2 training steps on random 32x32 images (an npz file read by the image
loader) with the channels shrunk (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from score_sde.build import build_model, build_sde
from score_sde.config import compose, validate_train
from score_sde.train import train

# (experiment, sde, arch, blocks, the parameter count models.DiffusersUNet reports, in millions)
PRESETS = [
    ("cifar10-ddpmpp-vp", "VPSDE", "ddpmpp", 4, 62.5),
    ("cifar10-ddpmpp-subvp", "SubVPSDE", "ddpmpp", 4, 62.5),
    ("cifar10-ncsnpp-ve", "VESDE", "ncsnpp", 4, 61.9),
    ("cifar10-ddpmpp-deep-vp", "VPSDE", "ddpmpp", 8, 108.4),
    ("cifar10-ddpmpp-deep-subvp", "SubVPSDE", "ddpmpp", 8, 108.4),
    ("cifar10-ncsnpp-deep-ve", "VESDE", "ncsnpp", 8, 106.7),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "random.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize("experiment, sde, arch, blocks, millions", PRESETS,
                         ids=[p[0] for p in PRESETS])
def test_paper_preset_composes_and_builds(experiment, sde, arch, blocks, millions):
    cfg = compose("train", [f"experiment={experiment}"])
    validate_train(cfg)
    t, net = cfg.train, cfg.model.net
    assert (t.batch_size, t.lr, t.warmup, t.grad_clip, t.hflip) == (128, 2e-4, 5000, 1.0, True)
    assert t.ema_decay == (0.999 if sde == "VESDE" else 0.9999) and not t.cosine_decay
    assert (net.arch, net.channels, list(net.channel_mult), net.num_res_blocks) == (
        arch, 128, [1, 2, 2, 2], blocks)
    assert list(net.attn_resolutions) == [16] and net.dropout == 0.1
    assert cfg.data._target_ == "score_sde.data.cifar10"
    with torch.device("meta"):
        model = build_model(cfg, build_sde(cfg), (3, 32, 32))
    assert type(model.sde).__name__ == sde
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)


@pytest.mark.parametrize("experiment", [p[0] for p in PRESETS if "deep" not in p[0]])
def test_paper_preset_takes_two_steps(images, tmp_path, experiment):
    """Shrunk to 32 channels and one block a level (the deep presets differ only in blocks)."""
    small = compose("train", [
        f"experiment={experiment}", "data=npz", f"data.path={images}", "data.test_fraction=0.25",
        "model.net.channels=32", "model.net.num_res_blocks=1", "train.steps=2",
        "train.batch_size=4", "train.workers=0", "train.log_every=1", "logger=none",
        "progress=false", "threads=1", "solver.steps=2", "eval.n_samples=2", "eval.batch_size=2",
        "eval.nll_points=0", "checkpoint.every=2"])
    res = train(small, tmp_path / "run")
    assert res.step == 2 and not res.interrupted and res.checkpoint.is_file()
