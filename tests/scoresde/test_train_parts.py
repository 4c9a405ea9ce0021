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
