"""The installed package: public names import, the console script answers --help, and the library
layers never import the app's frameworks (DESIGN.md: arrows point down only)."""

import shutil
import subprocess
import sys

import pytest


def test_public_names_import():
    from sde_lib import VESDE, VPSDE, GaussianMixture, SubVPSDE, dsm_loss  # noqa: F401


@pytest.mark.parametrize("package", ["sde_lib", "models", "solvers"])
def test_library_layers_import_no_app_framework(package):
    code = (f"import sys, {package}; bad = [m for m in ('hydra', 'omegaconf', 'wandb', 'scoresde') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sde_lib_depends_on_torch_only():
    code = ("import sys, sde_lib; bad = [m for m in ('torchsde', 'torchdiffeq', "
            "'scipy', 'models', 'solvers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_help():
    exe = shutil.which("score-sde")
    cmd = [exe] if exe else [sys.executable, "-m", "scoresde.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    assert "train" in out and "sample" in out and "likelihood" in out
