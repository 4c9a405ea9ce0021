"""The installed package: one import root (`score_sde`), public names import, the console script
answers --help, and the library layers never import the app's frameworks (arrows point down only).

Every import check runs in a fresh process started in an empty folder, so that the repository's own
top-level folders (`models/`, `solvers/`, ...) are not on sys.path and only the install is seen."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BARE = ("sde_lib", "models", "solvers", "scoresde", "conf")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)


def test_public_names_import(tmp_path):
    r = _python("from score_sde.sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE, dsm_loss\n"
                "from score_sde.models import ScoreModel, MLP, UNet, EMA\n"
                "from score_sde.solvers import euler_maruyama, ddim, log_likelihood\n"
                "import score_sde; print(score_sde.__version__)", tmp_path)
    assert r.returncode == 0, r.stderr
    from importlib.metadata import version
    assert r.stdout.strip() == version("score-sde")


@pytest.mark.parametrize("package", ["sde_lib", "models", "solvers"])
def test_library_layers_import_no_app_framework(package, tmp_path):
    code = (f"import sys, score_sde.{package}; bad = [m for m in ('hydra', 'omegaconf', 'wandb', "
            "'diffusers', 'score_sde.cli', 'score_sde.train', 'score_sde.config') if m in sys.modules]; "
            "assert not bad, bad")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr


def test_sde_lib_depends_on_torch_only(tmp_path):
    code = ("import sys, score_sde.sde_lib; bad = [m for m in ('torchsde', 'torchdiffeq', "
            "'scipy', 'score_sde.models', 'score_sde.solvers') if m in sys.modules]; assert not bad, bad")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr


def test_no_bare_imports_in_the_tree():
    """Nothing in the repository imports the folders by their bare names: with the repository on
    sys.path (as under `python -m pytest`) such an import would still work here and fail for users."""
    bad = []
    files = [p for d in ("scoresde", "sde_lib", "models", "solvers", "conf", "tests", "bench")
             for p in (ROOT / d).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                    if n.split(".")[0] in BARE]
    assert not bad, bad


def test_user_folders_do_not_shadow_the_library(tmp_path):
    """A project with its own `models/` package, `conf/` folder and `sde_lib.py` imports the
    library's layers, not its own."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "train.yaml").write_text("mine: true\n")
    (tmp_path / "sde_lib.py").write_text("MINE = True\n")
    code = ("import models, sde_lib; assert models.MINE and sde_lib.MINE\n"
            "from score_sde.models import ScoreModel\nfrom score_sde.sde_lib import VPSDE\n"
            "from score_sde.solvers import ddim\nimport score_sde.conf, importlib.resources as r\n"
            "assert r.files('score_sde.conf').joinpath('train.yaml').is_file()")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr


def test_console_script_help(tmp_path):
    exe = shutil.which("score-sde")
    cmd = [exe] if exe else [sys.executable, "-m", "score_sde.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert "train" in out and "sample" in out and "likelihood" in out


@pytest.mark.slow
def test_wheel_has_one_top_level_name(tmp_path):
    """A regular (non-editable) build: every file of the wheel lies under `score_sde/` or its
    dist-info, the configs and py.typed travel with it. Built from a copy of the sources, so that
    setuptools' build/ folder lands there and not in the repository."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "outputs", "multirun", "*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("score_sde-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"score_sde"}
    for f in ("score_sde/py.typed", "score_sde/conf/train.yaml", "score_sde/conf/sde/vp.yaml",
              "score_sde/sde_lib/vp.py", "score_sde/models/unet.py", "score_sde/solvers/ddim.py",
              "score_sde/cli.py"):
        assert f in names
