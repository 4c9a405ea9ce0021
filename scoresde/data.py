"""Data sets: 2-D toy densities (some with a known entropy), sklearn's digits, image files, MNIST and
CIFAR-10 through torchvision.

Every builder is a plain function returning a `Dataset` with a train and a test split; hydra's
`conf/data/*.yaml` name them with `_target_`. Images are in [-1, 1] as 8-bit levels
k / 255 * 2 - 1 (`quantized=True`), the convention `solvers.bits_per_dim` expects.

Storage: the small sets (2-D points, sklearn's digits) are float tensors in memory, which training
indexes on the device (no loader). Image sets that can be large are `Images`: uint8 in memory
(MNIST, CIFAR-10, npz files) or files read from disk on access (an image folder: CelebA-HQ 256
does not fit in memory as floats); indexing one gives float images in [-1, 1], and
`score_sde.loader` feeds them to training through a torch DataLoader with workers.

Class labels (for class-conditional training) come with the data where they exist: the mixture
component of the ring, the square of the checkerboard, the moon of two_moons, the digit of digits,
MNIST and CIFAR-10, an optional `y` array of an npz file, the class subfolder of an image folder.
They are split with the same permutation as the data, so `train_labels[i]` is the label of
`train[i]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from score_sde.sde_lib import GaussianMixture


class Images:
    """uint8 images (N, C, H, W) held in memory or read from files on access.

    `images[i]` (an int, a slice or an index tensor) gives float images in [-1, 1] (k / 255 * 2 - 1),
    `images.uint8(i)` the uint8 levels; `shape` is (N, C, H, W) like a tensor's
    (`score_sde.loader` batches them for training).

    Args:
        levels: (N, C, H, W) uint8 images in memory, or None with `files`.
        files: image files read on access (resized to `size`, grey with `grayscale`), or None.
        size: H = W of images read from files.
        grayscale: read files as one grey channel instead of RGB.
        labels: (N,) long class labels, or None.
    """

    def __init__(self, levels: Tensor | None = None, *, files: list[Path] | None = None,
                 size: int = 32, grayscale: bool = False, labels: Tensor | None = None):
        if (levels is None) == (files is None):
            raise ValueError("Images takes uint8 levels or files, one of them")
        if levels is not None and (levels.dtype != torch.uint8 or levels.ndim != 4):
            raise ValueError(f"levels must be uint8 of shape (N, C, H, W), got {levels.dtype} of "
                             f"shape {tuple(levels.shape)}")
        self.levels, self.files, self.size, self.grayscale = levels, files, size, grayscale
        self.labels = labels
        n = len(files) if files is not None else levels.shape[0]
        c = (1 if grayscale else 3) if files is not None else levels.shape[1]
        hw = (size, size) if files is not None else tuple(levels.shape[2:])
        self.shape = (n, c, *hw)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, i: int) -> Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            img = img.convert("L" if self.grayscale else "RGB").resize((self.size, self.size),
                                                                        Image.BICUBIC)
            return torch.from_numpy(_as_nchw(np.asarray(img)[None], str(self.files[i]))[0].copy())

    def _index(self, index: int | slice | Tensor | list[int]) -> list[int]:
        return list(range(len(self)))[index] if isinstance(index, slice) else (
            torch.as_tensor(index).reshape(-1).tolist())

    def uint8(self, index: int | slice | Tensor | list[int] = slice(None)) -> Tensor:
        """The uint8 images (k, C, H, W) at `index` (an int gives (C, H, W))."""
        if self.levels is not None:
            return self.levels[index]
        if isinstance(index, int):
            return self._read(index)
        return torch.stack([self._read(i) for i in self._index(index)])

    def __getitem__(self, index: Any) -> Tensor:
        """Float images in [-1, 1] at index, a tensor's index (x[:, 0] decodes all, then picks)."""
        if isinstance(index, tuple):
            x = to_unit(self.uint8(index[0]))
            return x[index[1:]] if isinstance(index[0], int) else x[(slice(None), *index[1:])]
        return to_unit(self.uint8(index))

    def subset(self, index: Tensor) -> Images:
        """The images at `index` (k,), their labels with them."""
        labels = None if self.labels is None else self.labels[index]
        if self.levels is not None:
            return Images(self.levels[index], labels=labels)
        return Images(files=[self.files[i] for i in index.tolist()], size=self.size,
                      grayscale=self.grayscale, labels=labels)


def to_unit(levels: Tensor) -> Tensor:
    """uint8 levels k -> float32 k / 255 * 2 - 1 in [-1, 1] (any shape, on levels' device)."""
    return levels.float() / 127.5 - 1.0


