"""Conditional generation in the app: labels travel with the data through every split, label
dropout is drawn from the run's seeded stream, `+conditional=true` trains a class-conditional net
that checkpoints and reloads, `sample label=k guidance.scale=w` works with every solver, inpainting
reads mask files, and the digits judge recognises real digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_runs import TINY, TINY_DIGITS

from score_sde import commands, distributed, solvers
from score_sde.build import build_data, build_solver, load_run
from score_sde.checkpoint import load_checkpoint
from score_sde.cli import main
from score_sde.conditional import drop_labels
from score_sde.config import compose, validate_eval, validate_train
from score_sde.data import Dataset, checkerboard, digits, ring, ring_mixture, swiss_roll, two_moons
from score_sde.judge import fit_judge
from score_sde.metrics import read_metrics
from score_sde.train import train

PNG = b"\x89PNG\r\n\x1a\n"
FAST = TINY + ["eval.nll_points=0", "eval.paths=false", "eval.per_class=3"]
SOLVERS = ["adaptive_sde", "ddim", "ddpm_ancestral", "dpm_solver_multistep",
           "dpm_solver_singlestep", "euler_maruyama", "heun", "predictor_corrector",
           "probability_flow", "torchsde_reverse"]


# -- labels in the data -------------------------------------------------------------------------
def test_toy_labels_are_the_components_and_squares():
    d = ring(300, 50, seed=3)
    _, k = ring_mixture().sample(350, generator=torch.Generator().manual_seed(3),
                                 return_components=True)
    assert torch.equal(torch.cat([d.train_labels, d.test_labels]), k) and d.num_classes == 8
    c = checkerboard(300, 50)
    cell = torch.floor(torch.cat([c.train, c.test]) + 2).long()
    assert torch.equal(torch.cat([c.train_labels, c.test_labels]),
                       2 * cell[:, 0] + cell[:, 1] // 2)
    assert c.num_classes == 8 and set(c.train_labels.tolist()) == set(range(8))
    m = two_moons(300, 50)
    assert m.num_classes == 2 and set(m.train_labels.tolist()) == {0, 1}
    assert swiss_roll(30, 5).num_classes is None


def test_digit_labels_follow_their_images_through_the_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    targets: dict[bytes, set[int]] = {}
    for img, y in zip(np.rint(bunch.images * 255 / 16).astype(np.uint8), bunch.target):
        targets.setdefault(img.tobytes(), set()).add(int(y))
    d = digits(seed=1)
    assert d.num_classes == 10 and d.train_labels.dtype == torch.long
    for x, y in ((d.train, d.train_labels), (d.test, d.test_labels)):
        levels = torch.round((x[:, 0] + 1) * 127.5).to(torch.uint8).numpy()
        assert all(int(k) in targets[img.tobytes()] for img, k in zip(levels, y))


def test_file_data_labels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    y = np.arange(20) % 3
    np.savez(tmp_path / "y.npz", x=levels, y=y)
    d = build_data(compose("train", ["data=npz", f"data.path={tmp_path / 'y.npz'}"]))
    assert d.num_classes == 3
    for x, lab in ((d.train, d.train_labels), (d.test, d.test_labels)):  # rows stay aligned
        k = torch.round((x[:, 0] + 1) * 127.5).long()
        index = [int(np.flatnonzero((levels == img.numpy()).all((1, 2)))[0]) for img in k]
        assert lab.tolist() == y[index].tolist()
    np.savez(tmp_path / "no_y.npz", x=levels)
    assert build_data(compose("train", ["data=npz", f"data.path={tmp_path / 'no_y.npz'}"])
                      ).num_classes is None
    np.savez(tmp_path / "bad.npz", x=levels, y=np.zeros(19))
    with pytest.raises(ValueError, match="labels in .*bad.npz.*must be 20 integers >= 0"):
        build_data(compose("train", ["data=npz", f"data.path={tmp_path / 'bad.npz'}"]))

    for i in range(6):
        folder = tmp_path / "imgs" / ("cat" if i % 2 else "ant")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(folder / f"{i}.png")
    d = build_data(compose("train", ["data=image_folder", f"data.path={tmp_path / 'imgs'}",
                                     "data.size=4", "data.grayscale=true",
                                     "data.test_fraction=0.5"]))
    assert d.num_classes == 2  # ant = 0, cat = 1: odd grey levels are cats
    for x, lab in ((d.train, d.train_labels), (d.test, d.test_labels)):
        i = torch.round((x[:, 0, 0, 0] + 1) * 127.5 / 40).long()
        assert lab.tolist() == (i % 2).tolist()
    Image.fromarray(levels[0]).save(tmp_path / "imgs" / "loose.png")  # not in a class folder
    d = build_data(compose("train", ["data=image_folder", f"data.path={tmp_path / 'imgs'}",
                                     "data.size=4", "data.test_fraction=0.5"]))
    assert d.num_classes is None


def test_dataset_checks_its_labels():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="all or none"):
        Dataset("d", x, x, train_labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="train_labels must be a long tensor of shape \\(4,\\)"):
        Dataset("d", x, x, train_labels=torch.zeros(3, dtype=torch.long),
                test_labels=torch.zeros(4, dtype=torch.long), num_classes=2)
    with pytest.raises(ValueError, match="test_labels must lie in \\[0, num_classes\\) = \\[0, 2\\)"):
        Dataset("d", x, x, train_labels=torch.zeros(4, dtype=torch.long),
                test_labels=torch.full((4,), 2), num_classes=2)


# -- settings and label dropout ---------------------------------------------------------------
def test_both_spellings_of_conditional_compose():
    assert compose("train").conditional is None  # null: unconditional
    assert compose("train", ["+conditional=true"]).conditional is True  # the spelling
    assert compose("train", ["conditional=true"]).conditional is True
    assert compose("train", ["experiment=digits-cond"]).conditional is True
    with pytest.raises(ValueError, match="train.label_dropout must be in \\[0, 1\\).*got 1.0"):
        validate_train(compose("train", ["train.label_dropout=1.0"]))
    with pytest.raises(ValueError, match="eval.guidance_scales must be a non-empty list"):
        validate_train(compose("train", ["eval.guidance_scales=[1,-2]"]))


@pytest.mark.parametrize("overrides, message", [
    (["guidance.scale=2"], "guidance.scale must be left at 1 without a label (add label=<class>)"),
    (["label=-1"], "label must be null (unconditional) or a class >= 0, got -1"),
    (["label=1", "guidance.scale=-1"], "guidance.scale must be >= 0, got -1.0"),
    (["inpaint.known=k.pt"], "inpaint.known and inpaint.mask must be given together"),
    (["inpaint.known=k.pt", "inpaint.mask=m.pt", "inpaint.resample=-1"],
     "inpaint.resample must be an int >= 0, got -1"),
])
def test_bad_sample_settings_name_the_setting(overrides, message):
    with pytest.raises(ValueError) as err:
        validate_eval(compose("sample", ["run=r", *overrides]))
    assert message in str(err.value)


def test_label_dropout_rate_and_stream():
    y = torch.arange(10).repeat(2000)
    out = drop_labels(y, 10, 0.1, torch.Generator().manual_seed(0))
    null = out == 10
    assert abs(null.double().mean().item() - 0.1) < 0.01  # 20000 draws: SE 0.002
    assert torch.equal(out[~null], y[~null])
    assert torch.equal(out, drop_labels(y, 10, 0.1, torch.Generator().manual_seed(0)))
    g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(drop_labels(y, 10, 0.0, g0), y)
    drop_labels(y, 10, 0.5, g1)
    assert torch.equal(g0.get_state(), g1.get_state())  # the stream does not depend on p


def test_conditional_needs_labels(tmp_path, capsys):
    run = tmp_path / "run"
    over = [o for o in FAST if not o.startswith("data.")]
    assert main(["train", f"run={run}", "data=swiss_roll", "data.n_train=64", "data.n_test=8",
                 "+conditional=true", *over]) == 2
    err = capsys.readouterr().err
    assert "conditional=true needs class labels, but data 'swiss_roll'" in err
    assert not list(run.glob("checkpoints/*.pt"))


# -- a tiny conditional run: train, reload, sample ---------------------------------------------
@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", f"run={run}", "+conditional=true", *FAST,
                 "eval.guidance_scales=[0,2]"]) == 0
    return run


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("plain") / "run"
    assert main(["train", f"run={run}", *FAST, "train.steps=2"]) == 0
    return run


def test_conditional_run_checkpoints_and_reloads(cond_run):
    state = load_checkpoint(cond_run / "checkpoints" / "ckpt_00000006.pt")
    assert state["num_classes"] == 8 and state["config"]["conditional"] is True
    assert state["model"]["net.label_embed.table.weight"].shape[0] == 9  # 8 classes + null
    run = load_run(cond_run)
    assert run.num_classes == 8 and run.model.net.num_classes == 8
    records = [json.loads(x) for x in (cond_run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert final["class_nfe_w0"] == final["class_nfe_w2"] == 6
    assert "class_accuracy_w0" not in final  # no judge unless eval.judge
    for name in ("classes_w0_final.png", "classes_w2_final.png", "samples_final.png"):
        assert (cond_run / "pictures" / name).read_bytes()[:8] == PNG


def _sample_cfg(run, name: str, *over: str):
    """A sample config of 5 points with 3 steps (torchsde_reverse: its default is 1000)."""
    base = [f"run={run}", f"solver={name}", "n=5", "threads=1", *over]
    if "steps" in compose("sample", base).solver:
        return compose("sample", [*base, "solver.steps=3"])
    return compose("sample", base + (["+solver.steps=3"] if name == "torchsde_reverse" else []))


@pytest.mark.parametrize("name", SOLVERS)
def test_guided_sampling_with_every_solver(cond_run, name):
    x = torch.load(commands.sample(_sample_cfg(cond_run, name, "label=3", "guidance.scale=2")),
                   weights_only=True)
    assert x.shape == (5, 2) and bool(torch.isfinite(x).all())


def test_guided_samples_are_classifier_free_guidance(cond_run):
    """The CLI's samples are those of solvers.classifier_free_guidance over the run's model, and
    label=null gives the null label's (unconditional) samples."""
    run = load_run(cond_run)
    for over, score_fn in (
            (["label=5", "guidance.scale=3"],
             solvers.classifier_free_guidance(run.model, 5, 3.0, null_label=8)),
            ([], lambda x, t: run.model(x, t, torch.full((x.shape[0],), 8)))):
        cfg = _sample_cfg(cond_run, "ddim", *over)
        gen = torch.Generator().manual_seed(distributed.block_seed(0, 0))  # the first block's
        x_T = run.sde.prior_sample((5, 2), generator=gen)
        ref = build_solver(cfg)(run.sde, score_fn, x_T, generator=gen).x
        torch.testing.assert_close(torch.load(commands.sample(cfg), weights_only=True), ref)


