"""Stopping a training cleanly on SIGINT / SIGTERM.

While training, the handlers set a flag that the loop reads at its next sync point, where it saves
a checkpoint and returns; a second Ctrl-C aborts at once. A signal during an evaluation
(`StopFlag.unless_stopped`) cuts the evaluation short at once: a cluster scheduler's grace period
is seconds, and the checkpoint matters more than the evaluation.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


class _Interrupted(BaseException):
    """Raised by the signal handler inside `StopFlag.unless_stopped` (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it)."""


class StopFlag:
    """Set by SIGINT / SIGTERM while training (`catch_signals`); a second SIGINT interrupts at
    once, and a signal during `unless_stopped` ends that work at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stoppable = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.stoppable:  # raise once, from the handler: the work stops where it is
            self.stoppable = False
            raise _Interrupted
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint after this step "
                   "(press Ctrl-C again to abort without saving)")

    def unless_stopped(self, work: Callable[[], Any]) -> bool:
        """Run `work` until it ends or a signal comes; returns whether it ended."""
        try:
            self.stoppable = True
            try:
                work()
            finally:
                self.stoppable = False
        except _Interrupted:
            return False
        return True

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal"


@contextmanager
def catch_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to `flag` inside the block (the main thread only), then restore
    the previous handlers."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, flag)
    except ValueError:  # not the main thread: leave the handlers alone
        old = {}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