def as_uint8(split: Tensor | Images, n: int | None = None) -> Tensor:
    """The first n (all: None) images of a split as uint8 levels (n, C, H, W)."""
    part = slice(None) if n is None else slice(0, n)
    if isinstance(split, Images):
        return split.uint8(part)
    return torch.round((split[part].float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8)


@dataclass
class Dataset:
    """A data set split in two, with what is known of its density.

    Attributes:
        name: a short name, used in titles.
        train: (N, *D) training data: a float tensor, or `Images` (indexing gives floats).
        test: (M, *D) held-out data, of the same kind.
        entropy: the true differential entropy of the data density in nats, if known.
        entropy_stderr: its Monte-Carlo standard error (0 when exact).
        quantized: 8-bit images scaled to [-1, 1] (bits/dim applies).
        log_prob: the exact log-density x (N, *D) -> (N,), if known.
        train_labels: (N,) long class labels of `train` in [0, num_classes), or None.
        test_labels: (M,) long class labels of `test`, or None.
        num_classes: the number of classes K when the data have labels, else None.
    """

    name: str
    train: Tensor | Images
    test: Tensor | Images
    entropy: float | None = None
    entropy_stderr: float | None = None
    quantized: bool = False
    log_prob: Callable[[Tensor], Tensor] | None = None
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        given = (self.train_labels is not None, self.test_labels is not None,
                 self.num_classes is not None)
        if any(given) and not all(given):
            raise ValueError(f"data {self.name!r}: train_labels, test_labels and num_classes go "
                             "together (all or none)")
        if not all(given):
            return
        for key, y, x in (("train_labels", self.train_labels, self.train),
                          ("test_labels", self.test_labels, self.test)):
            if y.dtype != torch.long or y.shape != x.shape[:1]:
                raise ValueError(f"data {self.name!r}: {key} must be a long tensor of shape "
                                 f"({x.shape[0]},), got {y.dtype} of shape {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"data {self.name!r}: {key} must lie in [0, num_classes) = "
                                 f"[0, {self.num_classes}), got values in "
                                 f"[{int(y.min())}, {int(y.max())}]")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape D of one sample."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.ndim == 4

    def split(self, name: str, n: int | None = None) -> Tensor:
        """The first n (all: None or 0) points of split `name` ("train" or "test") as a float
        tensor (images decoded to [-1, 1])."""
        x = self.train if name == "train" else self.test
        return x[:n] if n else x[:]


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


@lru_cache(maxsize=8)
def _ring_entropy(k: int, radius: float, std: float) -> tuple[float, float]:
    """`mixture_entropy` of a ring, computed once per process (200k points: half a second)."""
    return mixture_entropy(ring_mixture(k, radius, std))


def ring(n_train: int = 100_000, n_test: int = 2000, *, k: int = 8, radius: float = 2.0,
         std: float = 0.5, seed: int = 0) -> Dataset:
    """A ring of k Gaussians; its entropy is known (Monte Carlo of the exact -log p).

    Labels: the mixture component each point was drawn from (k classes).
    """
    _check_sizes(n_train, n_test)
    gm = ring_mixture(k, radius, std)
    x, y = gm.sample(n_train + n_test, generator=_gen(seed), return_components=True)
    x = x.float()
    h, se = _ring_entropy(k, radius, std)
    return Dataset("ring", x[:n_train], x[n_train:], entropy=h, entropy_stderr=se,
                   log_prob=gm.log_prob, train_labels=y[:n_train], test_labels=y[n_train:],
                   num_classes=k)


def checkerboard(n_train: int = 100_000, n_test: int = 2000, *, seed: int = 0) -> Dataset:
    """Uniform on the 8 dark squares of a 4 x 4 board on [-2, 2]^2: entropy log 8 exactly.

    Labels: the dark square of each point, 2 * column + row // 2 (8 classes).
    """
    _check_sizes(n_train, n_test)
    g = _gen(seed)
    n = n_train + n_test
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + col % 2  # dark squares: row + col even
    x = torch.stack([col + u[:, 0], row + u[:, 1]], dim=1) - 2.0
    x, y = x.float(), 2 * col + row // 2
    return Dataset("checkerboard", x[:n_train], x[n_train:], entropy=math.log(8.0),
                   entropy_stderr=0.0, log_prob=checkerboard_log_prob, train_labels=y[:n_train],
                   test_labels=y[n_train:], num_classes=8)


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """-log 8 on the dark squares of `checkerboard`, -inf elsewhere: (N, 2) -> (N,)."""
    cell = torch.floor(x + 2.0)
    inside = ((cell >= 0) & (cell <= 3)).all(1) & ((cell[:, 0] + cell[:, 1]) % 2 == 0)
    return torch.where(inside, torch.full_like(x[:, 0], -math.log(8.0)),
                       torch.full_like(x[:, 0], -math.inf))


def two_moons(n_train: int = 100_000, n_test: int = 2000, *, noise: float = 0.05,
              seed: int = 0) -> Dataset:
    """Two interleaved half circles (sklearn's make_moons), centred and scaled to unit-ish spread.

    Labels: the moon of each point (2 classes).
    """
    from sklearn.datasets import make_moons

    _check_sizes(n_train, n_test)
    x, y = make_moons(n_train + n_test, noise=noise, random_state=seed)
    x = torch.as_tensor((x - [0.5, 0.25]) * 2.0, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    return Dataset("two_moons", x[:n_train], x[n_train:], train_labels=y[:n_train],
                   test_labels=y[n_train:], num_classes=2)


def swiss_roll(n_train: int = 100_000, n_test: int = 2000, *, noise: float = 0.5,
               seed: int = 0) -> Dataset:
    """sklearn's 2-D swiss roll (make_swiss_roll's x and z), scaled to about [-2.5, 2.5]^2."""
    from sklearn.datasets import make_swiss_roll

    _check_sizes(n_train, n_test)
    x, _ = make_swiss_roll(n_train + n_test, noise=noise, random_state=seed)
    x = torch.as_tensor(x[:, [0, 2]] / 5.0, dtype=torch.float32)
    return Dataset("swiss_roll", x[:n_train], x[n_train:])


# -- images ------------------------------------------------------------------------------------
def _split(name: str, x: Tensor | Images, labels: Tensor | None, n_test: int | float, seed: int
           ) -> Dataset:
    """Images x (N, C, H, W) (float, or `Images` whose labels are `labels`) and their labels
    (N,) or None, split by one random permutation."""
    n = x.shape[0]
    m = int(round(n_test * n)) if isinstance(n_test, float) else int(n_test)
    if n < 2:
        raise ValueError(f"data {name!r} holds {n} image(s); training and its test split need "
                         "at least 2")
    if not 1 <= m < n:
        raise ValueError(f"data.test_fraction = {n_test!r} of {n} images leaves {m} for the "
                         f"test split and {n - m} for training; both need at least one")
    perm = torch.randperm(n, generator=_gen(seed))
    train, test = perm[m:], perm[:m]
    pick = x.subset if isinstance(x, Images) else x.__getitem__
    if labels is None:
        return Dataset(name, pick(train), pick(test), quantized=True)
    return Dataset(name, pick(train), pick(test), quantized=True, train_labels=labels[train],
                   test_labels=labels[test], num_classes=int(labels.max()) + 1)


def _labels(a: np.ndarray, n: int, source: str) -> Tensor:
    """Class labels (n,) of non-negative integers as a long tensor, or a ValueError."""
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer) or (n and a.min() < 0):
        raise ValueError(f"labels in {source} must be {n} integers >= 0 (one per image), got "
                         f"{a.dtype} of shape {a.shape}")
    return torch.as_tensor(a.astype(np.int64))


def digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """sklearn's 8 x 8 digits (1797 images of 17 grey levels 0..16), as 8-bit levels in [-1, 1].

    Level v becomes round(v * 255 / 16), so the data are 8-bit images and bits/dim is comparable
    with any 8-bit data set. Shape (N, 1, 8, 8). Labels: the digit (10 classes).
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    levels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # v in 0..16
    return _split("digits", to_unit(torch.from_numpy(levels)),
                  torch.as_tensor(bunch.target, dtype=torch.long), float(test_fraction), seed)


def _as_nchw(a: np.ndarray, source: str) -> np.ndarray:
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3):  # (N, H, W, C)
        a = a.transpose(0, 3, 1, 2)
    if a.ndim != 4:
        raise ValueError(f"images in {source} must have shape (N, H, W), (N, H, W, C) or "
                         f"(N, C, H, W), got {a.shape}")
    if a.shape[1] not in (1, 3):
        raise ValueError(f"images in {source} must have 1 (grey) or 3 (RGB) channels, got "
                         f"{a.shape[1]} in shape {a.shape}; convert them (drop an alpha channel)")
    if a.dtype != np.uint8:
        raise ValueError(f"images in {source} must be uint8 (0..255), got dtype {a.dtype}")
    return a


def npz(path: str, *, key: str = "x", label_key: str = "y", test_fraction: float = 0.1,
        seed: int = 0) -> Dataset:
    """uint8 images stored under `key` in a .npz (or .npy) file, split at random.

    Labels: the integer array under `label_key` of a .npz file, if it holds one (K = max + 1).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"data.path must be an existing .npz or .npy file, got {str(p)!r}")
    try:  # allow_pickle=False: an object array is refused, never unpickled
        loaded = np.load(p)
        if isinstance(loaded, np.ndarray):  # a .npy file
            arrays = {key: loaded}
        else:
            with loaded:
                arrays = dict(loaded)
    except (ValueError, OSError, EOFError) as err:
        why = ("not a numpy file, or one of pickled objects" if "pickle" in str(err)
               else str(err).split(". ")[0])
        raise ValueError(f"data.path {str(p)!r} is not a .npz or .npy file of plain arrays "
                         f"({why}); save the images with numpy.savez(path, x=images)") from err
    if key not in arrays:
        raise ValueError(f"data.key {key!r} is not in {p}; it holds {sorted(arrays)}")
    arr = arrays[key]
    labels = None
    if label_key in arrays:
        labels = _labels(arrays[label_key], arr.shape[0], f"{p}[{label_key!r}]")
    levels = torch.from_numpy(np.ascontiguousarray(_as_nchw(arr, str(p))))
    return _split(p.stem, Images(levels, labels=labels), labels, float(test_fraction), seed)


