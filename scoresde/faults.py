"""Faults of a running command, said in one line that names the setting to change.

`batch_fits(key, value)` turns running out of memory (CUDA's OutOfMemoryError, the CPU
allocator's RuntimeError) inside a block into a ValueError naming the batch setting that sized it;
`solver_keys(prefix, given)` adds to a solver's `SolverError` the command-line key of the keyword
it names (`solver.max_steps`, `eval.rtol`, `max_steps`); `os_error_line` says what a failed file
operation hit, with the free space for a full disk.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from score_sde.solvers import SolverError

_TRIED = re.compile(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGT]i?B)", re.IGNORECASE)


def _out_of_memory(err: RuntimeError) -> bool:
    text = str(err)
    return (isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text
            or "out of memory" in text)


def _size(text: str) -> str:
    """'(it asked for 745058.1 GiB)' from an allocator's message, or ''."""
    m = _TRIED.search(text)
    if not m:
        return ""
    amount, unit = float(m.group(1)), m.group(2)
    if unit == "bytes":
        amount, unit = amount / 2**30, "GiB"
    return f" (it asked for {amount:.4g} {unit})"


@contextmanager
def batch_fits(key: str, value: int, also: str = "") -> Iterator[None]:
    """Raise running out of memory inside the block as a ValueError naming `key`.

    Args:
        key: the setting that sizes the work, e.g. "train.batch_size".
        value: its value.
        also: other settings to name, e.g. " (or n)".
    """
    try:
        yield
    except RuntimeError as err:  # torch.OutOfMemoryError is one
        if not _out_of_memory(err):
            raise
        raise ValueError(f"{key}={value} does not fit in memory{_size(str(err))}; lower "
                         f"{key}{also}") from err


@contextmanager
def solver_keys(prefix: str, given: Mapping[str, Any]) -> Iterator[None]:
    """Re-raise a SolverError that names a solver keyword with its command-line key.

    Args:
        prefix: what the command puts before the keyword: "solver." (sampling), "eval." (the
            training's test NLL) or "" (`score-sde likelihood`).
        given: the settings the config holds under that prefix; a keyword it lacks is added
            with `+`.
    """
    try:
        yield
    except SolverError as err:
        if err.setting is None:
            raise
        key = f"{prefix}{err.setting}"
        now = f"{key}=<value> (now {given[err.setting]})" if err.setting in given else \
            f"+{key}=<value>"
        raise SolverError(f"{err}; on the command line: {now}", samples=err.samples, t=err.t,
                          setting=key) from err


def free_space(path: str | Path) -> str:
    """'12.3 MiB free in <folder>' for the file system holding `path` (or its nearest parent)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    folder = folder if folder.is_dir() else folder.parent
    return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free in {folder}"


def os_error_line(err: OSError) -> str:
    """A failed file operation in one line: the reason, the path, and for a full disk (or
    quota) the free space there."""
    what = err.strerror or str(err)
    if err.filename is None:
        return what
    line = f"{what}: {err.filename}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        line += f" ({free_space(err.filename)})"
    return line
