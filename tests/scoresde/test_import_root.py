"""The CLI from inside a user's project that has its own `models/` package, `conf/` folder and
`sde_lib.py`: `python -m score_sde.cli` and the `score-sde` script train from the library's own
configs and classes, whatever the current folder holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from tiny_runs import TINY


@pytest.fixture
def user_project(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise ImportError('the user models')\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "train.yaml").write_text("defaults: [nothing_here]\n")
    (tmp_path / "sde_lib.py").write_text("raise ImportError('the user sde_lib')\n")
    return tmp_path


@pytest.mark.parametrize("how", ["module", "script"])
def test_train_in_a_user_project(user_project, how):
    if how == "script":
        # the script beside this interpreter (the venv's bin/), whether or not the venv is active
        exe = shutil.which("score-sde", path=os.pathsep.join([os.path.dirname(sys.executable),
                                                               os.environ.get("PATH", "")]))
        if exe is None:
            pytest.skip("the score-sde script is not installed beside this interpreter or on PATH")
        cmd = [exe]
    else:
        cmd = [sys.executable, "-m", "score_sde.cli"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(user_project)}
    r = subprocess.run([*cmd, "train", "run=run", *TINY, "train.steps=20"], cwd=user_project,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (user_project / "run" / "checkpoints" / "ckpt_00000020.pt").is_file()
    assert "_target_: score_sde.models.MLP" in (user_project / "run" / "config.yaml").read_text()
