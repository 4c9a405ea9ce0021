"""Restoration (SR3-style): training pairs are the configured operator plus noise of the set std,
the presets train, `sample cond.image=<file>` round-trips its file, `cond.split=test` measures
against the baselines, samples follow their inputs through the blocks, bad inputs are refused,
and (slow) a short digits SR training beats bicubic PSNR."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from tiny_runs import TINY

from score_sde import commands, models, restoration, solvers
from score_sde.build import build_degradation
from score_sde.cli import main
from score_sde.config import compose
from score_sde.degradation import training_condition
from score_sde.sde_lib import VPSDE
from score_sde.solvers import operators
from score_sde.train import train

TINY_SR = ["experiment=digits-sr", "logger=none", "progress=false", "train.steps=2",
           "train.batch_size=8", "train.warmup=1", "train.log_every=1", "checkpoint.every=2",
           "model.net.channels=8", "eval.n_samples=2", "eval.restore_n=3",
           "eval.restore_samples=2", "solver.steps=2"]


def _degradation(name: str):
    cfg = compose("train", ["data=digits", "model=unet", f"degradation={name}"])
    return build_degradation(cfg.degradation, (3, 8, 8) if name == "grey" else (1, 8, 8))


@pytest.mark.parametrize("name, operator, noise_std", [
    ("sr2", lambda s: operators.avg_pool_operator(s, 2), 0.01),
    ("sr4", lambda s: operators.avg_pool_operator(s, 4), 0.01),
    ("blur", lambda s: operators.blur_operator(s, 3, 1.0), 0.02),
    ("mask", None, 0.01),
    ("grey", lambda s: operators.grey_operator(s), 0.01)])
def test_pairs_are_the_operator_plus_noise_of_the_set_std(name, operator, noise_std):
    deg = _degradation(name)
    assert deg.noise_std == noise_std
    if operator is not None:  # the configured operator is that of solvers.operators
        torch.testing.assert_close(deg.operator.matrix(), operator(deg.shape).matrix())
    else:  # the central 4 x 4 square unknown
        assert deg.operator.matrix().sum(0).reshape(8, 8)[2:6, 2:6].sum() == 0
        assert deg.operator.num_measurements == 64 - 16
    x = torch.rand(500, *deg.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    n = torch.randn(500, deg.operator.num_measurements)
    torch.testing.assert_close(deg.measure(x, noise=n), deg.operator(x) + noise_std * n)
    drawn = (deg.measure(x, generator=torch.Generator().manual_seed(1)) - deg.operator(x))
    assert abs(drawn.std().item() / noise_std - 1) < 0.05 and abs(drawn.mean().item()) < noise_std / 20
    # training's condition: the back-projection of A x + n with fresh noise, some dropped
    gen, keep_gen = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)
    cond = training_condition(deg, x, 0.3, gen, keep_gen)
    y = deg.measure(x, generator=torch.Generator().manual_seed(2))
    kept = torch.rand(500, generator=torch.Generator().manual_seed(3)) >= 0.3
    assert cond.shape == (500, deg.shape[0] + 1, 8, 8) and 0.2 < 1 - kept.float().mean() < 0.4
    torch.testing.assert_close(cond[kept, :-1], deg.back_project(y)[kept])
    assert (cond[kept, -1] == 1).all() and (cond[~kept] == 0).all()


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """A 2-step digits-sr run (its evaluation restores 3 test digits)."""
    run = tmp_path_factory.mktemp("sr") / "run"
    res = train(compose("train", TINY_SR), run)
    return run, res


def test_sr_preset_trains_and_evaluates(sr_run):
    run, res = sr_run
    assert res.model.net.cond_channels == 2
    for key in ("model_mean_of_2_psnr", "bicubic_psnr", "nearest_ssim",
                "gaussian_posterior_mean_judge"):
        assert key in res.metrics, key
    assert (run / "pictures" / "restorations_final.png").is_file()


def test_deblur_preset_trains_with_the_configured_blur(tmp_path, monkeypatch):
    seen = []

    def spy(degradation, x0, *args):
        seen.append((degradation, x0.shape))
        return training_condition(degradation, x0, *args)

    monkeypatch.setattr("score_sde.train.training_condition", spy)
    over = [o.replace("digits-sr", "digits-deblur") for o in TINY_SR] + ["eval.restore_n=0"]
    train(compose("train", over), tmp_path / "run")
    assert len(seen) == 2 and seen[0][1] == (8, 1, 8, 8)
    assert seen[0][0].kind == "blur" and seen[0][0].noise_std == 0.02


def _sample(run, tmp_path, *over):
    return commands.sample(compose("sample", [f"run={run}", f"out={tmp_path}", "solver.steps=2",
                                              "cond.samples=2", "threads=1", "progress=false",
                                              *over]))


def test_sample_cond_image_round_trips_its_file(sr_run, tmp_path):
    from PIL import Image

    run = sr_run[0]
    low = torch.rand(3, 1, 4, 4) * 2 - 1
    np.save(tmp_path / "low.npy", low.numpy())
    torch.save(low[1], tmp_path / "one.pt")
    levels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(levels).save(tmp_path / "low.png")
    for file, want in (("low.npy", low), ("one.pt", low[1:2]),
                       ("low.png", torch.as_tensor(levels / 255 * 2 - 1)[None, None].float())):
        path = _sample(run, tmp_path, f"cond.image={tmp_path / file}")
        x = torch.load(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        restored = torch.load(path.with_name(path.stem + ".restored.pt"))
        assert x.shape == (2 * want.shape[0], 1, 8, 8) and meta["n_inputs"] == want.shape[0]
        torch.testing.assert_close(restored["degraded"], want)
        torch.testing.assert_close(restored["mean"], x.reshape(-1, 2, 1, 8, 8).mean(1))
        assert path.with_suffix(".png").is_file() and meta["degradation"] == "avg_pool2+n0.01"


def test_sample_split_measures_against_the_baselines(sr_run, tmp_path, capsys):
    run = sr_run[0]
    assert main(["sample", f"run={run}", f"out={tmp_path}", "solver.steps=2", "cond.samples=2",
                 "cond.split=test", "cond.n=3", "guidance.scale=2", "progress=false"]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "model, mean of 2" in out and "chance 0.100" in out
    meta = json.loads(next(tmp_path.glob("*_k2_w2_*.json")).read_text())
    assert set(meta["metrics"]) == {"nearest", "bicubic", "Gaussian posterior mean",
                                    "model, mean of 2", "model, one sample"}
    assert meta["guidance_scale"] == 2 and meta["nfe_per_sample"] == 3  # 2 steps + denoising
    # the training-free methods run on the same measurements with the run's null condition
    path = _sample(run, tmp_path, "cond.split=test", "cond.n=3", "cond.method=dps")
    dps = json.loads(path.with_suffix(".json").read_text())["metrics"]
    assert dps["bicubic"] == meta["metrics"]["bicubic"] and "dps, mean of 2" in dps


def test_condition_guidance_mixes_the_scores():
    calls = []

    def model(x, t, cond):
        calls.append(x.shape[0])
        return x * cond.sum((1, 2, 3))[:, None, None, None] + 1.0

    x, t, c = torch.randn(3, 1, 2, 2), torch.rand(3), torch.rand(3, 2, 2, 2)
    s_c, s_null = model(x, t, c), model(x, t, torch.zeros_like(c))
    for w in (0.0, 1.0, 2.5):
        calls.clear()
        torch.testing.assert_close(restoration.condition_guidance(model, c, w)(x, t),
                                   s_null + w * (s_c - s_null))
        assert calls == ([3] if w == 1 else [6])


class _CenteredNet(torch.nn.Module):
    """The exact score of data N(m, v I) given the condition, m the condition's image channel:
    -(x - alpha m) / (alpha^2 v + sigma^2) (a ScoreModel with prediction="score")."""

    def __init__(self, v: float):
        super().__init__()
        self.v, self.sde = v, VPSDE()

    def forward(self, x, t, cond=None):
        a, s = self.sde.alpha(t)[:, None, None, None], self.sde.sigma(t)[:, None, None, None]
        m = cond[:, :1]
        return -(x - a * m) / (a**2 * self.v + s**2)


def test_samples_follow_their_inputs_through_the_blocks():
    deg = _degradation("sr2")
    sde = VPSDE()
    model = models.ScoreModel(_CenteredNet(1e-4), sde, prediction="score")
    y = deg.measure(torch.rand(5, 1, 8, 8) * 2 - 1, generator=torch.Generator().manual_seed(0))
    res = restoration.restore(sde, model, partial(solvers.ddim, steps=50), deg, y, samples=3, seed=0,
                              batch_size=4, clamp=False)  # blocks of 4 straddle the inputs
    assert res.samples.shape == (5, 3, 1, 8, 8)
    want = deg.back_project(y)[:, None].expand(5, 3, 1, 8, 8)
    torch.testing.assert_close(res.samples, want, rtol=0, atol=0.05)


def test_bad_conditions_are_refused(sr_run, tmp_path, capsys, tmp_path_factory):
    run = sr_run[0]
    np.save(tmp_path / "big.npy", np.zeros((2, 1, 8, 8), np.float32))
    assert main(["sample", f"run={run}", f"cond.image={tmp_path / 'big.npy'}"]) == 2
    err = capsys.readouterr().err
    assert "cond.image" in err and "(2, 1, 8, 8)" in err and "(1, 4, 4)" in err
    assert len(err.strip().splitlines()) == 1
    for over, message in (
            (["cond.split=test", f"cond.image={tmp_path / 'big.npy'}"],
             "cond.image must be null with cond.split"),
            (["cond.split=test", "label=1"], "label=1: restoration (cond.*) does not take class labels"),
            (["cond.split=test", "degradation=blur"], "degradation is fixed by run"),
            (["cond.split=val"], "cond.split must be null, 'train' or 'test'"),
            (["cond.image=nothing.png"], "cond.image must be an existing")):
        assert main(["sample", f"run={run}", *over]) == 2
        assert message in capsys.readouterr().err, message
    ring = tmp_path_factory.mktemp("ring") / "run"
    train(compose("train", TINY), ring)
    assert main(["sample", f"run={ring}", "cond.split=test"]) == 2
    assert "cond.method=model restores with the run's image-conditional network" in \
        capsys.readouterr().err
    assert main(["sample", f"run={ring}", "cond.split=test", "cond.method=dps"]) == 2
    assert "add degradation=" in capsys.readouterr().err
    assert main(["sample", f"run={ring}", "cond.split=test", "cond.method=dps",
                 "degradation=sr2"]) == 2
    assert "acts on (C, H, W) images" in capsys.readouterr().err


@pytest.mark.slow
def test_short_sr_training_beats_bicubic(tmp_path):
    over = ["experiment=digits-sr", "logger=none", "progress=false", "train.steps=300",
            "train.batch_size=64", "train.lr=2e-3", "train.warmup=50", "train.ema_decay=0.99",
            "eval.n_samples=2", "eval.restore_n=100", "eval.restore_samples=4",
            "solver.steps=50", "checkpoint.every=300"]
    res = train(compose("train", over), tmp_path / "run")
    m = res.metrics
    assert m["model_mean_of_4_psnr"] > m["bicubic_psnr"] + 2 * m["bicubic_psnr_se"], m


def test_run_folders_name_the_degradation():
    from score_sde.sweep import run_name

    chosen = {"data": "digits", "sde": "vp", "model": "unet", "degradation": "sr2"}
    assert run_name(chosen, ["degradation=sr2"], False) == "digits-vp-unet-sr2"
    assert run_name({**chosen, "degradation": None}, [], False) == "digits-vp-unet"


def test_run_folders_build_only_degradations_of_score_sde(sr_run, tmp_path):
    import shutil

    from omegaconf import OmegaConf

    from score_sde.build import load_run

    run = tmp_path / "run"
    shutil.copytree(sr_run[0], run, ignore=shutil.ignore_patterns("samples", "train.lock"))
    cfg = OmegaConf.load(run / "config.yaml")
    assert load_run(run).model.net.cond_channels == 2
    for target, message in (("score_sde.degradation.training_condition", "degradation builder"),
                            ("builtins.print", "does not build")):
        cfg.degradation._target_ = target
        OmegaConf.save(cfg, run / "config.yaml")
        with pytest.raises(ValueError, match=message):
            load_run(run)
    cfg.degradation._target_ = "score_sde.degradation.avg_pool"
    cfg.degradation.factor = 4  # not what the checkpoint was trained on
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(ValueError, match="degradation.factor"):
        load_run(run)
