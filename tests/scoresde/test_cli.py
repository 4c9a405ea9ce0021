"""The `score-sde` entry point end to end: train a few steps into a temporary folder (wandb off),
then sample and compute the likelihood from that folder; the README's sweep runs as written and
ends with its table; run folders are named by what varies; every bad start is one line, status 2,
no traceback and nothing on disk; `--help` imports no torch and lists what the command takes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from tiny_runs import QUICK, TINY, TINY_DIGITS

from score_sde import commands
from score_sde.cli import main
from score_sde.metrics import read_metrics
from score_sde.samples import load_samples
from score_sde.sweep import run_name
from score_sde.usage import choices

PNG = b"\x89PNG\r\n\x1a\n"


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "sample", "likelihood"))


def test_help_imports_no_torch():
    """`score-sde --help` and each command's --help, in a fresh process: torch never loads, and
    a command lists only its own groups (sample: solver, not data / sde / model)."""
    code = ("import sys; from score_sde.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['sample', '--help'],"
            " ['likelihood', '--help']):\n"
            "    assert main(argv) == 0\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("TORCH False")
    train_help, sample_help, likelihood_help = r.stdout.split("usage: score-sde ")[2:]
    for group in ("data:", "sde:", "model:", "solver:", "experiment:"):
        assert f"  {group}" in train_help
    assert "  solver: " in sample_help and "[euler_maruyama]" in sample_help
    for group in ("data:", "sde:", "model:", "experiment:", "logger:"):
        assert f"  {group}" not in sample_help
        # likelihood takes data=<name> (another data set than the run's; a pretrained model's)
        assert (f"  {group}" in likelihood_help) == (group == "data:")
    assert "step_size: null" in likelihood_help and "max_steps: 10000" in likelihood_help


def test_train_sample_likelihood(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"run={run}", *TINY, "eval.every=3", "eval.divergence=hutchinson"]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {run}" in out and "test NLL:" in out and "true entropy:" in out
    # train.log holds what the console showed, the final summary included
    log = (run / "train.log").read_text()
    assert all(line in log for line in out.splitlines() if line.strip())
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
    assert final["sample_nfe"] == 6  # 5 Euler-Maruyama steps and the denoising step, per sample
    for name in ("samples_final.png", "paths_final.png", "loss.png"):
        assert (run / "pictures" / name).read_bytes()[:8] == PNG
    assert "pictures:" in out and str(run / "pictures" / "loss.png") in out

    # 3 blocks of 4 samples: the NFE is per sample (4 ddim steps), not summed over blocks
    assert main(["sample", f"run={run}", "n=10", "batch_size=4", "solver=ddim",
                 "solver.steps=4"]) == 0
    assert "4 NFE per sample" in capsys.readouterr().out
    (pt,) = (run / "samples").glob("ddim_*.pt")
    x, meta = load_samples(pt)
    assert torch.equal(x, torch.load(pt, weights_only=True))
    assert x.shape == (10, 2) and bool(torch.isfinite(x).all())
    assert meta["nfe_per_sample"] == 4 and meta["nfe_per_block"] == [4, 4, 4]
    assert meta["solver"] == "score_sde.solvers.ddim" and meta["solver_settings"]["steps"] == 4
    assert meta["seed"] == 0 and meta["n"] == 10 and meta["run"] == str(run)
    assert meta["checkpoint"] == str(run / "checkpoints" / "ckpt_00000006.pt")
    assert meta["step"] == 6 and meta["label"] is None and meta["grid"] is None
    assert pt.with_suffix(".png").read_bytes()[:8] == PNG

    # one evaluation path: the likelihood command with training's seed and eval settings gives
    # training's final test NLL, Hutchinson probes included
    assert main(["likelihood", f"run={run}", "data.n=8", "rtol=1e-3", "atol=1e-3",
                 "divergence=hutchinson"]) == 0
    out = capsys.readouterr().out
    assert "NLL:" in out and "true entropy:" in out
    lk = read_metrics(run, "likelihood")[-1]
    assert lk["n"] == 8 and lk["nll"] == final["test_nll"] and lk["nfe"] == final["nll_nfe"]
    assert lk["stderr"] == final["test_nll_stderr"]

    # every solver setting of the likelihood from the CLI: a fixed-step method and its step
    assert main(["likelihood", f"run={run}", "data.n=4", "method=rk4", "step_size=0.25"]) == 0
    assert read_metrics(run, "likelihood")[-1]["nfe"] == 16  # 4 steps of 4 evaluations
    # score_sde's batch error control and a float64 state: the same NLL to the solver's tolerance
    nll = {}
    for extra in ([], ["error_control=batch", "state_dtype=float64"]):
        assert main(["likelihood", f"run={run}", "data.n=4", "rtol=1e-5", "atol=1e-5", *extra]) == 0
        nll[len(extra)] = read_metrics(run, "likelihood")[-1]["nll"]
    assert abs(nll[0] - nll[2]) < 1e-2
    # Hutchinson probes held fixed through the solve instead of redrawn: the key reaches the solver
    nll = {}
    for redraw in ("true", "false"):
        assert main(["likelihood", f"run={run}", "data.n=4", "divergence=hutchinson",
                     f"redraw_probes={redraw}"]) == 0
        nll[redraw] = read_metrics(run, "likelihood")[-1]["nll"]
    assert nll["true"] != nll["false"]  # the same seed, other probes after the first evaluation
    # the log-SNR grid: steps + 1 evaluations, and a bad setting named with its fix
    capsys.readouterr()
    assert main(["likelihood", f"run={run}", "data.n=4", "method=unipc", "steps=8"]) == 0
    assert read_metrics(run, "likelihood")[-1]["nfe"] == 9
    assert "unipc 8 steps" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["likelihood", f"run={run}", "data.n=4", "method=unipc", "order=7"]) == 2
    assert "order" in capsys.readouterr().err


def test_readme_sweep_runs_and_prints_its_table(tmp_path, monkeypatch, capsys):
    """`score-sde train -m sde=vp,subvp,ve` as the README writes it (tiny steps): a sweep folder
    named by what varies, one job folder per value, and a table of their final metrics."""
    monkeypatch.chdir(tmp_path)
    tiny = [o for o in TINY if not o.startswith("train.steps")] + ["train.steps=2",
                                                                   "eval.paths=false"]
    assert main(["train", "-m", "sde=vp,subvp,ve", *tiny]) == 0
    out = capsys.readouterr().out
    (root,) = (tmp_path / "outputs" / "sweep-sde").iterdir()
    targets = {"vp": "VPSDE", "subvp": "SubVPSDE", "ve": "VESDE"}
    table = out[out.index(f"sweep {root.resolve()}:"):].splitlines()[1:]
    assert table[0].split()[:4] == ["job", "steps", "loss", "test"]
    rows = {line.split()[0]: line.split() for line in table[1:4]}
    assert set(rows) == {f"sde-{k}" for k in targets}
    for sde, target in targets.items():
        job = root / f"sde-{sde}"
        assert (job / "checkpoints" / "ckpt_00000002.pt").is_file()
        assert f"_target_: score_sde.sde_lib.{target}" in (job / "config.yaml").read_text()
        final = read_metrics(job, "eval")[-1]
        assert rows[f"sde-{sde}"][1] == "2" and rows[f"sde-{sde}"][3] == f"{final['test_nll']:.4f}"


def test_run_folders_are_named_by_what_varies(tmp_path, monkeypatch):
    assert run_name(choices("train", ["data=moons", "sde=ve"]), ["data=moons", "sde=ve"],
                    False) == "moons-ve-mlp"
    assert run_name(choices("train", ["experiment=digits-vp"]), ["experiment=digits-vp"],
                    False) == "digits-vp"
    assert run_name(choices("train", []), [], True) == "ring-vp-mlp-cond"
    monkeypatch.chdir(tmp_path)
    assert main(["train", "data=checkerboard", *QUICK, "train.steps=2"]) == 0
    (run,) = (tmp_path / "outputs" / "checkerboard-vp-mlp").iterdir()
    assert (run / "checkpoints" / "ckpt_00000002.pt").is_file()


BAD_STARTS = [
    (["sample"], "needs a model: add run=<run folder of score-sde train> or pretrained="),
    (["likelihood"], "needs a model: add run=<run folder of score-sde train> or pretrained="),
    (["sample", "run=typo"], "run must be a run folder"),
    (["train", "data=npz", *[o for o in QUICK if not o.startswith("data.")]],
     "data.path is required"),
    (["train", "sde=foo", *QUICK], "Could not find 'sde/foo'; available options in 'sde': subvp"),
    (["train", "train.lrr=0.1", *QUICK], "Could not override 'train.lrr'"),
    (["train", "train.steps=many", *QUICK], "train.steps=many"),
    (["train", "train.lr=-0.001", *QUICK], "train.lr must be > 0, got -0.001"),
    (["train", "+eval.foo=1", *QUICK], "eval.foo is not a setting of score-sde train"),
    (["train", *[o for o in QUICK if not o.startswith("model.net")], "model=unet"],
     "model.input is 'image'"),
    (["train", "solver=ddim", "solver.eta=2.0", *QUICK],
     "solver score_sde.solvers.ddim rejects its settings"),
    (["train", "eval.method=rk4", *QUICK], "eval.step_size must be > 0 for the fixed-step method"),
    (["train", "sde=vp,ve", *QUICK], "Ambiguous value for argument 'sde=vp,ve'"),
    (["train", "-m", "sde=vp,ve", "train.lr=-1", *QUICK], "train.lr must be > 0"),
    (["sample", "RUN", "+solver.foo=1"], "solver.foo is not a setting of score_sde.solvers"),
    (["sample", "RUN", "-m", "n=1,2"], "-m (a sweep) is for score-sde train"),
    (["likelihood", "RUN", "method=rk4"], "step_size must be > 0 for the fixed-step method rk4"),
    (["likelihood", "RUN", "step_size=0.1"], "step_size must be null for the adaptive method"),
    (["likelihood", "RUN", "+foo=1"], "foo is not a setting of score-sde likelihood"),
    (["sample", "RUN", "cond.split=test", "cond.method=pigdm", "cond.jacobian=exact"],
     "cond.jacobian must be 'network' or 'gaussian'"),
    (["likelihood", "RUN", "error_control=rms"], "error_control must be one of ('per_sample', 'batch')"),
    (["likelihood", "RUN", "state_dtype=float16"], "state_dtype must be null (the data's dtype) or one"),
    (["likelihood", "RUN", "+solver.steps=3"], "solver is not a setting of score-sde likelihood"),
    (["sample", "RUN", "tune.load=nowhere.json", "solver=ddim"], "tune.load must be a grid file"),
    (["sample", "RUN", "out=RUN/config.yaml"], "out must be a folder this user can write"),
    (["train", "run=RUN/config.yaml"], "run must be a folder (a run to resume, or a new one"),
    (["train", "run=RUN/pictures", *QUICK], "is a folder that is not a run of score-sde train"),
    (["train", "RUN", "train.steps=2"], "train.steps must be at least the step of"),
    (["train", "sde._target_=builtins.open", *QUICK],
     "sde._target_ in the config is 'builtins.open', which score-sde does not build"),
    (["train", "+model.net.act._target_=os.system", *QUICK],
     "model.net.act._target_ = 'os.system' in the config is not allowed"),
    (["likelihood", "RUN", "data.n=2", "max_steps=2", "rtol=1e-9", "atol=1e-9"],
     "near this time; on the command line: max_steps=<value> (now 2)"),
    (["sample", "RUN", "n=2", "solver=probability_flow", "solver.max_steps=2", "solver.rtol=1e-9",
      "solver.atol=1e-9"], "on the command line: solver.max_steps=<value> (now 2)"),
    (["-sc", "install=fish"], "shell completion supports bash, zsh"),
    (["trian"], "unknown command 'trian'"),
]


@pytest.mark.parametrize("argv, message", BAD_STARTS, ids=[" ".join(a[:3]) for a, _ in BAD_STARTS])
def test_bad_start_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, trained, argv,
                                                  message):
    monkeypatch.chdir(tmp_path)
    before = sorted(trained.rglob("*"))
    argv = [f"run={trained}" if a == "RUN" else a.replace("RUN", str(trained)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("score-sde: error: ") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no typo/sample.log, no outputs/
    assert sorted(trained.rglob("*")) == before


def test_a_batch_too_large_for_memory_names_its_setting(tmp_path, capsys):
    """10^14 points per batch: the allocator refuses at once, and the error names the setting."""
    assert main(["train", f"run={tmp_path / 'run'}", *QUICK, "train.batch_size=100000000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "train.batch_size=100000000000000 does not fit in memory (it asked for" in err


def test_read_only_run_folder_writes_to_out(tmp_path, trained, monkeypatch, capsys):
    """A run folder that cannot be written is only read: the outputs go to out=, and without
    out= the command says so before it starts."""
    real = commands._writable
    monkeypatch.setattr(commands, "_writable",
                        lambda p: not p.resolve().is_relative_to(trained.resolve()) and real(p))
    assert main(["sample", f"run={trained}", "n=4", "solver.steps=2"]) == 2
    err = capsys.readouterr().err
    assert f"the run folder {str(trained)!r} is read-only" in err and "give out=" in err
    out = tmp_path / "elsewhere"
    assert main(["sample", f"run={trained}", "n=4", "solver.steps=2", f"out={out}"]) == 0
    (pt,) = out.glob("euler_maruyama_*.pt")
    assert load_samples(pt)[1]["nfe_per_sample"] == 3
    assert main(["likelihood", f"run={trained}", "data.n=2", "rtol=1e-3", "atol=1e-3",
                 f"out={out}"]) == 0
    assert read_metrics(out, "likelihood")[-1]["n"] == 2
    assert not (trained / "samples").exists()


def test_progress_bars_on_a_terminal_only(tmp_path, trained, monkeypatch, capsys):
    """Bars go to stderr when it is a terminal (training, its evaluation, sampling, the NLL) and
    not with progress=false; stdout holds the messages only."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    tiny = [o for o in TINY if o != "progress=false"] + ["train.steps=2", "eval.paths=false"]
    assert main(["train", f"run={tmp_path / 'run'}", *tiny]) == 0
    out, err = capsys.readouterr()
    assert "train ring:" in err and "sampling:" in err and "test NLL:" in err
    assert "sampling:" not in out
    assert main(["sample", f"run={trained}", "n=8", "solver.steps=3", f"out={tmp_path}"]) == 0
    assert "sampling:" in capsys.readouterr().err
    assert main(["likelihood", f"run={trained}", "data.n=2", "rtol=1e-2", "atol=1e-2",
                 f"out={tmp_path}"]) == 0
    assert "test NLL:" in capsys.readouterr().err
    assert main(["sample", f"run={trained}", "n=8", "solver.steps=3", f"out={tmp_path}",
                 "progress=false"]) == 0
    assert capsys.readouterr().err == ""


