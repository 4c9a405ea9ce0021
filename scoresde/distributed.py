"""Several processes: the torchrun environment, the process group, shards and seeds.

Nothing here stands in for torch.distributed; it only reads what `torchrun` sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; in a job of several tasks started by hydra's
submitit launcher, submitit sets them) and keeps the single-process path free of it: without WORLD_SIZE > 1 no
process group is made and every helper is the identity.

- Training (`score_sde.train`): every rank draws the same global batch (indices, times, noise) from
  generators seeded by the run seed and takes its contiguous slice of `train.batch_size / world`
  points; DistributedDataParallel averages the gradients of the per-rank mean losses, which is the
  gradient of the global mean loss. N ranks therefore take the steps one process takes.
- Sampling and likelihood: the work is cut into blocks of a fixed size, block j gets its own
  generator seeded by `block_seed(seed, j)`, each rank solves a contiguous run of blocks with the
  bare model (no DDP: an adaptive solve takes a different NFE on each rank, so no collective may run
  inside it) and rank 0 gathers the results in block order. The result does not depend on the
  number of ranks.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank r of `world_size` (local rank on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, draws pictures and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context() -> Context:
    """The current process group's rank and size; a single process if none is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def launched_by_torchrun() -> bool:
    """True when torchrun (or a scheduler setting its variables) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _export_slurm_env() -> None:
    """Several tasks of a SLURM job started by submitit (hydra's submitit launcher with
    tasks_per_node > 1): let submitit set torchrun's variables, one rank per task."""
    if ("WORLD_SIZE" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm"
            or int(os.environ.get("SLURM_NTASKS", "1")) <= 1):
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()


def init_from_env(timeout_s: float = 1800.0) -> Context:
    """Join the process group described by torchrun's variables (idempotent).

    The backend is gloo for CPU tensors and, where CUDA is available, nccl for CUDA tensors
    ("cpu:gloo,cuda:nccl"), so `device=cpu` still works on a GPU node. Each process uses the GPU
    of its LOCAL_RANK.
    """
    if dist.is_initialized():
        return context()
    _export_slurm_env()
    if not launched_by_torchrun():
        return context()
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return context()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group() -> Iterator[Context]:
    """`init_from_env()` for the duration of a block, then `shutdown()`; a no-op for one process."""
    joined = not dist.is_initialized()
    ctx = init_from_env()
    try:
        yield ctx
    finally:
        if joined:
            shutdown()


def device_for(device: torch.device, ctx: Context) -> torch.device:
    """`cuda` becomes this rank's GPU, `cuda:<LOCAL_RANK>`, under several processes."""
    if device.type == "cuda" and ctx.distributed and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """A seed for rank `rank` of a run seeded by `seed` (torch's global RNG: dropout)."""
    return block_seed(seed, rank, stream=1)


def block_seed(seed: int, index: int, *, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for block `index` of the work of a run seeded by `seed`."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(2, np.uint32)
               .astype(np.uint64).dot([1 << 31, 1]))


def my_blocks(n_blocks: int, ctx: Context) -> range:
    """The contiguous run of blocks that rank `ctx.rank` takes (rank 0 the first ones)."""
    return range(ctx.rank * n_blocks // ctx.world_size, (ctx.rank + 1) * n_blocks // ctx.world_size)


def split_batch(batch_size: int, ctx: Context) -> slice:
    """This rank's slice of a global batch of `batch_size` (which must divide evenly)."""
    if batch_size % ctx.world_size:
        raise ValueError(f"train.batch_size must be divisible by the number of processes "
                         f"({ctx.world_size}), got {batch_size}")
    b = batch_size // ctx.world_size
    return slice(ctx.rank * b, (ctx.rank + 1) * b)


def gather_to_main(obj: Any, ctx: Context) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None on the others); [obj] for one process."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, ctx: Context) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The sum over ranks of `values` (returned; the input is not changed)."""
    if not ctx.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out