def test_sample_cli_with_label(cond_run, capsys):
    assert main(["sample", f"run={cond_run}", "label=3", "guidance.scale=2", "n=4",
                 "solver.steps=3"]) == 0
    assert "euler_maruyama_label3_w2" in capsys.readouterr().out
    assert len(list((cond_run / "samples").glob("euler_maruyama_label3_w2_*.png"))) >= 1
    # a scale with a dot is part of the name, not a suffix: every file keeps it
    assert main(["sample", f"run={cond_run}", "label=3", "guidance.scale=1.5", "n=2",
                 "solver.steps=2"]) == 0
    for ext in ("pt", "json", "png"):
        assert len(list((cond_run / "samples").glob(f"euler_maruyama_label3_w1.5_*.{ext}"))) == 1


def test_label_out_of_range(cond_run, capsys):
    assert main(["sample", f"run={cond_run}", "label=8", "n=2", "solver.steps=2"]) == 2
    assert f"label must be a class in [0, 8) of run {cond_run}, got 8" in capsys.readouterr().err


def test_label_on_an_unconditional_run(plain_run, capsys):
    assert main(["sample", f"run={plain_run}", "label=1", "n=2", "solver.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "label=1 needs a class-conditional run (trained with conditional=true)" in err


# -- inpainting from files ---------------------------------------------------------------------
def _inpaint(tmp_path, known, mask, suffix=".pt", *over):
    """Overrides naming known and mask saved as `suffix` files in tmp_path."""
    paths = []
    for name, value in (("known", known), ("mask", mask)):
        p = tmp_path / f"{name}{suffix}"
        if suffix == ".pt":
            torch.save(value, p)
        elif suffix == ".npy":
            np.save(p, value.numpy())
        else:
            np.savez(p, **{name: value.numpy()})
        paths.append(p)
    return ["inpaint.known=" + str(paths[0]), "inpaint.mask=" + str(paths[1]), *over]


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz"])
def test_inpainting_keeps_the_known_coordinate(plain_run, tmp_path, suffix):
    known = torch.tensor([1.5, 0.0])
    mask = torch.tensor([1.0, 0.0])
    if suffix == ".npy":  # one row per sample
        known = torch.stack([torch.linspace(-1, 1, 5), torch.zeros(5)], 1)
        mask = mask.expand(5, 2).clone()
    over = _inpaint(tmp_path, known, mask, suffix, "inpaint.resample=1")
    x = torch.load(commands.sample(_sample_cfg(plain_run, "euler_maruyama", *over)),
                   weights_only=True)
    assert x.shape == (5, 2)
    torch.testing.assert_close(x[:, 0], known.expand(5, 2)[:, 0])  # the known part, exactly
    assert bool(torch.isfinite(x[:, 1]).all()) and x[:, 1].std() > 0


def test_inpainting_with_a_label_and_blocks(cond_run, tmp_path):
    """Known values per sample follow their sample across blocks of batch_size."""
    known = torch.stack([torch.arange(7.0), torch.zeros(7)], 1)
    over = _inpaint(tmp_path, known, torch.tensor([1, 0]), ".pt", "label=2",
                    "guidance.scale=2", "n=7", "batch_size=3")
    x = torch.load(commands.sample(_sample_cfg(cond_run, "ddim", *over)), weights_only=True)
    torch.testing.assert_close(x[:, 0], torch.arange(7.0))


def test_inpainting_errors_name_the_setting(plain_run, tmp_path, capsys):
    over = _inpaint(tmp_path, torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"inpaint.known has shape \(3,\), but a sample of the "
                                         r"run has shape \(2,\): give \(2,\).*\(5, 2\)"):
        commands.sample(_sample_cfg(plain_run, "ddim", *over))
    over = _inpaint(tmp_path, torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="solver adaptive_sde has none"):
        commands.sample(_sample_cfg(plain_run, "adaptive_sde", *over))
    assert main(["sample", f"run={plain_run}", "inpaint.known=nowhere.pt",
                 f"inpaint.mask={tmp_path / 'mask.pt'}"]) == 2
    assert "inpaint.known must be an existing .pt, .npy or .npz file" in capsys.readouterr().err


# -- the digits judge and the digits preset ----------------------------------------------------
def test_judge_recognises_real_digits():
    d = digits()
    judge = fit_judge(d)
    assert judge.test_accuracy > 0.9
    assert judge.accuracy(d.test, d.test_labels) == pytest.approx(judge.test_accuracy)
    assert judge.predict(d.test[:5]).shape == (5,)
    with pytest.raises(ValueError, match="the judge needs class labels"):
        fit_judge(swiss_roll(30, 5))


def test_digits_cond_preset_end_to_end(tmp_path, capsys):
    """The preset's whole path on a tiny U-Net: train, unconditional bits/dim, per-class
    pictures at scales 0, 1, 3 with the judge's verdicts, then a guided sample."""
    run = tmp_path / "run"
    over = ["experiment=digits-cond", *TINY_DIGITS, "eval.per_class=2"]
    assert main(["train", f"run={run}", *over]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out and "judged to be of the asked-for class (2 per class)" in out
    final = read_metrics(run, "eval")[-1]
    assert final["judge_test_accuracy"] > 0.9 and final["chance"] == pytest.approx(0.1)
    for w in ("0", "1", "3"):
        assert 0 <= final[f"class_accuracy_w{w}"] <= 1
        assert (run / "pictures" / f"classes_w{w}_final.png").read_bytes()[:8] == PNG
    assert final["class_nfe_w3"] == 4  # 3 Euler-Maruyama steps + the denoising step
    assert main(["sample", f"run={run}", "label=7", "guidance.scale=3", "n=3",
                 "solver.steps=2"]) == 0
    (path,) = (run / "samples").glob("euler_maruyama_label7_w3_*.pt")
    assert torch.load(path, weights_only=True).shape == (3, 1, 8, 8)


@pytest.mark.slow
def test_conditional_ring_samples_the_asked_for_component(tmp_path):
    """A conditional MLP trained for 1000 steps on the ring: at scale 1 the judge (a logistic
    regression on the points, 0.855 accurate on the ring's overlapping components) assigns most
    samples of component k to k, nearly as often as it does real points (measured: 0.84 to
    0.86); at scale 0 (the null label, unconditional) about 1/8 of them."""
    over = ["logger=none", "threads=1", "+conditional=true", "train.steps=1000",
            "train.batch_size=256", "progress=false", "train.log_every=100",
            "data.n_train=20000", "data.n_test=200", "model.net.hidden=64", "eval.n_samples=8",
            "eval.nll_points=0", "eval.paths=false", "eval.per_class=200",
            "eval.guidance_scales=[0,1]", "eval.judge=true", "solver.steps=100"]
    res = train(compose("train", [f"run={tmp_path}", *over]), tmp_path)
    m = res.metrics
    assert m["class_accuracy_w1"] > m["judge_test_accuracy"] - 0.1, m
    assert abs(m["class_accuracy_w0"] - 0.125) < 0.06, m
