"""The `score-sde` command line."""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "train": "train a score model on a data set (hydra overrides follow)",
    "sample": "draw samples from a trained run: run=<run folder>",
    "likelihood": "exact NLL / bits-per-dim of data under a trained run: run=<run folder>",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="score-sde",
        description="Continuous-time score-based diffusion models: train, sample, likelihood.",
        epilog="Each command takes hydra overrides, e.g. `score-sde train data=checkerboard sde=vp`.")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_ in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
    print(f"score-sde {argv[0]}: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
