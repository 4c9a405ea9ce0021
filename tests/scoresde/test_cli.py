"""The `score-sde` entry point end to end: train a few steps into a temporary folder (wandb off),
then sample and compute the likelihood from that folder; bad overrides fail fast and clearly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tiny_runs import TINY

from score_sde.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "sample", "likelihood"))


def test_train_sample_likelihood(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run={run}", *TINY, "eval.every=3"]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {run}" in out and "test NLL:" in out and "true entropy:" in out
    # the run folder: resolved config, last K checkpoints, metrics, pictures
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt_00000004.pt", "ckpt_00000006.pt"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]  # periodic (every 3) and final
    assert (run / "pictures" / "samples_step00000003.png").read_bytes()[:8] == PNG
    final = evals[-1]
    assert math.isfinite(final["test_nll"]) and final["nll_points"] == 8
    for name in ("samples_final.png", "paths_final.png", "loss.png"):
        assert (run / "pictures" / name).read_bytes()[:8] == PNG
    assert "pictures:" in out and str(run / "pictures" / "loss.png") in out

    assert main(["sample", f"run={run}", "n=10", "solver=ddim", "solver.steps=4"]) == 0
    pts = list((run / "samples").glob("ddim_*.pt"))
    assert len(pts) == 1
    x = torch.load(pts[0], weights_only=True)
    assert x.shape == (10, 2) and bool(torch.isfinite(x).all())
    assert pts[0].with_suffix(".png").read_bytes()[:8] == PNG

    assert main(["likelihood", f"run={run}", "data.n=8", "rtol=1e-3", "atol=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "NLL:" in out and "true entropy:" in out
    lk = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert lk["kind"] == "likelihood" and lk["n"] == 8 and math.isfinite(lk["nll"])


@pytest.mark.parametrize("overrides, message", [
    (["sde=foo"], "Could not find 'sde/foo'"),
    (["train.lr=-0.001"], "train.lr must be > 0, got -0.001"),
    (["model=unet"], "model.input is 'image'"),
    (["train.lrr=0.1"], "lrr"),
    (["solver=ddim", "solver.eta=2.0"], "solver score_sde.solvers.ddim rejects its settings"),
])
def test_bad_overrides_fail_fast(tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("model.net")]
    code = main(["train", f"run={run}", *tiny, *overrides])
    assert code != 0
    assert message in capsys.readouterr().err
    assert not list(run.glob("checkpoints/*.pt"))  # failed before training


def test_sample_needs_a_run_folder(tmp_path, capsys):
    assert main(["sample", f"run={tmp_path}"]) == 2
    assert "run must be a run folder" in capsys.readouterr().err


def test_multirun_sweeps_sdes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = [o for o in TINY if not o.startswith("train.steps")] + [
        "train.steps=2", "eval.nll_points=0", "eval.paths=false", f"hydra.sweep.dir={tmp_path}/m"]
    assert main(["train", "-m", "sde=vp,ve", *tiny]) == 0
    runs = sorted(p.name for p in (tmp_path / "m").iterdir() if p.is_dir())
    assert runs == ["0", "1"]
    for r, target in zip(runs, ("score_sde.sde_lib.VPSDE", "score_sde.sde_lib.VESDE")):
        assert (tmp_path / "m" / r / "checkpoints" / "ckpt_00000002.pt").is_file()
        assert f"_target_: {target}" in (tmp_path / "m" / r / "config.yaml").read_text()


def test_digits_run_reports_bits_per_dim(tmp_path, capsys):
    """The image path end to end: U-Net, dequantized training, a sample grid, test bits/dim."""
    run = tmp_path / "run"
    over = ["experiment=digits-vp", "logger=none", "train.steps=2", "train.batch_size=8",
            "train.progress=false", "model.net.channels=8", "model.net.norm_groups=4",
            "eval.n_samples=4", "eval.nll_points=4", "eval.rtol=1e-2", "eval.atol=1e-2",
            "eval.gmm_baseline=false", "solver.steps=3"]
    assert main(["train", f"run={run}", *over]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out
    final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    # an untrained model is far from the data, but bits/dim of 8-bit images are positive
    assert final["kind"] == "eval" and final["test_bpd"] > 0 and math.isfinite(final["test_bpd"])
    assert (run / "pictures" / "samples_final.png").read_bytes()[:8] == PNG