def test_completion_script_completes_overrides(tmp_path):
    """The script of `score-sde train -sc install=bash`, called as bash calls it (COMP_LINE,
    COMP_POINT, COMP_WORDS split at bash's word breaks), completes commands, groups, options
    and keys of the command on the line."""
    exe = os.path.join(os.path.dirname(sys.executable), "score-sde")
    if not os.path.exists(exe) or not os.path.exists("/bin/bash"):
        pytest.skip("needs bash and the score-sde script")
    script = subprocess.run([exe, "train", "-sc", "install=bash"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert "complete -o nospace -o default -F _score_sde_complete score-sde" in script
    cases = {"score-sde tr": ["train"],
             "score-sde train sde=v": ["vp", "ve"],  # bash splits at '=': the option's part
             "score-sde train train.st": ["train.steps="],
             "score-sde sample solver=dd": ["ddim", "ddpm_ancestral"],
             "score-sde sample da": []}  # sample takes no data=
    lines = [script]
    for line in cases:
        words = line.replace("=", " = ").split()
        lines.append(f"COMP_LINE='{line}'; COMP_POINT={len(line)}; "
                     f"COMP_WORDS=({' '.join(repr(w) for w in words)}); "
                     f"COMP_CWORD={len(words) - 1}; _score_sde_complete; "
                     "echo \"${COMPREPLY[*]}\"")
    env = {**os.environ, "PATH": f"{os.path.dirname(exe)}:{os.environ['PATH']}"}
    r = subprocess.run(["/bin/bash", "-c", "\n".join(lines)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = r.stdout.splitlines()
    assert [sorted(g.split()) for g in got] == [sorted(v) for v in cases.values()]


def test_digits_run_reports_bits_per_dim(tmp_path, capsys):
    """The image path end to end: U-Net, dequantized training, a sample grid, test bits/dim."""
    run = tmp_path / "run"
    over = ["experiment=digits-vp", *TINY_DIGITS, "eval.gmm_baseline=false"]
    assert main(["train", f"run={run}", *over]) == 0
    out = capsys.readouterr().out
    assert "bits/dim" in out
    final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "eval"][-1]
    # an untrained model is far from the data, but bits/dim of 8-bit images are positive
    assert final["test_bpd"] > 0 and math.isfinite(final["test_bpd"])
    assert (run / "pictures" / "samples_final.png").read_bytes()[:8] == PNG
    # the default n for images is 64, all in the grid
    assert main(["sample", f"run={run}", "solver.steps=2", "batch_size=32"]) == 0
    (pt,) = (run / "samples").glob("*.pt")
    assert load_samples(pt)[0].shape == (64, 1, 8, 8)
