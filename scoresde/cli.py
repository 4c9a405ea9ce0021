"""The `score-sde` command line: `score-sde train | sample | likelihood [hydra overrides]`.

Each command is a hydra application over the configs in the `conf` package (`pkg://score_sde.conf`, so an
installed wheel finds them): `conf/train.yaml`, `conf/sample.yaml`, `conf/likelihood.yaml`, whose
schemas are the dataclasses of `score_sde.config`. Everything after the command goes to hydra:
overrides (`sde=ve train.lr=1e-3`), `-m` for sweeps, `--cfg job` to print the config, `--help`.

Started by torchrun (WORLD_SIZE > 1), every command first joins the process group: training runs
under DistributedDataParallel, sampling and likelihood share their batches among the ranks, and
only rank 0 prints and writes (`score_sde.distributed`). A plain start makes no process group.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from score_sde import distributed
from score_sde.config import START_TIME_ENV, register_configs

CONFIG_PATH = "pkg://score_sde.conf"
COMMANDS = {
    "train": "train a score model, then sample and compute the test NLL (hydra overrides follow)",
    "sample": "draw samples from a trained run: run=<run folder> [solver=ddim solver.steps=50]",
    "likelihood": "exact NLL / bits-per-dim of held-out data under a trained run: run=<run folder>",
}


def _fail(err: Exception) -> None:
    """Print a user error in one line and exit with status 2 (hydra would print a traceback)."""
    print(f"score-sde: error: {err}", file=sys.stderr)
    raise SystemExit(2)


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> None:
    from score_sde.checkpoint import CheckpointError
    from score_sde.train import train

    try:
        with distributed.process_group():  # joined already under torchrun; submitit jobs join here
            res = train(cfg, _run_dir())
    except (ValueError, CheckpointError, FloatingPointError) as err:
        _fail(err)
    if res.interrupted:
        raise SystemExit(130)
    if not distributed.context().is_main:
        return
    m = res.metrics
    print(f"\nrun folder: {res.run_dir}")
    print(f"checkpoint: {res.checkpoint}")
    print(f"time: {m['train_seconds']:.0f} s training, {m['eval_seconds']:.0f} s sampling, "
          "NLL and pictures")
    if "test_nll" in m:
        line = (f"test NLL: {m['test_nll']:.4f} +- {m['test_nll_stderr']:.4f} nats "
                f"({m['nll_points']} points, {m['nll_nfe']} NFE)")
        if "test_bpd" in m:
            line += f"; {m['test_bpd']:.4f} +- {m['test_bpd_stderr']:.4f} bits/dim"
        print(line)
    if "gmm_bpd" in m:
        print(f"baseline, sklearn GaussianMixture({m['gmm_components']}, full covariance) on the "
              f"same dequantized data: {m['gmm_bpd']:.4f} +- {m['gmm_bpd_stderr']:.4f} bits/dim")
    if "judge_test_accuracy" in m:
        accs = ", ".join(f"{k.removeprefix('class_accuracy_w')}: {v:.3f}" for k, v in m.items()
                         if k.startswith("class_accuracy_w"))
        print(f"class-conditional samples judged to be of the asked-for class ({m['per_class']} "
              f"per class), by guidance scale: {accs} (chance {m['chance']:.3f}; the judge's "
              f"test accuracy {m['judge_test_accuracy']:.3f})")
    if "entropy" in m:
        gap = m["test_nll"] - m["entropy"] if "test_nll" in m else float("nan")
        print(f"true entropy: {m['entropy']:.4f} +- {m['entropy_stderr']:.4f} nats "
              f"(NLL - entropy = {gap:+.4f})")
    if "true_nll_same_points" in m:
        print(f"true NLL of the same test points: {m['true_nll_same_points']:.4f} nats")
    print("pictures:\n" + "\n".join(f"  {p}" for p in res.pictures))


@hydra.main(config_path=CONFIG_PATH, config_name="sample", version_base="1.3")
def _sample(cfg: DictConfig) -> None:
    from score_sde.commands import sample

    try:
        with distributed.process_group():
            sample(cfg)
    except ValueError as err:
        _fail(err)


@hydra.main(config_path=CONFIG_PATH, config_name="likelihood", version_base="1.3")
def _likelihood(cfg: DictConfig) -> None:
    from score_sde.commands import likelihood

    try:
        with distributed.process_group():
            likelihood(cfg)
    except ValueError as err:
        _fail(err)


_APPS = {"train": _train, "sample": _sample, "likelihood": _likelihood}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score-sde",
        description="Continuous-time score-based diffusion models: train, sample, likelihood.",
        epilog="Each command takes hydra overrides, e.g. `score-sde train data=checkerboard sde=vp`;"
               " `score-sde train --help` lists the config groups, `--cfg job` prints the config.")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_ in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `score-sde` console script. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
    register_configs()
    saved = sys.argv
    sys.argv = [f"score-sde {argv[0]}", *argv[1:]]
    try:
        with distributed.process_group() as ctx:
            if ctx.distributed:  # every rank names its run folder after rank 0's start time
                os.environ[START_TIME_ENV] = str(distributed.broadcast_from_main(time.time(), ctx))
            _APPS[argv[0]]()
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())

