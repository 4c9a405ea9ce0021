"""`score-sde sample tune.pilot=<n>`: a grid tuned to the trained model before sampling."""

from __future__ import annotations

import pytest
import torch
from tiny_runs import TINY

from score_sde.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned") / "run"
    assert main(["train", f"run={folder}", *TINY, "eval.nll_points=0", "eval.paths=false"]) == 0
    return folder


def test_sample_on_a_tuned_grid(run, capsys):
    assert main(["sample", f"run={run}", "n=12", "solver=dpm_solver_multistep",
                 "solver.steps=6", "solver.corrector=true", "tune.pilot=64",
                 "tune.search_evals=20", "tune.shift=true"]) == 0
    out = capsys.readouterr().out
    assert "grid tuned on 64 prior draws" in out
    times = [float(t) for t in out.split("t = ")[1].splitlines()[0].split(", ")]
    assert len(times) == 7 and times[0] == 1.0 and times == sorted(times, reverse=True)
    (pt,) = (run / "samples").glob("dpm_solver_multistep_tuned_*.pt")
    x = torch.load(pt, weights_only=True)
    assert x.shape == (12, 2) and bool(torch.isfinite(x).all())


@pytest.mark.parametrize("overrides, message", [
    (["tune.pilot=8"], "tune.pilot needs a deterministic grid solver"),
    (["tune.pilot=8", "solver=ddim", "solver.eta=1.0"], "tune.pilot needs a deterministic"),
    (["tune.pilot=-1"], "tune.pilot must be an int >= 0"),
    (["tune.pilot=8", "solver=ddim", "tune.rtol=0"], "tune.rtol must be > 0"),
    (["tune.pilot=8", "solver=ddim", "tune.shift=true"], "tune.shift must be false unless"),
    (["tune.pilot=8", "solver=ddim", "tune.shift=true", "tune.search_evals=5"],
     "tune.shift needs solver=dpm_solver_multistep"),
])
def test_bad_tune_settings_are_named(run, capsys, overrides, message):
    assert main(["sample", f"run={run}", "n=4", *overrides]) != 0
    assert message in capsys.readouterr().err
