"""Every config group composes, builds and runs once on a tiny input; typos and bad values fail at
start with a message naming the setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from score_sde import models
from score_sde.build import (
    build_data,
    build_model,
    build_sde,
    build_solver,
    conditional_classes,
)
from score_sde.config import compose, validate_train
from score_sde.data import Dataset, ring_mixture
from score_sde.metrics import MetricsLogger
from score_sde.sde_lib import SDE

CONF = Path(__file__).resolve().parents[2] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_its_options():
    assert set(options("sde")) == {"vp", "subvp", "ve"}
    assert set(options("model")) == {"mlp", "unet", "diffusers_unet"}
    assert {"ring", "checkerboard", "moons", "swiss_roll", "digits", "npz", "image_folder",
            "mnist", "cifar10"} <= set(options("data"))
    from score_sde import solvers

    samplers = {"euler_maruyama", "predictor_corrector", "probability_flow", "ddim",
                "ddpm_ancestral", "torchsde_reverse", "dpm_solver_multistep",
                "dpm_solver_singlestep", "heun", "adaptive_sde"}
    assert samplers <= set(solvers.__all__)  # the samplers `solvers` exports ...
    assert samplers == set(options("solver"))  # ... each have a config
    assert {"ring-vp", "digits-vp", "digits-ve", "digits-cond", "digits-diffusers",
            "cifar10-ddpmpp-vp", "cifar10-ncsnpp-ve"} <= set(options("experiment"))


@pytest.mark.parametrize("name", options("sde"))
def test_sde_builds(name):
    sde = build_sde(compose("train", [f"sde={name}"]))
    assert isinstance(sde, SDE)
    assert sde.sigma(torch.tensor([0.5])).shape == (1,)


@pytest.mark.parametrize("name", options("solver"))
def test_solver_partial_runs_once(name):
    """Each solver config is a `_partial_` sampler; one call with the exact mixture score on VP."""
    cfg = compose("train", [f"solver={name}"])
    assert cfg.solver._partial_ is True
    if "steps" in cfg.solver:
        cfg.solver.steps = 4
    solver = build_solver(cfg)
    sde = build_sde(cfg)
    gm = ring_mixture()
    gen = torch.Generator().manual_seed(0)
    x_T = sde.prior_sample((8, 2), generator=gen, dtype=torch.float64)
    res = solver(sde, lambda x, t: gm.score(x, t, sde), x_T, generator=gen)
    assert res.x.shape == (8, 2) and bool(torch.isfinite(res.x).all())
    assert res.nfe >= 1


@pytest.mark.parametrize("name", options("model"))
def test_model_builds_and_runs(name):
    cfg = compose("train", [f"model={name}"])
    shape = (2,) if cfg.model.input == "vector" else (1, 8, 8)
    if name == "unet":
        cfg.model.net.channels = 32
    if name == "diffusers_unet":  # the paper's net (tests/scoresde/test_paper_configs.py), shrunk
        cfg.model.net.update(channels=32, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[])
    model = build_model(cfg, build_sde(cfg), shape)
    assert isinstance(model, models.ScoreModel)
    x = torch.randn(3, *shape)
    assert model(x, torch.full((3,), 0.5)).shape == x.shape


@pytest.mark.parametrize("name", ["ring", "checkerboard", "moons", "swiss_roll", "digits"])
def test_builtin_data_builds(name):
    over = [f"data={name}"] + ([] if name == "digits" else ["data.n_train=100", "data.n_test=10"])
    data = build_data(compose("train", over))
    assert isinstance(data, Dataset)
    assert data.train.ndim == data.test.ndim and data.train.shape[1:] == data.test.shape[1:]
    assert bool(torch.isfinite(data.train).all())


def test_file_data_build(tmp_path):
    from PIL import Image

    levels = np.random.default_rng(0).integers(0, 256, (20, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=levels)
    d = build_data(compose("train", ["data=npz", f"data.path={tmp_path / 'x.npz'}"]))
    assert d.train.shape[1:] == (1, 6, 6) and d.quantized
    both = torch.cat([d.train[:], d.test[:]])
    k = (both + 1) * 127.5  # 8-bit levels come back exactly
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert sorted(k.round().flatten().tolist()) == sorted(levels.flatten().tolist())
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(levels[i]).save(folder / f"{i}.png")
    d = build_data(compose("train", ["data=image_folder", f"data.path={folder}", "data.size=4",
                                     "data.grayscale=true", "data.test_fraction=0.2"]))
    assert d.train.shape == (4, 1, 4, 4) and d.test.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_data_explains_itself(name, tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install torchvision"):
            build_data(compose("train", [f"data={name}", f"data.root={tmp_path}"]))
    else:
        pytest.skip("torchvision is installed; this checks the message without it")


# the CIFAR-10 presets need torchvision's data and build 60M-parameter nets: test_paper_configs.py
# validates and builds them on random 32x32 images
@pytest.mark.parametrize("name", [e for e in options("experiment") if not e.startswith("cifar10-")])
def test_experiment_presets_validate_and_build(name):
    cfg = compose("train", [f"experiment={name}"])
    validate_train(cfg)
    sde, data = build_sde(cfg), build_data(cfg)
    model = build_model(cfg, sde, data.shape, conditional_classes(cfg, data))
    assert model.net.num_classes == (10 if cfg.conditional else None)


@pytest.mark.parametrize("name", options("logger"))
def test_logger_writes_jsonl(name, tmp_path):
    cfg = compose("train", [f"logger={name}", "logger.mode=disabled"])
    log = MetricsLogger(tmp_path, backend=cfg.logger.backend, mode=cfg.logger.mode)
    log.log("train", 1, loss=0.5)
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text().strip() == \
        '{"kind": "train", "step": 1, "loss": 0.5}'


def test_sample_and_likelihood_configs_compose():
    s = compose("sample", ["run=/some/run", "solver=ddim"])
    assert s.run == "/some/run" and s.solver._target_ == "score_sde.solvers.ddim"
    lk = compose("likelihood", ["run=/some/run", "data.split=train"])
    assert lk.data.split == "train" and lk.divergence == "auto"


def test_typo_and_wrong_type_fail_at_compose():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose("train", ["train.lrr=1e-3"])
    with pytest.raises((ConfigCompositionException, ValidationError), match="steps"):
        compose("train", ["train.steps=many"])
    with pytest.raises((ConfigCompositionException, ConfigKeyError), match="sde/foo"):
        compose("train", ["sde=foo"])


@pytest.mark.parametrize("override, message", [
    ("train.lr=-0.001", "train.lr must be > 0, got -0.001"),
    ("train.weighting=sigma", "train.weighting must be one of"),
    ("train.ema_decay=1.5", "train.ema_decay must be in [0, 1), got 1.5"),
    ("checkpoint.keep=0", "checkpoint.keep must be an int >= 1, got 0"),
])
def test_bad_values_name_the_setting(override, message):
    with pytest.raises(ValueError) as err:
        validate_train(compose("train", [override]))
    assert message in str(err.value)


def test_image_model_on_points_fails_clearly():
    cfg = compose("train", ["model=unet"])
    with pytest.raises(ValueError, match="model.input is 'image'.*shape \\(2,\\).*model=mlp"):
        build_model(cfg, build_sde(cfg), (2,))
