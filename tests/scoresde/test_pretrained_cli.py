"""`score-sde sample / likelihood pretrained=<folder>` on tiny random-init diffusers UNet2DModels saved
with save_pretrained (offline): samples and metadata, every output format, the [0, 1] data range
of VE checkpoints mapped exactly to [-1, 1], guidance of a class-conditional UNet, tuned grids, the
likelihood with data=, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from score_sde import solvers
from score_sde.build import load_pretrained
from score_sde.cli import main
from score_sde.metrics import read_metrics
from score_sde.models import from_diffusers
from score_sde.samples import load_samples, read_images
from score_sde.sde_lib import VESDE

diffusers = pytest.importorskip("diffusers")
FAST = ["progress=false", "threads=1"]


def _unet(**kwargs) -> diffusers.UNet2DModel:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, **kwargs)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Pipeline folders: vp (eps, DDPM's betas), cond (3 class embeddings), ve (ScoreSdeVe, Fourier)."""
    root = tmp_path_factory.mktemp("pretrained")
    diffusers.DDPMPipeline(unet=_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(root / "vp")
    diffusers.DDPMPipeline(unet=_unet(num_class_embeds=3),
                           scheduler=diffusers.DDPMScheduler()).save_pretrained(root / "cond")
    diffusers.ScoreSdeVePipeline(unet=_unet(time_embedding_type="fourier"),
                                 scheduler=diffusers.ScoreSdeVeScheduler(sigma_max=5.0)
                                 ).save_pretrained(root / "ve")
    levels = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    np.savez(root / "images.npz", x=levels)
    return root


def test_sample_writes_every_format_with_metadata(folders, tmp_path, capsys):
    """pt, npz (uint8 NHWC under arr_0) and png hold the same images, each with its .json; the
    DDIM samples equal the library's DDIM on the loaded model from the same prior draws."""
    common = ["sample", f"pretrained={folders / 'vp'}", "solver=ddim", "solver.steps=4", "n=5",
              *FAST]
    for fmt in ("pt", "npz", "png"):
        assert main([*common, f"out={tmp_path / fmt}", f"out.format={fmt}"]) == 0
    (pt,) = (tmp_path / "pt").glob("ddim_*.pt")
    (npz,) = (tmp_path / "npz").glob("ddim_*.npz")
    (png,) = [p for p in (tmp_path / "png").iterdir() if p.is_dir()]
    x, meta = load_samples(pt)
    assert meta["pretrained"] == str(folders / "vp") and meta["data_range"] == [-1.0, 1.0]
    assert meta["nfe_per_sample"] == 4 and meta["format"] == "pt" and x.shape == (5, 3, 8, 8)
    levels = read_images(pt)
    assert torch.equal(read_images(npz), levels) and torch.equal(read_images(png), levels)
    assert np.load(npz)["arr_0"].shape == (5, 8, 8, 3)
    assert load_samples(npz)[1]["format"] == "npz" and load_samples(png)[1]["format"] == "png"
    sde, model = from_diffusers(folders / "vp")
    gen = torch.Generator().manual_seed(_block_seed(0))
    x_T = sde.prior_sample((5, 3, 8, 8), generator=gen)
    with torch.no_grad():
        ref = solvers.ddim(sde, model, x_T, steps=4, generator=gen).x
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)


def _block_seed(j: int) -> int:
    from score_sde.distributed import block_seed

    return block_seed(0, j)


