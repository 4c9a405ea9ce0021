"""Data sets: 2-D toy densities (some with a known entropy), sklearn's digits, image files, MNIST and
CIFAR-10 through torchvision.

Every builder is a plain function returning a `Dataset` with a train and a test tensor; hydra's
`conf/data/*.yaml` name them with `_target_`. Images are returned in [-1, 1] as 8-bit levels
k / 255 * 2 - 1 (`quantized=True`), the convention `solvers.bits_per_dim` expects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sde_lib import GaussianMixture


@dataclass
class Dataset:
    """A data set split in two, with what is known of its density.

    Attributes:
        name: a short name, used in titles.
        train: (N, *D) training data.
        test: (M, *D) held-out data.
        entropy: the true differential entropy of the data density in nats, if known.
        entropy_stderr: its Monte-Carlo standard error (0 when exact).
        quantized: 8-bit images scaled to [-1, 1] (bits/dim applies).
        log_prob: the exact log-density x (N, *D) -> (N,), if known.
    """

    name: str
    train: Tensor
    test: Tensor
    entropy: float | None = None
    entropy_stderr: float | None = None
    quantized: bool = False
    log_prob: Callable[[Tensor], Tensor] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape D of one sample."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.ndim == 4


def _check_sizes(n_train: int, n_test: int) -> None:
    for key, n in (("n_train", n_train), ("n_test", n_test)):
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"{key} must be an int >= 1, got {n!r}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- 2-D toy sets ------------------------------------------------------------------------------
def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.5) -> GaussianMixture:
    """k equal isotropic Gaussians of std `std` with means evenly spaced on a circle."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return GaussianMixture(means, std)


def mixture_entropy(gm: GaussianMixture, n: int = 200_000, seed: int = 1234
                    ) -> tuple[float, float]:
    """Monte-Carlo entropy E[-log p(x)] of a mixture and its standard error, in nats."""
    x = gm.sample(n, generator=_gen(seed)).double()
    nll = -gm.log_prob(x)
    return nll.mean().item(), (nll.std() / math.sqrt(n)).item()


def ring(n_train: int = 100_000, n_test: int = 2000, *, k: int = 8, radius: float = 2.0,
         std: float = 0.5, seed: int = 0) -> Dataset:
    """A ring of k Gaussians; its entropy is known (Monte Carlo of the exact -log p)."""
    _check_sizes(n_train, n_test)
    gm = ring_mixture(k, radius, std)
    x = gm.sample(n_train + n_test, generator=_gen(seed)).float()
    h, se = mixture_entropy(gm)
    return Dataset("ring", x[:n_train], x[n_train:], entropy=h, entropy_stderr=se,
                   log_prob=gm.log_prob)


def checkerboard(n_train: int = 100_000, n_test: int = 2000, *, seed: int = 0) -> Dataset:
    """Uniform on the 8 dark squares of a 4 x 4 board on [-2, 2]^2: entropy log 8 exactly."""
    _check_sizes(n_train, n_test)
    g = _gen(seed)
    n = n_train + n_test
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + col % 2  # dark squares: row + col even
    x = torch.stack([col + u[:, 0], row + u[:, 1]], dim=1) - 2.0
    x = x.float()
    return Dataset("checkerboard", x[:n_train], x[n_train:], entropy=math.log(8.0),
                   entropy_stderr=0.0, log_prob=checkerboard_log_prob)


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """-log 8 on the dark squares of `checkerboard`, -inf elsewhere: (N, 2) -> (N,)."""
    cell = torch.floor(x + 2.0)
    inside = ((cell >= 0) & (cell <= 3)).all(1) & ((cell[:, 0] + cell[:, 1]) % 2 == 0)
    return torch.where(inside, torch.full_like(x[:, 0], -math.log(8.0)),
                       torch.full_like(x[:, 0], -math.inf))


def two_moons(n_train: int = 100_000, n_test: int = 2000, *, noise: float = 0.05,
              seed: int = 0) -> Dataset:
    """Two interleaved half circles (sklearn's make_moons), centred and scaled to unit-ish spread."""
    from sklearn.datasets import make_moons

    _check_sizes(n_train, n_test)
    x, _ = make_moons(n_train + n_test, noise=noise, random_state=seed)
    x = torch.as_tensor((x - [0.5, 0.25]) * 2.0, dtype=torch.float32)
    return Dataset("two_moons", x[:n_train], x[n_train:])


