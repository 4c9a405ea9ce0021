"""Metric logging: a plain `metrics.jsonl` in the run folder, always, and Weights & Biases if asked.

wandb runs offline by default (no account, no network; `wandb sync <run>/wandb/offline-run-*`
uploads later), online with `logger.mode=online`, and not at all with `logger=none` (the tests).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _parse(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of a metrics file and the numbers of its lines that are not one (a write cut
    short by a full disk or a kill leaves a partial last line)."""
    records, bad = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(i)
    return records, bad


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of `<run_dir>/metrics.jsonl` (those of one `kind` if given), in file order.

    Raises:
        ValueError: a line is not a record, named with the file and the fix.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records, bad = _parse(path)
    if bad:
        raise ValueError(f"{path}: line {bad[0]} is not a JSON record (a write cut short?); "
                         "resuming the run (score-sde train run=<run>) drops it, or delete it")
    return [r for r in records if kind is None or r.get("kind") == kind]


def truncate_metrics(run_dir: str | Path, step: int) -> list[int]:
    """Drop the records after `step` (logged after the checkpoint a run resumes from, or by a
    start that was killed before its first checkpoint: step 0) and the lines that are not
    records; returns the numbers of those lines."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records, bad = _parse(path)
    keep = [r for r in records if r.get("step", 0) <= step]
    if bad or len(keep) < len(records):
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return bad


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    """Appends one JSON object per `log` call to metrics.jsonl and mirrors it to wandb.

    Args:
        run_dir: the run folder.
        backend: "wandb" or "none".
        mode: wandb's mode ("offline", "online", "disabled").
        project, entity, name: wandb's run identification.
        config: the resolved config, stored with the wandb run.
    """

    def __init__(self, run_dir: str | Path, *, backend: str = "none", mode: str = "offline",
                 project: str = "score-sde", entity: str | None = None, name: str | None = None,
                 config: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a")  # noqa: SIM115 (closed in close())
        self._wandb = None
        if backend == "wandb" and mode != "disabled":
            import wandb

            id_file = self.run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self._wandb = wandb.init(project=project, entity=entity, name=name or self.run_dir.name,
                                     id=run_id, resume="allow", mode=mode, dir=str(self.run_dir),
                                     config=config)

    def log(self, kind: str, step: int, **values: Any) -> None:
        """Record `values` (numbers or strings) of a `kind` ("train", "eval", ...) at `step`."""
        record = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            nums = {f"{kind}/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
            self._wandb.log(nums, step=step)

    def log_image(self, key: str, path: str | Path, step: int) -> None:
        """Attach a picture to the wandb run (the PNG itself is already in the run folder)."""
        if self._wandb is not None:
            import wandb

            self._wandb.log({key: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
