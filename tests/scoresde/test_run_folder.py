"""A run folder is data: its config.yaml runs no code, whatever it names; it must agree with the
config stored in the checkpoint on what defines the model; one process trains into it at a time;
a checkpoint of NaN weights is refused before anything is sampled."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_runs import QUICK

from score_sde.cli import main
from score_sde.config import compose
from score_sde.run_folder import run_lock
from score_sde.targets import choices
from score_sde.train import train

SAMPLE = ["n=4", "solver.steps=2"]


def _copy(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _edit(run: Path, change) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    change(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Payload:
    """Unpickling it creates the file `marker` (what a pickle's code could do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _open_victim(cfg, run, victim):
    cfg["sde"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    return "sde._target_", "'builtins.open'"


def _load_pickle(cfg, run, victim):
    cfg["sde"] = {"_target_": "torch.load", "f": str(run / "weights.pkl"), "weights_only": False}
    return "sde._target_", "'torch.load'"


def _nested(cfg, run, victim):
    cfg["model"]["net"]["act"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    return "model.net.act._target_", "'builtins.open'"


def _args(cfg, run, victim):
    cfg["sde"]["_args_"] = [{"_target_": "torch.load", "f": str(run / "weights.pkl")}]
    return "sde._args_", "torch.load"


def _decoded(cfg, run, victim):
    cfg["sde"]["beta_max"] = ("${oc.decode:'{_target_: builtins.open, file: " + str(victim)
                              + ", mode: w}'}")
    return "interpolation at sde.beta_max", ""


def _project_function(cfg, run, victim):
    cfg["data"] = {"_target_": "score_sde.checkpoint.save_checkpoint", "state": {},
                   "folder": str(victim.parent), "step": 1}
    return "data._target_", "'score_sde.checkpoint.save_checkpoint'"


def _imported_name(cfg, run, victim):
    cfg["data"] = {"_target_": "score_sde.data.Path", "args": str(victim)}
    return "data._target_", "'score_sde.data.Path'"


EVIL = [_open_victim, _load_pickle, _nested, _args, _decoded, _project_function, _imported_name]


@pytest.mark.parametrize("evil", EVIL, ids=[e.__name__.strip("_") for e in EVIL])
def test_a_run_config_runs_no_code(tmp_path, trained, monkeypatch, capsys, evil):
    """config.yaml naming `builtins.open` on a victim file, `torch.load` of a pickle beside it,
    a target nested in a slot, hydra's `_args_`, a target decoded from an interpolation, or a
    function of this project that is not a builder: nothing runs, nothing is written, and the
    error names the key."""
    run, victim, marker = _copy(trained, tmp_path), tmp_path / "victim.txt", tmp_path / "ran"
    victim.write_text("precious")
    with open(run / "weights.pkl", "wb") as f:
        pickle.dump(Payload(str(marker)), f)
    key = {}
    _edit(run, lambda cfg: key.update(named=evil(cfg, run, victim)))
    before = _files(run)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = [["sample", f"run={run}", *SAMPLE]]
    if evil in (_open_victim, _load_pickle):  # every command that reads a run (seconds each)
        commands += [["likelihood", f"run={run}", "data.n=2"], ["train", f"run={run}"]]
    for argv in commands:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(k in err for k in key["named"]), err
        assert victim.read_text() == "precious" and not marker.exists()
        assert _files(run) == before and list(work.iterdir()) == []


def test_overrides_build_only_this_projects_classes(capsys):
    assert main(["sample", "run=x", "solver._target_=builtins.exec"]) == 2
    err = capsys.readouterr().err
    assert "solver._target_ in the config is 'builtins.exec'" in err and "a sampler" in err
    assert "score_sde.sde_lib.VPSDE" in choices("sde") and "score_sde.sde_lib.SDE" not in choices(
        "sde")  # the abstract base builds nothing
    assert "score_sde.solvers.ddim" in choices("solver")
    assert "score_sde.solvers.log_likelihood" not in choices("solver")  # not a sampler


def test_config_yaml_must_agree_with_its_checkpoint(tmp_path, trained, capsys):
    """beta_max 20 -> 5 and prediction eps -> x0 in config.yaml: sample, likelihood and resume
    refuse, naming both; solver, evaluation and data-location settings may differ; data of
    another shape are refused."""
    run = _copy(trained, tmp_path)

    def model_edit(cfg):
        cfg["sde"]["beta_max"], cfg["model"]["prediction"] = 5.0, "x0"

    _edit(run, model_edit)
    before = _files(run)
    for argv in (["sample", f"run={run}", *SAMPLE], ["likelihood", f"run={run}", "data.n=2"],
                 ["train", f"run={run}", "train.steps=8"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "sde.beta_max: 20.0 -> 5.0" in err and "model.prediction: 'eps' -> 'x0'" in err
        assert "stored in its checkpoint" in err
    assert _files(run) == before

    shutil.copy(trained / "config.yaml", run / "config.yaml")

    def harmless(cfg):
        cfg["solver"]["steps"], cfg["eval"]["n_samples"], cfg["data"]["n_test"] = 3, 5, 16

    _edit(run, harmless)
    assert main(["sample", f"run={run}", *SAMPLE, f"out={tmp_path / 'out'}"]) == 0
    capsys.readouterr()

    _edit(run, lambda cfg: cfg.update(data={"_target_": "score_sde.data.digits"}))
    assert main(["sample", f"run={run}", *SAMPLE, f"out={tmp_path / 'out'}"]) == 2
    assert "have samples of shape (1, 8, 8), but the model" in capsys.readouterr().err


def test_one_trainer_per_run_folder(tmp_path, trained, capsys):
    """A process holding the run's lock (as a trainer does) makes a second trainer fail at start,
    naming its pid; once that process is killed (SIGKILL: no cleanup), the lock is free."""
    run = _copy(trained, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from score_sde.run_folder import run_lock\nwith run_lock(Path(sys.argv[1])):\n"
         "    print('held', flush=True)\n    time.sleep(120)\n", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _files(run)
        assert main(["train", f"run={run}", "train.steps=8"]) == 2
        err = capsys.readouterr().err
        assert f"is being trained by process {holder.pid} on " in err and "train.lock" in err
        assert _files(run) == before
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run) as lock:
        assert lock.read_text().startswith(f"process {os.getpid()} on ")


def test_training_writes_nothing_into_a_folder_that_is_not_a_run(tmp_path):
    """`train` (the function too, not only the CLI) refuses a folder with another program's
    config.yaml, or with other files, and leaves it as it was."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "config.yaml").write_text("lr: 3\n")
    cfg = compose("train", QUICK)
    with pytest.raises(ValueError, match="config.yaml is not a config of score-sde train"):
        train(cfg, folder)
    (folder / "config.yaml").unlink()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not a run of score-sde train \(no config.yaml; it "
                                         r"holds notes.txt\)"):
        train(cfg, folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_a_checkpoint_of_nan_weights_is_refused(tmp_path, trained, capsys):
    run = _copy(trained, tmp_path)
    path = run / "checkpoints" / "ckpt_00000006.pt"
    state = torch.load(path, weights_only=True)
    state["ema"]["module"]["net.out.2.weight"].fill_(float("nan"))
    torch.save(state, path)
    assert main(["sample", f"run={run}", *SAMPLE]) == 2
    err = capsys.readouterr().err
    assert "holds non-finite EMA weights (in net.out.2.weight)" in err and "ema=false" in err
    assert not (run / "samples").exists()
    assert main(["sample", f"run={run}", *SAMPLE, "ema=false"]) == 0  # the raw weights are fine


def test_a_broken_config_yaml_is_one_line(tmp_path, trained, capsys):
    """config.yaml that is not YAML, lacks the SDE, holds a key no setting has, or an
    interpolation: one line naming the file and the fix (the checkpoint's stored config), and
    nothing written."""
    run = _copy(trained, tmp_path)
    cases = [("sde: [unclosed\n  beta_max: 2\n", "is not valid YAML"),
             (lambda cfg: cfg.pop("sde"), "lacks sde, which defines the run"),
             (lambda cfg: cfg["train"].update(stepz=3), "Key 'stepz' not in 'TrainSettings'"),
             (lambda cfg: cfg["sde"].update(beta_max="${train.lr}"),
              "holds an interpolation at sde.beta_max")]
    for change, message in cases:
        shutil.copy(trained / "config.yaml", run / "config.yaml")
        if isinstance(change, str):
            (run / "config.yaml").write_text(change)
        else:
            _edit(run, change)
        before = _files(run)
        assert main(["sample", f"run={run}", *SAMPLE]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and str(run / "config.yaml") in err, err
        assert "repair it from the config stored in its checkpoints" in err
        assert _files(run) == before
