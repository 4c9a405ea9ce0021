"""Training batches: indexed on the device for small in-memory sets, through a torch DataLoader
with workers and pinned memory for image sets (`data.Images`: uint8 in memory or files on disk).

Both draw B indices with replacement per step and, with `hflip`, a left-right mirror per image
(probability 1/2). Small sets draw them from the run's data generator, whose state every
checkpoint holds (the stream of earlier versions when hflip is off). Image sets draw the batch of
step s from a generator seeded by (seed, s) alone, so the loader's workers can fetch batches ahead
and a resume from step s gets the batches the uninterrupted run got, bit for bit, whatever the
number of workers. Every rank draws the same global batch; the training loop takes its slice.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from score_sde.data import Dataset, Images, to_unit
from score_sde.distributed import block_seed
from score_sde.sde_lib import append_dims

_STEP_STREAM = 3  # block_seed stream of the per-step draws (0-2 are evaluation and rank seeds)


def step_draws(n: int, batch_size: int, seed: int, step: int, hflip: bool
               ) -> tuple[Tensor, Tensor]:
    """The (B,) indices in [0, n) and (B,) bool mirror flags of the batch of `step`."""
    gen = torch.Generator().manual_seed(block_seed(seed, step, stream=_STEP_STREAM))
    idx = torch.randint(n, (batch_size,), generator=gen)
    if not hflip:
        return idx, torch.zeros(batch_size, dtype=torch.bool)
    return idx, torch.rand(batch_size, generator=gen) < 0.5


class _Items(torch.utils.data.Dataset):
    """Item (i, flip) of images: the uint8 image i (C, H, W), mirrored left-right if flip, and
    its label (-1 without labels)."""

    def __init__(self, images: Images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, bool]) -> tuple[Tensor, int]:
        i, flip = item
        x = self.images.uint8(int(i))
        labels = self.images.labels
        return (x.flip(-1) if flip else x), (-1 if labels is None else int(labels[i]))


class StepBatches(torch.utils.data.Sampler):
    """Batches of (index, flip) pairs for the steps start, start + 1, ..., steps - 1."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, steps: int, hflip: bool):
        self.args, self.start, self.steps = (n, batch_size, seed), start, steps
        self.hflip = hflip

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.start, self.steps):
            idx, flip = step_draws(*self.args, step, self.hflip)
            yield list(zip(idx.tolist(), flip.tolist()))


class TrainBatches:
    """The training batches of a data set from step `start` on: `next()` gives the global batch
    x0 (B, *D) in [-1, 1] on `device` and its labels (B,) on `device` (None without labels).

    Args:
        data: the data set (its train split).
        batch_size: the global batch B.
        hflip: mirror each image left-right with probability 1/2 (images only).
        generator: the run's data generator (small in-memory sets draw from it).
        seed: the run seed (image sets seed each step's draws with it).
        start: the first step; steps: the last step + 1.
        workers: DataLoader worker processes (image sets; 0 loads in the training process).
        device: where the batches go (pinned host memory when it is a GPU).
        labels: return the labels too.
    """

    def __init__(self, data: Dataset, *, batch_size: int, hflip: bool, generator: torch.Generator,
                 seed: int, start: int, steps: int, workers: int, device: torch.device,
                 labels: bool):
        if hflip and not data.is_image:
            raise ValueError(f"train.hflip mirrors images, but data {data.name!r} has shape "
                             f"{data.shape}; drop train.hflip")
        self.device, self.batch_size, self.hflip, self.gen = device, batch_size, hflip, generator
        self.loader = None
        if isinstance(data.train, Images):
            self.loader = iter(torch.utils.data.DataLoader(
                _Items(data.train), batch_sampler=StepBatches(len(data.train), batch_size, seed, start,
                                                      steps, hflip),
                num_workers=workers, pin_memory=device.type == "cuda",
                persistent_workers=False))
            self.labels = labels
        else:
            self.x = data.train.to(device)
            self.y = data.train_labels.to(device) if labels else None

    def next(self) -> tuple[Tensor, Tensor | None]:
        """The next global batch (x0, labels or None)."""
        if self.loader is not None:
            levels, y = next(self.loader)
            x0 = to_unit(levels.to(self.device, non_blocking=True))
            return x0, (y.to(self.device, non_blocking=True) if self.labels else None)
        idx = torch.randint(self.x.shape[0], (self.batch_size,), generator=self.gen).to(self.device)
        x0 = self.x[idx]
        if self.hflip:
            flip = (torch.rand(self.batch_size, generator=self.gen) < 0.5).to(self.device)
            x0 = torch.where(append_dims(flip, x0.ndim), x0.flip(-1), x0)
        return x0, (None if self.y is None else self.y[idx])
