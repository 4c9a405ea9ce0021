"""Data sets: the entropies reported are the true ones, images are exact 8-bit levels in [-1, 1],
and the GaussianMixture baseline uses the bits/dim convention of solvers.bits_per_dim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from score_sde.baselines import gmm_bits_per_dim
from score_sde.data import (
    checkerboard,
    checkerboard_log_prob,
    digits,
    image_folder,
    npz,
    ring,
    ring_mixture,
)
from score_sde.solvers import dequantize


def test_checkerboard_density_and_entropy():
    d = checkerboard(4000, 1000)
    x = torch.cat([d.train, d.test]).double()
    assert bool(torch.isfinite(checkerboard_log_prob(x)).all())  # every sample on a dark square
    assert d.entropy == pytest.approx(math.log(8.0), abs=0)
    # the density integrates to 1: it is 1/8 on exactly half of the 16 unit cells of [-2, 2]^2
    centres = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"),
                          -1).reshape(-1, 2) - 1.5
    lp = checkerboard_log_prob(centres)
    assert torch.isfinite(lp).sum() == 8 and torch.exp(lp).sum() == pytest.approx(1.0)
    # and the 8 squares are equally likely
    cells = torch.floor(x + 2).long()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    assert (counts > 0).sum() == 8 and counts.max() < 1.2 * counts[counts > 0].min()


def test_ring_entropy_matches_quadrature():
    """The Monte-Carlo entropy agrees with -int p log p on a fine grid."""
    d = ring(10, 10)
    gm = ring_mixture()
    h = 11.0 / 1000
    g = torch.arange(-5.5 + h / 2, 5.5, h, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    lp = gm.log_prob(xy)
    p = lp.exp()
    assert (p.sum() * h * h).item() == pytest.approx(1.0, abs=1e-6)
    quad = -(p * lp).sum().item() * h * h
    assert abs(d.entropy - quad) < 4 * d.entropy_stderr
    assert torch.equal(d.log_prob(d.test.double()), gm.log_prob(d.test.double()))


def test_digits_are_8bit_levels_split_once():
    d = digits(test_fraction=0.2, seed=0)
    assert d.train.shape == (1438, 1, 8, 8) and d.test.shape == (359, 1, 8, 8)
    assert d.quantized and d.is_image
    k = (torch.cat([d.train, d.test]) + 1) * 127.5
    assert torch.allclose(k, k.round(), atol=1e-4)
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(k.round().long().unique().tolist()) <= allowed
    # no test image is also a training image by index: the split is a permutation
    flat_train = {tuple(r.tolist()) for r in d.train.flatten(1)}
    assert sum(tuple(r.tolist()) in flat_train for r in d.test.flatten(1)) < 10  # only duplicates


def test_training_dequantization_stays_in_the_cell():
    levels = torch.arange(256, dtype=torch.float32)
    x = levels / 255 * 2 - 1
    y = dequantize(x.repeat(50, 1), generator=torch.Generator().manual_seed(0), check=False)[0]
    lo, hi = levels / 128 - 1, (levels + 1) / 128 - 1
    assert bool(((y >= lo) & (y < hi)).all())


def test_gmm_baseline_on_uniform_noise_images():
    """Uniform 8-bit noise has exactly 8 bits/dim; a Gaussian fit pays its KL to the uniform:
    0.5 log2(2 pi e / 12 * 4) - 1 = 0.254 bits/dim more."""
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (6000, 1, 2, 2), generator=g).float()
    x = k / 255 * 2 - 1
    base = gmm_bits_per_dim(x[:5000], x[5000:], components=(1,))
    expected = 8 + 0.5 * math.log2(2 * math.pi * math.e / 3) - 1
    assert base.n_components == 1
    assert base.bpd == pytest.approx(expected, abs=4 * base.stderr + 0.01)


def test_bad_image_files_are_named_in_one_line(tmp_path):
    """An empty npz, random bytes, an object array, 5-channel images, one image, a split that
    leaves nothing, a zero image size: each a ValueError naming the file or the setting."""
    (tmp_path / "random.npz").write_bytes(bytes(range(256)) * 8)
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.uint8))
    np.savez(tmp_path / "objects.npz", x=np.array([object()] * 3, dtype=object))
    np.savez(tmp_path / "five.npz", x=np.zeros((4, 5, 8, 8), np.uint8))
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 8, 8), np.uint8))
    np.save(tmp_path / "ten.npy", np.zeros((10, 8, 8), np.uint8))
    cases = [(npz, "random.npz", {}, "is not a .npz or .npy file of plain arrays"),
             (npz, "objects.npz", {}, "is not a .npz or .npy file of plain arrays"),
             (npz, "empty.npz", {}, "data 'empty' holds 0 image(s)"),
             (npz, "one.npz", {}, "holds 1 image(s); training and its test split need at least 2"),
             (npz, "five.npz", {}, "must have 1 (grey) or 3 (RGB) channels, got 5"),
             (npz, "ten.npy", {"test_fraction": 0.01}, "leaves 0 for the test split"),
             (image_folder, ".", {"size": 0}, "data.size must be an int >= 1")]
    for build, name, kw, message in cases:
        with pytest.raises(ValueError) as err:
            build(str(tmp_path / name), **kw)
        assert message in str(err.value) and "\n" not in str(err.value), name
    assert npz(str(tmp_path / "ten.npy")).train.shape == (9, 1, 8, 8)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((10, 4, 4, 3), np.uint8))  # 4 x 4 RGB, channels last
    assert npz(str(tmp_path / "rgb.npz")).train.shape == (9, 3, 4, 4)
