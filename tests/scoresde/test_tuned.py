"""`score-sde sample tune.pilot=<n>`: a grid tuned to the trained model before sampling, its
pilot error against the solver's own grid, saved and reused with `tune.load=<file>`."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny_runs import TINY

from score_sde.cli import main
from score_sde.samples import load_samples


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tuned") / "run"
    assert main(["train", f"run={folder}", *TINY, "eval.nll_points=0", "eval.paths=false"]) == 0
    return folder


def test_sample_on_a_tuned_grid(run, capsys):
    solver = ["solver=dpm_solver_multistep", "solver.steps=6", "solver.corrector=unipc"]
    assert main(["sample", f"run={run}", "n=12", *solver, "tune.pilot=64",
                 "tune.search_evals=20", "tune.shift=true"]) == 0
    out = capsys.readouterr().out
    assert "grid tuned on 64 prior draws" in out
    times = [float(t) for t in out.split("t = ")[1].splitlines()[0].split(", ")]
    assert len(times) == 7 and times[0] == 1.0 and times == sorted(times, reverse=True)
    tuned, own, gain = map(float, re.search(r"pilot draws\): (\S+) on the tuned grid, (\S+) on "
                                            r"the solver's own grid \((\S+)x smaller\)", out).groups())
    (pt,) = (run / "samples").glob("dpm_solver_multistep_tuned_*.pt")
    x, meta = load_samples(pt)
    assert x.shape == (12, 2) and bool(torch.isfinite(x).all())
    grid = json.loads(open(meta["grid"]).read())
    assert grid["pilot_error"] == pytest.approx(tuned, rel=1e-3)
    assert grid["own_grid_error"] == pytest.approx(own, rel=1e-3)
    assert grid["gain"] == pytest.approx(own / tuned, rel=1e-2) == pytest.approx(gain, rel=1e-2)
    assert grid["ts"][0] == 1.0 and len(grid["ts"]) == 7 and len(grid["eval_ts"]) == 6
    assert grid["sde"]["_target_"] == "score_sde.sde_lib.VPSDE" and grid["step"] == 6
    # the saved grid, reused: the same samples from the same seed, without tuning
    assert main(["sample", f"run={run}", "n=12", *solver, f"tune.load={meta['grid']}"]) == 0
    assert "grid tuned" not in capsys.readouterr().out
    again = [p for p in (run / "samples").glob("dpm_solver_multistep_tuned_*.pt") if p != pt]
    assert torch.equal(load_samples(again[0])[0], x)
    # a grid of another step count, or with eval_ts for a solver that takes none, is refused
    assert main(["sample", f"run={run}", "n=2", "solver=dpm_solver_multistep", "solver.steps=5",
                 f"tune.load={meta['grid']}"]) == 2
    assert "has 6 steps but solver.steps is 5; set solver.steps=6" in capsys.readouterr().err
    assert main(["sample", f"run={run}", "n=2", "solver=ddim", "solver.steps=6",
                 f"tune.load={meta['grid']}"]) == 2
    assert "only solver=dpm_solver_multistep takes" in capsys.readouterr().err
    grid["sde"]["beta_max"] = 10.0
    other = run.parent / "other.grid.json"
    other.write_text(json.dumps(grid))
    assert main(["sample", f"run={run}", "n=2", *solver, f"tune.load={other}"]) == 2
    assert "was tuned for sde" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (["tune.pilot=8"], "tune.pilot needs a deterministic grid solver"),
    (["tune.pilot=8", "solver=ddim", "solver.eta=1.0"], "tune.pilot needs a deterministic"),
    (["tune.pilot=-1"], "tune.pilot must be an int >= 0"),
    (["tune.pilot=8", "solver=ddim", "tune.rtol=0"], "tune.rtol must be > 0"),
    (["tune.pilot=8", "solver=ddim", "tune.shift=true"], "tune.shift must be false unless"),
    (["tune.pilot=8", "solver=ddim", "tune.shift=true", "tune.search_evals=5"],
     "tune.shift needs solver=dpm_solver_multistep"),
    (["tune.pilot=8", "solver=ddim", "tune.load=g.json"], "tune.load must be null with"),
])
def test_bad_tune_settings_are_named(run, capsys, overrides, message):
    assert main(["sample", f"run={run}", "n=4", *overrides]) != 0
    assert message in capsys.readouterr().err
