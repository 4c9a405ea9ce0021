"""Checkpoints: an interrupted and resumed run ends with the uninterrupted run's weights exactly;
a corrupt or truncated checkpoint gives a clear error and leaves the previous one intact."""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
import time

import pytest
import torch
from omegaconf import OmegaConf
from tiny_runs import QUICK

from score_sde.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from score_sde.cli import main
from score_sde.config import compose
from score_sde.metrics import read_metrics
from score_sde.resume import check_resumable
from score_sde.run_folder import run_lock
from score_sde.train import train


def _final(run):
    return load_checkpoint(run / "checkpoints" / "ckpt_00000006.pt")


def _losses(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if json.loads(x)["kind"] == "train"]


@pytest.mark.parametrize("extra", [[], ["+conditional=true"]], ids=["plain", "conditional"])
def test_sigint_then_resume_matches_uninterrupted_run(tmp_path, capsys, extra):
    """Also for a class-conditional run, whose label dropout draws from the seeded stream."""
    a, b = tmp_path / "a", tmp_path / "b"
    fast = QUICK + extra
    assert main(["train", f"run={a}", *fast]) == 0
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background

    def interrupt(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, caught by the loop

    res = train(compose("train", [f"run={b}", *fast]), b, callback=interrupt)
    assert res.interrupted and res.step == 3
    assert "stopped by SIGINT at step 3" in capsys.readouterr().out
    assert load_checkpoint(b / "checkpoints" / "ckpt_00000003.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored

    assert main(["train", f"run={b}"]) == 0  # run= alone resumes from b/config.yaml
    assert "resuming" in capsys.readouterr().out
    sa, sb = _final(a), _final(b)
    for key in ("model",):
        assert sa[key].keys() == sb[key].keys()
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), k
    for k in sa["ema"]["module"]:
        assert torch.equal(sa["ema"]["module"][k], sb["ema"]["module"][k]), k
    assert _losses(a) == _losses(b)  # the same loss curve, step for step


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    """run=R alone is R's config; new overrides may raise the steps, but those that change the
    model are refused, all of them named, and leave R as it was."""
    run = tmp_path / "run"
    over = [o for o in QUICK if not o.startswith("train.steps")]
    assert main(["train", f"run={run}", *over, "train.steps=2", "+conditional=true"]) == 0
    saved = (run / "config.yaml").read_text()
    assert main(["train", f"run={run}", "train.steps=4", "sde=ve", "conditional=false",
                 "model.net.hidden=8"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "with sde=ve, conditional=false, model.net.hidden=8:" in err
    assert (run / "config.yaml").read_text() == saved
    assert main(["train", f"run={run}", "train.steps=4", "+conditional=true"]) == 0  # same value
    state = load_checkpoint(run / "checkpoints" / "ckpt_00000004.pt")
    assert state["step"] == 4 and state["config"]["conditional"] is True
    assert state["config"]["data"]["n_train"] == 256  # the saved settings, not the defaults


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_latest_checkpoint(tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert main(["train", f"run={run}", *QUICK]) == 0
    prev, last = run / "checkpoints" / "ckpt_00000004.pt", run / "checkpoints" / "ckpt_00000006.pt"
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(last)
    assert str(last) in str(err.value) and str(prev) in str(err.value)
    over = [o for o in QUICK if not o.startswith("train.steps")] + ["train.steps=8"]
    assert main(["train", f"run={run}", *over]) == 2
    msg = capsys.readouterr().err
    assert f"cannot read checkpoint '{last}'" in msg and "previous checkpoint" in msg
    assert load_checkpoint(prev)["step"] == 4  # the previous one is intact


def test_save_is_atomic_and_keeps_last_k(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        save_checkpoint({"step": step, "model": {"w": torch.ones(2) * step}}, tmp_path, step,
                        keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000002.pt", "ckpt_00000003.pt"]

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint({"step": 4, "model": {}}, tmp_path, 4, keep=2)
    # one line: the path, the reason, the free space, the checkpoint that is still there
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "ckpt_00000004.pt") in msg
    assert "No space left on device" in msg and f"MiB free in {tmp_path}" in msg
    assert f"the previous checkpoint '{tmp_path / 'ckpt_00000003.pt'}' is intact" in msg
    # a failed write leaves no partial file and deletes nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    assert load_checkpoint(tmp_path / "ckpt_00000003.pt")["step"] == 3


class Evil:
    """Any class: unpickling it would run import machinery of arbitrary code."""


def test_loading_never_unpickles_code(tmp_path):
    path = tmp_path / "ckpt_00000001.pt"
    torch.save({"step": 1, "model": {}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_nan_loss_stops_with_a_clear_error(tmp_path, capsys, monkeypatch):
    """The loss is read at the steps that log or checkpoint (every 2 here, not every step): the
    NaN is named with its range of steps, before a checkpoint of NaN weights is written."""
    import score_sde.train as tr

    monkeypatch.setattr(tr, "dsm_loss", lambda *a, **k: torch.tensor(float("nan"),
                                                                     requires_grad=True))
    run = tmp_path / "run"
    assert main(["train", f"run={run}", *QUICK, "train.log_every=4"]) == 2
    err = capsys.readouterr().err
    assert "the training loss became nan between steps 1 and 2" in err
    assert not list(run.glob("checkpoints/*.pt"))


def test_sigterm_saves_and_stops(tmp_path):
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)

    def terminate(step, loss):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    res = train(compose("train", [f"run={run}", *QUICK]), run, callback=terminate)
    assert res.interrupted and res.step == 1
    assert res.checkpoint == run / "checkpoints" / "ckpt_00000001.pt"
    assert load_checkpoint(res.checkpoint)["step"] == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_faults_leave_nothing_behind(tmp_path, monkeypatch, capsys):
    """A full disk at the first checkpoint stops training in one line (the path, the free space)
    and leaves no temporary file; what a kill leaves (a checkpoint's temporary file, a partial
    metrics line, the records of steps without a checkpoint) is cleaned when the run resumes,
    which then logs each step once. Training holds the run's lock throughout."""
    run = tmp_path / "run"
    real_save = torch.save

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    assert main(["train", f"run={run}", *QUICK, "checkpoint.every=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "MiB free in" in err
    assert f"cannot write checkpoint '{run / 'checkpoints' / 'ckpt_00000004.pt'}'" in err
    assert list((run / "checkpoints").iterdir()) == []
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4]
    monkeypatch.setattr(torch, "save", real_save)

    stale = run / "checkpoints" / ".ckpt_00000004.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    held = []

    def try_lock(step, loss):
        with pytest.raises(ValueError, match=f"being trained by process {os.getpid()} on "):
            with run_lock(run):
                pass
        held.append(step)

    res = train(compose("train", [f"run={run}"]), run, callback=try_lock)
    assert not res.interrupted and res.step == 6 and held == [1, 2, 3, 4, 5, 6]
    out = capsys.readouterr().out
    assert f"removed {stale}" in out and "dropped line(s) [5]" in out and not stale.exists()
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4, 5, 6]


def test_sigterm_during_an_evaluation_saves_within_seconds(tmp_path, monkeypatch):
    """SIGTERM 0.3 s into a periodic evaluation that would take tens of seconds (20000 samples,
    400 steps): the evaluation stops at once and the checkpoint of that step is on disk within
    5 s of the signal; the run resumes from it."""
    import score_sde.train as tr

    run = tmp_path / "run"
    heavy = [o for o in QUICK if not o.startswith(("eval.n_samples", "solver.steps"))] + [
        "eval.every=2", "eval.n_samples=20000", "eval.batch_size=20000", "solver.steps=400"]
    sent = []

    def evaluate_then_signal(*args, **kwargs):
        def signal_now():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Timer(0.3, signal_now).start()
        return evaluate(*args, **kwargs)

    evaluate = tr.evaluate
    monkeypatch.setattr(tr, "evaluate", evaluate_then_signal)
    res = train(compose("train", [f"run={run}", *heavy]), run)
    assert time.perf_counter() - sent[0] < 5
    assert res.interrupted and res.step == 2
    assert res.checkpoint == run / "checkpoints" / "ckpt_00000002.pt"
    assert load_checkpoint(res.checkpoint)["step"] == 2
    assert read_metrics(run, "eval") == []  # the cut evaluation recorded nothing


def test_settings_added_after_a_checkpoint_pass_at_their_default(tmp_path):
    """A checkpoint written before a setting existed (train.hflip, train.workers) resumes when
    the setting is at its default, which is how that run was trained; set elsewhere, or a known
    setting changed, it is refused by name."""
    cfg = OmegaConf.to_container(compose("train", []), resolve=True)
    old = json.loads(json.dumps(cfg))
    del old["train"]["hflip"], old["train"]["workers"]
    check_resumable(old, cfg, tmp_path)
    cfg["train"]["workers"] = 0
    with pytest.raises(ValueError, match=r"train.workers: None -> 0"):
        check_resumable(old, cfg, tmp_path)
    cfg["train"]["workers"], cfg["train"]["lr"] = 2, 0.5
    with pytest.raises(ValueError, match=r"train.lr"):
        check_resumable(old, cfg, tmp_path)
