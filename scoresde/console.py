"""What the commands show: messages through the `score_sde` logger, progress bars through tqdm.

Messages go to stdout (`show_messages`, set up by the CLI) and, while `score-sde train` runs, also to
`<run>/train.log` (`log_file`), so the log holds what the console shows. Progress bars go to stderr
and only when stderr is a terminal and the command's `progress` setting is true: a pipe, a file or a
batch job gets the messages without the bars. From Python, `logging.basicConfig(level="INFO")`
shows the messages.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("score_sde")
# tqdm's default, with whole counts: a solve moves its bar by fractions of its batch
_FORMAT = "{l_bar}{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _TqdmStdout(logging.Handler):
    """Writes records to stdout through `tqdm.write`, which keeps an active bar intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 (logging's contract: never raise from emit)
            self.handleError(record)


def show_messages() -> None:
    """Print the `score_sde` messages (INFO and above) on stdout, once per process."""
    if not any(isinstance(h, _TqdmStdout) for h in log.handlers):
        log.addHandler(_TqdmStdout())
    log.setLevel(logging.INFO)
    log.propagate = False


@contextmanager
def log_file(path: str | Path) -> Iterator[Path]:
    """Append the `score_sde` messages to `path` (with their time) for the duration of a block."""
    path = Path(path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


def bars_shown(setting: bool) -> bool:
    """Whether progress bars are drawn: the `progress` setting is true and stderr is a terminal."""
    return bool(setting) and sys.stderr.isatty()


def bar(total: float | None, desc: str, unit: str, *, show: bool, initial: float = 0) -> tqdm:
    """A progress bar on stderr (disabled unless `show`); update it with `.update(k)`."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not show,
                file=sys.stderr, dynamic_ncols=True, leave=False, bar_format=_FORMAT)
