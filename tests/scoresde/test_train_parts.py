"""Pieces of the training loop: the learning-rate schedule and the resume guard."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from score_sde.resume import check_resumable
from score_sde.train import learning_rate


def test_learning_rate_warmup_then_cosine():
    kw = dict(lr=1.0, warmup=4, steps=100, cosine=True)
    assert [learning_rate(s, **kw) for s in range(3)] == pytest.approx(
        [0.25 * 0.5 * (1 + math.cos(math.pi * s / 100)) * (s + 1) for s in range(3)])
    assert learning_rate(50, **kw) == pytest.approx(0.5)
    assert learning_rate(100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(10, lr=2.0, warmup=0, steps=100, cosine=False) == 2.0


def test_resume_guard_allows_only_harmless_changes():
    saved = {"train": {"steps": 10, "lr": 1e-3}, "sde": {"_target_": "score_sde.sde_lib.VPSDE"},
             "eval": {"every": 0}, "run": "a"}
    longer = {"train": {"steps": 20, "lr": 1e-3}, "sde": {"_target_": "score_sde.sde_lib.VPSDE"},
              "eval": {"every": 5}, "run": "b"}
    check_resumable(saved, longer, Path("r"))
    other = {**longer, "train": {"steps": 20, "lr": 2e-3}}
    with pytest.raises(ValueError, match="train.lr: 0.001 -> 0.002"):
        check_resumable(saved, other, Path("r"))


def test_training_steps_between_records_make_no_host_syncs(tmp_path, monkeypatch):
    """Between the steps that log or checkpoint, a training step reads nothing back from the
    device: no Tensor.__bool__ / item / tolist (/ __float__ / __int__) call comes from the app's
    loop (the library's calls are counted apart: dsm_loss, ScoreModel and EMA are made sync-free
    in their own layer). A class-conditional run, so that the label path is counted too."""
    import sys

    import torch

    import score_sde
    from score_sde.config import compose
    from score_sde.train import train

    app = Path(score_sde.__file__).resolve().parent
    library = {app.parent / name for name in ("sde_lib", "models", "solvers")}
    calls: dict[str, list[str]] = {"app": [], "library": []}
    counting = [False]

    def counted(name):
        original = getattr(torch.Tensor, name)

        def call(self, *args, **kwargs):
            if counting[0]:
                frame = sys._getframe(1)
                while frame is not None:
                    path = Path(frame.f_code.co_filename).resolve()
                    where = "app" if app in path.parents else (
                        "library" if any(d in path.parents for d in library) else None)
                    if where:
                        calls[where].append(f"{name} at {path.name}:{frame.f_lineno}")
                        break
                    frame = frame.f_back
            return original(self, *args, **kwargs)

        return call

    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))

    def between_records(step, loss):  # steps 2..9 of 10: no record, checkpoint or evaluation
        counting[0] = 1 <= step < 9

    from tiny_runs import TINY

    over = TINY + ["train.steps=10", "train.log_every=10", "checkpoint.every=10", "eval.nll_points=0",
                   "eval.paths=false", "eval.n_samples=4", "+conditional=true"]
    train(compose("train", [f"run={tmp_path / 'run'}", *over]), tmp_path / "run",
          callback=between_records)
    assert calls["app"] == []
    print(f"library syncs in 8 steps: {len(calls['library'])} ({sorted(set(calls['library']))})")
