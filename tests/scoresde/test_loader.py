"""The image data pipeline: an image folder is read lazily, image sets are stored as uint8 and
batched by a DataLoader whose batch for step s (indices and mirror flips) depends on (seed, s)
alone (resume and worker count change nothing), small sets keep their in-memory stream, and
torchvision's absence is reported with the fix."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from score_sde import data as data_mod
from score_sde.data import Images, cifar10, digits, image_folder, npz, to_unit
from score_sde.loader import TrainBatches, step_draws

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 RGB 6x6 PNGs in two class folders; pixel (0, 0) of image i is i, the rest a gradient."""
    root = tmp_path_factory.mktemp("imgs")
    for i in range(12):
        a = np.tile(np.arange(6, dtype=np.uint8)[None, :, None] * 40, (6, 1, 3))
        a[0, 0] = i
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(a).save(root / f"c{i % 2}" / f"{i:02d}.png")
    return root


def test_image_folder_is_read_on_access(folder, monkeypatch):
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda f, *a, **k: opened.append(f) or real(f, *a, **k))
    d = image_folder(str(folder), size=6, test_fraction=0.25)
    assert opened == [] and isinstance(d.train, Images) and d.shape == (3, 6, 6)
    assert d.num_classes == 2 and len(d.train) == 9 and len(d.test) == 3
    x = d.test[:2]
    assert len(opened) == 2 and x.dtype == torch.float32 and x.shape == (2, 3, 6, 6)
    levels = d.test.uint8(slice(0, 2))
    assert torch.equal(to_unit(levels), x) and levels.dtype == torch.uint8
    assert torch.equal(levels[:, :, 0, 0] % 2, d.test_labels[:2, None].expand(2, 3))


def test_loader_batches_and_flips_as_drawn_and_resumes(folder):
    """Batch s of the DataLoader is images[idx_s] mirrored where flip_s; starting at step 3 gives
    batches 3, 4, ... again, and 2 workers give what the training process gives."""
    d = image_folder(str(folder), size=6, test_fraction=0.25)
    levels = d.train.uint8()

    def batches(start, workers, n=3):
        src = TrainBatches(d, batch_size=5, hflip=True, generator=torch.Generator(), seed=7,
                           start=start, steps=start + n, workers=workers, device=CPU, labels=True)
        return [src.next() for _ in range(n)]

    run = batches(0, 0, 6)
    for s, (x, y) in enumerate(run):
        idx, flip = step_draws(len(d.train), 5, 7, s, True)
        expected = torch.where(flip[:, None, None, None], levels[idx].flip(-1), levels[idx])
        assert torch.equal(x, to_unit(expected)) and torch.equal(y, d.train_labels[idx])
    assert any(step_draws(len(d.train), 5, 7, s, True)[1].any() for s in range(6))
    for (x, y), (x2, y2) in zip(run[3:], batches(3, 2)):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_small_sets_keep_their_in_memory_stream():
    """digits: indices come from the run's data generator as before; hflip draws after them."""
    d = digits()
    plain = TrainBatches(d, batch_size=8, hflip=False, generator=torch.Generator().manual_seed(3),
                         seed=0, start=0, steps=10, workers=0, device=CPU, labels=False)
    idx = torch.randint(len(d.train), (8,), generator=torch.Generator().manual_seed(3))
    x, y = plain.next()
    assert torch.equal(x, d.train[idx]) and y is None
    flipped = TrainBatches(d, batch_size=8, hflip=True, generator=torch.Generator().manual_seed(3),
                           seed=0, start=0, steps=10, workers=0, device=CPU, labels=False)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(len(d.train), (8,), generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    expected = torch.where(flip[:, None, None, None], d.train[idx].flip(-1), d.train[idx])
    assert torch.equal(flipped.next()[0], expected)


def test_npz_images_are_uint8_in_memory(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (10, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=a)
    d = npz(str(tmp_path / "x.npz"), test_fraction=0.2)
    assert d.train.levels.dtype == torch.uint8 and d.shape == (3, 5, 5)
    every = torch.cat([d.train.uint8(), d.test.uint8()]).permute(0, 2, 3, 1).numpy()
    assert sorted(map(bytes, every)) == sorted(map(bytes, a))


def test_hflip_on_points_is_refused():
    with pytest.raises(ValueError, match="train.hflip mirrors images"):
        TrainBatches(data_mod.ring(16, 4), batch_size=4, hflip=True, generator=torch.Generator(),
                     seed=0, start=0, steps=1, workers=0, device=CPU, labels=False)


def test_torchvision_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ValueError, match="needs torchvision, which is not installed; run `pip install"):
        cifar10(download=False)