def swiss_roll(n_train: int = 100_000, n_test: int = 2000, *, noise: float = 0.5,
               seed: int = 0) -> Dataset:
    """sklearn's 2-D swiss roll (make_swiss_roll's x and z), scaled to about [-2.5, 2.5]^2."""
    from sklearn.datasets import make_swiss_roll

    _check_sizes(n_train, n_test)
    x, _ = make_swiss_roll(n_train + n_test, noise=noise, random_state=seed)
    x = torch.as_tensor(x[:, [0, 2]] / 5.0, dtype=torch.float32)
    return Dataset("swiss_roll", x[:n_train], x[n_train:])


# -- images ------------------------------------------------------------------------------------
def _to_unit(levels: np.ndarray) -> Tensor:
    """uint8 levels (N, C, H, W) -> float32 in [-1, 1]."""
    return torch.as_tensor(levels.astype(np.float32) / 255.0 * 2.0 - 1.0)


def _split(x: Tensor, n_test: int | float, seed: int) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    m = int(round(n_test * n)) if isinstance(n_test, float) else int(n_test)
    if not 1 <= m < n:
        raise ValueError(f"n_test must leave at least one training image out of {n}, got {n_test!r}")
    perm = torch.randperm(n, generator=_gen(seed))
    return x[perm[m:]], x[perm[:m]]


def digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """sklearn's 8 x 8 digits (1797 images of 17 grey levels 0..16), as 8-bit levels in [-1, 1].

    Level v becomes round(v * 255 / 16), so the data are 8-bit images and bits/dim is comparable
    with any 8-bit data set. Shape (N, 1, 8, 8).
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    v = load_digits().images  # (1797, 8, 8) in 0..16
    levels = np.rint(v * (255.0 / 16.0)).astype(np.uint8)[:, None]
    train, test = _split(_to_unit(levels), float(test_fraction), seed)
    return Dataset("digits", train, test, quantized=True)


def _as_nchw(a: np.ndarray, source: str) -> np.ndarray:
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4:
        raise ValueError(f"images in {source} must have shape (N, H, W), (N, H, W, C) or "
                         f"(N, C, H, W), got {a.shape}")
    if a.dtype != np.uint8:
        raise ValueError(f"images in {source} must be uint8 (0..255), got dtype {a.dtype}")
    return a


def npz(path: str, *, key: str = "x", test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """uint8 images stored under `key` in a .npz (or .npy) file, split at random."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"data.path must be an existing .npz or .npy file, got {str(p)!r}")
    arr = np.load(p)
    if p.suffix == ".npz":
        if key not in arr:
            raise ValueError(f"data.key {key!r} is not in {p}; it holds {sorted(arr.files)}")
        arr = arr[key]
    train, test = _split(_to_unit(_as_nchw(arr, str(p))), float(test_fraction), seed)
    return Dataset(p.stem, train, test, quantized=True)


def image_folder(path: str, *, size: int = 32, grayscale: bool = False,
                 test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Every .png/.jpg/.jpeg/.bmp under a folder, resized to size x size, split at random."""
    from PIL import Image

    root = Path(path).expanduser()
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg",
                                                                      ".bmp"))
    if not files:
        raise ValueError(f"data.path must be a folder holding images, found none in {str(root)!r}")
    mode = "L" if grayscale else "RGB"
    imgs = [np.asarray(Image.open(f).convert(mode).resize((size, size), Image.BICUBIC))
            for f in files]
    train, test = _split(_to_unit(_as_nchw(np.stack(imgs), str(root))), float(test_fraction), seed)
    return Dataset(root.name, train, test, quantized=True)


def _torchvision(name: str, root: str, download: bool) -> Dataset:
    try:
        import torchvision
    except ImportError as err:
        raise ValueError(f"data={name.lower()} needs torchvision, which is not installed; run "
                         "`pip install torchvision` (CPU wheels: --index-url "
                         "https://download.pytorch.org/whl/cpu) or use data=digits, which ships "
                         "with scikit-learn") from err
    cls = getattr(torchvision.datasets, name)
    try:
        sets = [cls(root, train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError) as err:
        raise ValueError(f"could not load {name} from {root!r} ({err}); without a network, "
                         f"place the files there and pass data.download=false") from err
    out = []
    for s in sets:
        a = s.data.numpy() if isinstance(s.data, Tensor) else np.asarray(s.data)
        out.append(_to_unit(_as_nchw(a, name)))
    return Dataset(name.lower(), out[0], out[1], quantized=True)


def mnist(*, root: str = "~/.cache/score-sde", download: bool = True) -> Dataset:
    """MNIST 28 x 28 through torchvision (an optional dependency)."""
    return _torchvision("MNIST", str(Path(root).expanduser()), download)


def cifar10(*, root: str = "~/.cache/score-sde", download: bool = True) -> Dataset:
    """CIFAR-10 32 x 32 RGB through torchvision (an optional dependency)."""
    return _torchvision("CIFAR10", str(Path(root).expanduser()), download)
