"""The `score-sde` command line: `score-sde train | sample | likelihood [hydra overrides]`.

Each command composes its config from the `conf` package (`pkg://score_sde.conf`, so an installed
wheel finds them): `conf/train.yaml`, `conf/sample.yaml`, `conf/likelihood.yaml`, whose schemas are
the dataclasses of `score_sde.config`. Everything after the command is overrides
(`sde=ve train.lr=1e-3`), `-m` for sweeps (train), `--cfg job` to print the composed config,
`--help` for what the command takes, `-sc install=bash` for shell completion (`score_sde.usage`).

Every start is checked before anything runs or is written: the overrides compose, required values
are given, no key is unknown, values make sense, a resume keeps the run's model (for a sweep, every
job). A bad start prints one line, `score-sde: error: ...`, and exits with status 2. Training then
runs as a hydra application (run folders, sweeps, launchers): the run folder is named by what
varies (`score_sde.sweep`) and a sweep ends with a table of its jobs' results. `sample` and
`likelihood` run directly on the composed config: they create nothing but their outputs.

Started by torchrun (WORLD_SIZE > 1), every command first joins the process group: training runs
under DistributedDataParallel, sampling and likelihood share their batches among the ranks, and
only rank 0 prints and writes (`score_sde.distributed`). A plain start makes no process group.
This module imports torch only once a command runs: `--help` and completion stay fast.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from score_sde.usage import COMMANDS

CONFIG_PATH = "pkg://score_sde.conf"
_HYDRA_FLAGS = ("--info", "-i", "--hydra-help", "--resolve", "-p", "--package", "--run", "-r")


class UsageError(ValueError):
    """A bad command line (flag, override syntax, unknown option)."""


def _one_line(err: BaseException) -> str:
    """hydra's and omegaconf's multi-line messages as one line (options listed, no search path)."""
    lines, options = [], []
    for raw in str(err).splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=", "See https:",
                                        "To append to your config", "provider=")):
            continue
        if line.startswith("Config search path"):
            break
        if raw.startswith("\t") and lines and lines[-1].startswith("Available options"):
            options.append(line)
            continue
        for command in COMMANDS:
            line = line.removeprefix(f"In '{command}': ").removeprefix(f"In {command}: ")
        lines.append(line)
    if options:
        lines[-1] = f"{lines[-1].rstrip(':').lower()}: {', '.join(options)}"
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return "; ".join(line.rstrip(".") for line in lines)


def _error(message: str) -> int:
    """Print a user error in one line; returns the exit status, 2."""
    one = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"score-sde: error: {one}", file=sys.stderr)
    return 2


def _fail(message: str) -> None:
    """Print a user error in one line and exit with status 2 (inside hydra's task)."""
    raise SystemExit(_error(message))


def _top_help() -> str:
    lines = ["usage: score-sde {" + ",".join(COMMANDS) + "} [overrides] [--help]", "",
             "Continuous-time score-based diffusion models: train, sample, likelihood.", "",
             "commands:"]
    lines += [f"  {name:<11} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Each command takes hydra overrides, e.g. `score-sde train data=checkerboard sde=vp`;",
              "`score-sde <command> --help` lists what it takes, `--cfg job` prints its config,",
              "`score-sde -sc install=bash` prints a shell completion script (bash, zsh)."]
    return "\n".join(lines)


def _shell_completion(argv: list[str]) -> int:
    from score_sde import usage

    flag = argv.index("-sc") if "-sc" in argv else argv.index("--shell-completion")
    what = argv[flag + 1] if flag + 1 < len(argv) else ""
    action, _, shell = what.partition("=")
    if action == "install":
        print(usage.script(shell))
    elif action == "uninstall" and shell in usage.SHELLS:
        print("complete -r score-sde 2>/dev/null; unset -f _score_sde_complete")
    elif action == "query":
        line = os.environ.get("COMP_LINE", "")
        point = int(os.environ.get("COMP_POINT", len(line)))
        print(" ".join(usage.complete(line, point)))
    else:
        raise UsageError(f"-sc takes install=<shell>, uninstall=<shell> or query=<shell>, got "
                         f"{what!r} (shells: {', '.join(usage.SHELLS)})")
    return 0


def _split(command: str, args: list[str]) -> tuple[list[str], list[str], bool, str | None]:
    """(overrides, hydra's own flags, multirun, --cfg value) of a command's arguments."""
    overrides, passed, multirun, show = [], [], False, None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("-c", "--cfg"):
            show = args[i + 1] if i + 1 < len(args) else ""
            i += 1
        elif a.startswith("-") and command == "train" and a.split("=")[0] in _HYDRA_FLAGS:
            passed.append(a)
            if a in ("-p", "--package") and i + 1 < len(args):
                passed.append(args[i + 1])
                i += 1
        elif a.startswith("-"):
            raise UsageError(f"score-sde {command} does not take {a}; see score-sde {command} --help")
        else:
            overrides.append(a)
        i += 1
    if multirun and command != "train":
        raise UsageError(f"-m (a sweep) is for score-sde train; run score-sde {command} once "
                         "per setting")
    if show not in (None, "job") and command != "train":
        raise UsageError(f"--cfg takes 'job' for score-sde {command}, got {show!r}")
    return overrides, passed, multirun, show


def _compose(command: str, overrides: list[str]) -> Any:
    from score_sde.config import compose

    try:
        return compose(command, overrides)
    except ValueError:
        raise
    except Exception as err:  # hydra's and omegaconf's composition errors
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(err, (HydraException, OmegaConfBaseException)):
            raise UsageError(_one_line(err)) from err
        raise


def _is_hydra(override: str) -> bool:
    """An override of hydra's own settings (hydra.run.dir=..., hydra/launcher=slurm)."""
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def _train_overrides(overrides: list[str], multirun: bool) -> tuple[list[str], list[str]]:
    """Check every job of `score-sde train` before any runs; returns (jobs' configs printed by
    --cfg, the hydra overrides naming the run or sweep folder)."""
    from omegaconf import OmegaConf

    from score_sde import sweep
    from score_sde.config import CONFIG_FILE, validate_train
    from score_sde.usage import choices

    try:
        job_lists = sweep.jobs(overrides) if multirun else [overrides]
    except Exception as err:
        raise UsageError(_one_line(err)) from err
    shown, cfgs = [], []
    for job in job_lists:
        cfg = _compose("train", [o for o in job if not _is_hydra(o)])
        validate_train(cfg)
        cfgs.append(cfg)
        shown.append(OmegaConf.to_yaml(cfg))
    given = {o.split("=")[0] for o in overrides}
    extra = []
    if multirun:
        if "hydra.sweep.dir" not in given:
            extra.append(f"hydra.sweep.dir={sweep.sweep_dir(overrides)}")
        if "hydra.sweep.subdir" not in given:  # a job's folder: its swept values (sde-vp)
            fixed = ",".join(k for k in sweep.fixed_keys(overrides) if not _is_hydra(k))
            extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{fixed}]")
            if not sweep.swept_keys(overrides):
                extra.append("hydra.sweep.subdir=${hydra.job.num}")
    elif "hydra.run.dir" not in given:
        run = cfgs[0].run
        if run:  # before hydra writes .hydra/ into it
            from score_sde.run_folder import check_train_folder

            check_train_folder(run)
        if run and (Path(run).expanduser() / CONFIG_FILE).is_file():  # a resume: keep .hydra/
            extra += [f"hydra.run.dir={run}", "hydra.output_subdir=null"]
        elif run:
            extra.append(f"hydra.run.dir={run}")
        else:
            name = sweep.run_name(choices("train", overrides), overrides, bool(cfgs[0].conditional))
            extra.append(f"hydra.run.dir={sweep.run_dir(name)}")
    return shown, extra


