"""Several processes (CPU, gloo, 2 ranks on 127.0.0.1): DDP training takes the steps of one
process (a class-conditional run: each rank takes its slice of the labels too), sharded sampling
(guided, inpainting per-sample known values) and likelihood return what one process returns, in
order, and a checkpoint of a torchrun run resumes in a single process. Every launch has a
timeout."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_runs import TINY

from score_sde import commands, distributed
from score_sde.checkpoint import load_checkpoint
from score_sde.cli import main
from score_sde.config import compose
from score_sde.train import train

FAST = TINY + ["eval.nll_points=0", "eval.paths=false", "eval.n_samples=4",
               "train.cosine_decay=false"]
COND = ["+conditional=true", "eval.per_class=2"]
TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        _JOBS[job](rank, *args)
    finally:
        dist.destroy_process_group()


def _train_job(rank: int, overrides: list[str], run: str, out: str) -> None:
    res = train(compose("train", overrides), run)
    torch.save(res.model.state_dict(), Path(out) / f"rank{rank}.pt")


def _eval_job(rank: int, sample_cfg: list[str], nll_cfg: list[str], out: str) -> None:
    path = commands.sample(compose("sample", sample_cfg))
    rep = commands.likelihood(compose("likelihood", nll_cfg))
    assert (path is None) == (rep is None) == (rank != 0)
    if rank == 0:
        torch.save({"samples": torch.load(path), "nll": rep.per_point, "mean": rep.nll},
                   Path(out) / "eval.pt")


_JOBS = {"train": _train_job, "eval": _eval_job}


def _spawn(job: str, *args, world: int = 2) -> None:
    """Run `_JOBS[job]` on `world` spawned ranks; fail (and end them) after TIMEOUT_S."""
    ctx = mp.start_processes(_worker, args=(world, _free_port(), job, args), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                pytest.fail(f"{world} ranks of {job!r} did not end within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()


def _assert_close(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.fixture(scope="module")
def one_rank_run(tmp_path_factory):
    """The reference: 4 steps of a class-conditional run in one process, no process group."""
    run = tmp_path_factory.mktemp("one") / "run"
    res = train(compose("train", [f"run={run}", *FAST, *COND, "train.steps=4"]), run)
    return run, res.model.state_dict()


def test_two_ranks_take_the_steps_of_one_process(tmp_path, one_rank_run):
    run1, weights1 = one_rank_run
    run2 = tmp_path / "run"
    _spawn("train", [f"run={run2}", *FAST, *COND, "train.steps=4"], str(run2), str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    _assert_close(r0, r1, exact=True)  # DDP: both ranks hold the same weights
    _assert_close(r0, weights1)  # halves of the same global batch, averaged gradients
    ck1, ck2 = (load_checkpoint(r / "checkpoints" / "ckpt_00000004.pt") for r in (run1, run2))
    _assert_close(ck2["model"], weights1)  # the checkpoint holds the unwrapped model
    _assert_close(ck2["ema"]["module"], ck1["ema"]["module"])


def test_sharded_sampling_and_likelihood_match_one_process(tmp_path, one_rank_run):
    run, _ = one_rank_run
    known = torch.stack([torch.arange(11.0), torch.zeros(11)], 1)  # one per sample
    torch.save(known, tmp_path / "known.pt")
    torch.save(torch.tensor([1.0, 0.0]), tmp_path / "mask.pt")
    # 3 blocks of samples and 3 batches of points, split 1 + 2 over the ranks
    sample_cfg = [f"run={run}", "n=11", "batch_size=4", "solver.steps=5", "threads=1", "label=3",
                  "guidance.scale=2", f"inpaint.known={tmp_path / 'known.pt'}",
                  f"inpaint.mask={tmp_path / 'mask.pt'}"]
    nll_cfg = [f"run={run}", "data.n=10", "batch_size=4", "divergence=hutchinson", "rtol=1e-3",
               "atol=1e-3", "threads=1"]
    _spawn("eval", sample_cfg, nll_cfg, str(tmp_path))
    two = torch.load(tmp_path / "eval.pt")
    samples = torch.load(commands.sample(compose("sample", sample_cfg)))
    rep = commands.likelihood(compose("likelihood", nll_cfg))
    assert two["samples"].shape == (11, 2) and two["nll"].shape == (10,)
    torch.testing.assert_close(two["samples"], samples, rtol=0, atol=0)
    torch.testing.assert_close(samples[:, 0], known[:, 0], rtol=0, atol=0)  # in order
    torch.testing.assert_close(two["nll"], rep.per_point, rtol=0, atol=0)
    assert two["mean"] == rep.nll


def test_torchrun_checkpoint_resumes_in_one_process(tmp_path, capsys):
    """`torchrun -m scoresde.cli train` for 4 steps, then 2 more steps in a single process: the
    weights of 6 steps in one process, and one run folder written by rank 0 only."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           "-m", "score_sde.cli", "train", *FAST, "train.steps=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not end within {TIMEOUT_S} s")
    assert proc.returncode == 0, out
    assert out.count("run folder:") == 1  # only rank 0 prints
    (run,) = (cwd / "outputs" / "ring-vp-mlp").iterdir()  # both ranks named the same folder
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt_00000002.pt",
                                                                        "ckpt_00000004.pt"]

    assert main(["train", f"run={run}", *FAST, "train.steps=6"]) == 0
    assert "resuming" in capsys.readouterr().out
    ref = tmp_path / "ref"
    assert main(["train", f"run={ref}", *FAST, "train.steps=6"]) == 0
    a, b = (load_checkpoint(r / "checkpoints" / "ckpt_00000006.pt") for r in (run, ref))
    _assert_close(a["model"], b["model"])
    _assert_close(a["ema"]["module"], b["ema"]["module"])


def test_batch_and_blocks_are_split_evenly_in_order():
    ranks = [distributed.Context(r, 3) for r in range(3)]
    assert [distributed.split_batch(12, c) for c in ranks] == [slice(0, 4), slice(4, 8),
                                                                slice(8, 12)]
    with pytest.raises(ValueError, match="train.batch_size must be divisible.*3.*got 32"):
        distributed.split_batch(32, ranks[0])
    assert [i for c in ranks for i in distributed.my_blocks(7, c)] == list(range(7))
    assert distributed.context() == distributed.Context()  # no process group: one process
    seeds = {distributed.block_seed(0, j) for j in range(100)}
    assert len(seeds) == 100 and distributed.block_seed(0, 1) != distributed.block_seed(1, 0)