def test_ve_checkpoint_on_zero_one_maps_exactly_to_unit_range(folders):
    """A VE model of z in [0, 1] is the model of x = 2 z - 1 under VESDE(2 sigma_min, 2 sigma_max):
    Euler-Maruyama from x_T and from z_T = (x_T + 1) / 2 with the same noise ends at x = 2 z - 1."""
    pre = load_pretrained(str(folders / "ve"))
    raw_sde, raw = from_diffusers(folders / "ve")
    assert pre.data_range == (0.0, 1.0) and isinstance(pre.sde, VESDE)
    assert pre.sde.sigma_max == pytest.approx(2 * raw_sde.sigma_max)
    assert pre.sde.sigma_min == pytest.approx(2 * raw_sde.sigma_min)
    x_T = pre.sde.prior_sample((3, 3, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x = solvers.euler_maruyama(pre.sde, pre.model, x_T, steps=6,
                                   generator=torch.Generator().manual_seed(2)).x
        z = solvers.euler_maruyama(raw_sde, raw, (x_T + 1) / 2, steps=6,
                                   generator=torch.Generator().manual_seed(2)).x
    torch.testing.assert_close(x, 2 * z - 1, rtol=1e-4, atol=1e-4 * x.abs().max().item())


def test_guidance_of_a_class_conditional_unet(folders, tmp_path, capsys):
    """label=k samples conditionally; guidance.scale != 1 needs the model's null label."""
    common = ["sample", f"pretrained={folders / 'cond'}", "solver=ddim", "solver.steps=2", "n=2",
              f"out={tmp_path}", "label=1", *FAST]
    assert main([*common, "guidance.scale=2"]) == 2
    assert "guidance.null_label" in capsys.readouterr().err
    assert main([*common, "guidance.scale=2", "guidance.null_label=2"]) == 0
    assert main([*common, "label=3"]) == 2
    assert "label must be a class in [0, 3)" in capsys.readouterr().err
    (pt,) = tmp_path.glob("ddim_label1_w2_*.pt")
    assert load_samples(pt)[1]["guidance_scale"] == 2


def test_a_grid_is_checked_against_the_pretrained_model(folders, tmp_path, capsys):
    """tune.load compares the grid's model record (id, SDEs, data range) with the loaded one."""
    record = load_pretrained(str(folders / "vp")).record()
    grid = tmp_path / "g.grid.json"
    common = ["sample", f"pretrained={folders / 'vp'}", "solver=dpm_solver_multistep",
              "solver.steps=2", "n=2", f"out={tmp_path}", f"tune.load={grid}", *FAST]
    for sde, code in ((record, 0), ({**record, "pretrained": "other"}, 2)):
        grid.write_text(json.dumps({"ts": [1.0, 0.5, 1e-3], "eval_ts": None, "sde": sde}))
        assert main(common) == code
    assert "was tuned for sde" in capsys.readouterr().err
    (pt,) = tmp_path.glob("*_tuned_*.pt")
    assert load_samples(pt)[1]["grid"] == str(grid)


def test_likelihood_of_a_pretrained_model_on_given_data(folders, tmp_path, capsys):
    """data= gives the images; the default divergence for images is Hutchinson (1 probe) with a
    standard error; the record names the model, its data range and the divergence used."""
    common = ["likelihood", f"pretrained={folders / 've'}", "data=npz",
              f"data.path={folders / 'images.npz'}", "data.split=train", "data.n=2", "method=rk4",
              "step_size=0.25",
              f"out={tmp_path}", *FAST]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "hutchinson divergence, 1 probe per point" in out and "bits/dim:" in out
    assert "data range [0.0, 1.0] is mapped to [-1, 1]" in out
    rec = read_metrics(tmp_path, "likelihood")[-1]
    assert rec["divergence"] == "hutchinson" and rec["data_range"] == [0.0, 1.0]
    assert rec["pretrained"] == str(folders / "ve") and rec["n"] == 2 and rec["bpd_stderr"] > 0


@pytest.mark.parametrize("argv, message", [
    (["sample", "n=2"], "needs a model: add run=<run folder of score-sde train> or pretrained="),
    (["likelihood", "pretrained=PRE"], "a data set for a pretrained model: add data=<name>"),
    (["likelihood", "pretrained=PRE", "data=digits"], "has images of shape (1, 8, 8), but"),
    (["sample", "pretrained=PRE", "run=PRE"], "pretrained must be null with run="),
    (["sample", "pretrained=PRE", "out.format=gif"], "out.format must be one of"),
])
def test_bad_pretrained_starts(folders, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main([a.replace("PRE", str(folders / "vp")) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, message", [
    ("model_index.json", "pretrained= loads diffusers' own classes only"),
    ("unet/config.json", "pretrained= loads a UNet2DModel only"),
])
def test_a_folder_naming_foreign_classes_is_refused(folders, tmp_path, monkeypatch, capsys, edit,
                                                    message):
    """A copy of a pipeline folder whose JSON names a class of another library (code diffusers
    would import) or another model class is refused before anything is loaded."""
    import shutil

    folder = tmp_path / "pre"
    shutil.copytree(folders / "vp", folder)
    spec = json.loads((folder / edit).read_text())
    if edit == "model_index.json":
        spec["unet"] = ["my_package", "UNet2DModel"]
    else:
        spec["_class_name"] = "UNet2DConditionModel"
    (folder / edit).write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path)
    assert main(["sample", f"pretrained={folder}", "n=2", *FAST]) == 2
    err = capsys.readouterr().err
    assert message in err and "nothing was loaded or run" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre"]