def _remove_if_fresh(run_dir: Path) -> None:
    """After a failed start: remove the run folder hydra made for it (holding only .hydra/ and
    the lock file, which no other process holds) and the parents that this leaves empty, up to
    the current folder."""
    from score_sde.run_folder import FRESH, run_lock

    if not run_dir.is_dir() or any(p.name not in FRESH for p in run_dir.iterdir()):
        return
    try:
        with run_lock(run_dir):  # not a folder that another trainer has just started in
            shutil.rmtree(run_dir)
    except ValueError:
        return
    cwd = Path.cwd().resolve()
    parent = run_dir.resolve().parent
    while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _train_task(cfg: Any) -> None:
    """The hydra task of `score-sde train` (one per job of a sweep)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from score_sde import distributed
    from score_sde.checkpoint import CheckpointError
    from score_sde.console import show_messages
    from score_sde.faults import os_error_line
    from score_sde.resume import resume_config
    from score_sde.train import train

    show_messages()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        cfg = resume_config(cfg, list(hc.overrides.task), lambda over: compose("train", over))
        with distributed.process_group():  # joined already under torchrun; submitit jobs join here
            res = train(cfg, run_dir)
    except (ValueError, CheckpointError, FloatingPointError, OSError) as err:
        _remove_if_fresh(run_dir)
        _fail(os_error_line(err) if isinstance(err, OSError) else str(err))
    if res.interrupted:
        raise SystemExit(130)


def _run_train(overrides: list[str], passed: list[str], multirun: bool, show: str | None) -> int:
    import hydra

    from score_sde.config import register_configs

    info = show not in (None, "job") or any(f in passed for f in ("--info", "-i", "--hydra-help"))
    extra = []
    if not info:
        shown, extra = _train_overrides(overrides, multirun)
        if show == "job":
            print("\n---\n".join(shown), end="")
            return 0
    register_configs()
    saved = sys.argv
    sys.argv = ["score-sde train", *(["-m"] if multirun else []),
                *(["--cfg", show] if show else []), *passed, *overrides, *extra]
    try:
        hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")(_train_task)()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    if multirun and not info:
        from score_sde import distributed
        from score_sde.console import log
        from score_sde.report import sweep_table

        root = Path(next(o for o in [*overrides, *extra] if o.startswith("hydra.sweep.dir="))
                    .split("=", 1)[1])
        if distributed.context().is_main and root.is_dir():
            log.info(f"\nsweep {root.resolve()}:\n" + "\n".join(sweep_table(root)))
    return code


def _run_eval(command: str, overrides: list[str], show: str | None) -> int:
    from omegaconf import OmegaConf

    cfg = _compose(command, overrides)
    if show == "job":
        print(OmegaConf.to_yaml(cfg), end="")
        return 0
    from score_sde import commands, distributed
    from score_sde.config import validate_eval
    from score_sde.console import show_messages

    validate_eval(cfg)
    show_messages()
    with distributed.process_group():
        getattr(commands, command)(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `score-sde` console script. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(_top_help())
            return 0
        if "-sc" in argv or "--shell-completion" in argv:
            return _shell_completion(argv)
        command, args = argv[0], argv[1:]
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
        if "-h" in args or "--help" in args:
            from score_sde.usage import help_text

            print(help_text(command))
            return 0
        overrides, passed, multirun, show = _split(command, args)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: one folder name for all ranks
            from score_sde import distributed
            from score_sde.config import START_TIME_ENV

            ctx = distributed.init_from_env()
            os.environ[START_TIME_ENV] = str(distributed.broadcast_from_main(time.time(), ctx))
        if command == "train":
            return _run_train(overrides, passed, multirun, show)
        return _run_eval(command, overrides, show)
    except ValueError as err:  # UsageError, CheckpointError and the commands' setting errors
        return _error(str(err))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BrokenPipeError:  # `score-sde train --help | head`: the reader left (Python's docs)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # a full disk, a folder that cannot be written, ...
        from score_sde.faults import os_error_line

        return _error(os_error_line(err))
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from score_sde import distributed

            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