def image_folder(path: str, *, size: int = 32, grayscale: bool = False,
                 test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Every .png/.jpg/.jpeg/.bmp under a folder, resized to size x size, split at random; the
    files are read when the images are used (`Images`), not at start.

    Labels: when every image lies in a subfolder of `path` and there are at least two of them,
    the subfolders are the classes, numbered in sorted order of their names (as torchvision's
    ImageFolder does).
    """
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"data.size must be an int >= 1 (the side of the resized images), got "
                         f"{size!r}")
    root = Path(path).expanduser()
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg",
                                                                      ".bmp"))
    if not files:
        raise ValueError(f"data.path must be a folder holding images, found none in {str(root)!r}")
    parts = [f.relative_to(root).parts for f in files]
    classes = sorted({p[0] for p in parts})
    labels = None
    if all(len(p) > 1 for p in parts) and len(classes) > 1:
        labels = torch.tensor([classes.index(p[0]) for p in parts], dtype=torch.long)
    images = Images(files=files, size=size, grayscale=grayscale, labels=labels)
    return _split(root.name, images, labels, float(test_fraction), seed)


# the files torchvision looks for under `root`, named in the offline message
_TORCHVISION_FILES = {"MNIST": "MNIST/raw/ (train-images-idx3-ubyte.gz and the three other files)",
                      "CIFAR10": "cifar-10-batches-py/ (cifar-10-python.tar.gz, extracted)"}


def _torchvision(name: str, root: str, download: bool) -> Dataset:
    try:
        import torchvision
    except ImportError as err:
        raise ValueError(f"data={name.lower()} needs torchvision, which is not installed; run "
                         "`pip install torchvision` (CPU wheels: --index-url "
                         "https://download.pytorch.org/whl/cpu) or use data=digits, which ships "
                         "with scikit-learn") from err
    except Exception as err:  # a wheel built for another torch fails inside its own import
        raise ValueError(f"data={name.lower()} needs torchvision, which is installed but does not "
                         f"import ({type(err).__name__}: {err}); install the torchvision release "
                         f"made for torch {torch.__version__}") from err
    cls = getattr(torchvision.datasets, name)
    try:
        sets = [cls(root, train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError) as err:
        raise ValueError(f"could not load {name} from {root!r} ({err}); without a network, "
                         f"place {_TORCHVISION_FILES[name]} under data.root={root} and pass "
                         "data.download=false") from err
    xs, ys = [], []
    for s in sets:
        a = s.data.numpy() if isinstance(s.data, Tensor) else np.asarray(s.data)
        ys.append(torch.as_tensor(np.asarray(s.targets), dtype=torch.long))
        xs.append(Images(torch.from_numpy(np.ascontiguousarray(_as_nchw(a, name))), labels=ys[-1]))
    return Dataset(name.lower(), xs[0], xs[1], quantized=True, train_labels=ys[0],
                   test_labels=ys[1], num_classes=len(sets[0].classes))


def mnist(*, root: str = "~/.cache/score-sde", download: bool = True) -> Dataset:
    """MNIST 28 x 28 through torchvision (an optional dependency). Labels: the digit."""
    return _torchvision("MNIST", str(Path(root).expanduser()), download)


def cifar10(*, root: str = "~/.cache/score-sde", download: bool = True) -> Dataset:
    """CIFAR-10 32 x 32 RGB through torchvision (an optional dependency). Labels: the class."""
    return _torchvision("CIFAR10", str(Path(root).expanduser()), download)
