"""Sample files of `score-sde sample`, in one of three formats (`out.format`), each with
`<name>.json` beside it: how they were made (the solver and its settings, the seed, the NFE per
sample, the run and checkpoint or the pretrained model and its data range, the label, guidance,
inpainting files and tuned grid where used).

    pt   `<name>.pt`: the (n, *D) float samples (a plain tensor, loads with weights_only=True).
    npz  `<name>.npz`: uint8 images (n, H, W, C) under `arr_0`, the layout of the FID tools and the
         papers' evaluation code (np.load(f)["arr_0"]).
    png  `<name>/000000.png, ...`: one uint8 PNG per image (grey or RGB).

Images in [-1, 1] become 8-bit levels round((x + 1) * 127.5), clipped to 0..255: level k is the
value k / 255 * 2 - 1 of the data (`score_sde.data.to_unit`), so real images round-trip exactly.
`read_images` reads any of the three (and any folder of images) back as uint8 (n, C, H, W).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from score_sde.data import as_uint8, to_unit

FORMATS = ("pt", "npz", "png")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def meta_path(path: Path) -> Path:
    """The .json beside samples `path` (<name>.pt, <name>.npz or the folder <name>)."""
    name = path.name[: -len(path.suffix)] if path.suffix in (".pt", ".npz") else path.name
    return path.parent / f"{name}.json"


def to_nhwc(levels: Tensor) -> np.ndarray:
    """uint8 images (n, C, H, W) -> a numpy array (n, H, W, C)."""
    return levels.permute(0, 2, 3, 1).contiguous().numpy()


def save_samples(x: Tensor, meta: dict[str, Any], path: str | Path, *, fmt: str = "pt") -> Path:
    """Write x (n, *D) to `path` in format `fmt` (pt; npz and png for images (n, C, H, W) in
    [-1, 1]) and `meta` (JSON-serialisable) to the .json beside it.

    Returns:
        The file (pt, npz) or folder (png) written.

    Raises:
        ValueError: an unknown format, or npz / png for data that are not images.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"out.format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "pt" and (x.ndim != 4 or x.shape[1] not in (1, 3)):
        raise ValueError(f"out.format={fmt} writes images (n, 1 or 3, H, W), got samples of shape "
                         f"{tuple(x.shape)}; use out.format=pt")
    if fmt == "pt":
        torch.save(x.cpu(), path)
    elif fmt == "npz":
        np.savez(path, arr_0=to_nhwc(as_uint8(x.cpu())))
    else:
        from PIL import Image

        path.mkdir()
        for i, img in enumerate(to_nhwc(as_uint8(x.cpu()))):
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path / f"{i:06d}.png")
    meta_path(path).write_text(json.dumps({"samples": path.name, "format": fmt, **meta}, indent=1)
                               + "\n")
    return path


def read_images(path: str | Path) -> Tensor:
    """uint8 images (n, C, H, W) from an .npz (arr_0, NHWC, or the only array), a .pt of float
    images in [-1, 1], or a folder of image files (sorted by name).

    Raises:
        ValueError: no such file or folder, or it holds no images.
    """
    from score_sde.data import Images

    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{str(path)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        from PIL import Image

        with Image.open(files[0]) as first:
            grey, size = first.mode in ("L", "I", "1"), first.size
        if size[0] != size[1]:
            raise ValueError(f"images in {str(path)!r} must be square, got {size[0]} x {size[1]}")
        return Images(files=files, size=size[0], grayscale=grey).uint8()
    if path.suffix == ".npz" and path.is_file():
        with np.load(path) as arrays:
            key = "arr_0" if "arr_0" in arrays else (arrays.files[0] if len(arrays.files) == 1
                                                     else None)
            if key is None:
                raise ValueError(f"{str(path)!r} must hold arr_0 (uint8 images n x H x W x C), "
                                 f"holds {arrays.files}")
            a = arrays[key]
        if a.dtype != np.uint8 or a.ndim != 4:
            raise ValueError(f"{str(path)}[{key!r}] must be uint8 images (n, H, W, C), got "
                             f"{a.dtype} of shape {a.shape}")
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    if path.suffix == ".pt" and path.is_file():
        x = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(x, Tensor) and x.ndim == 4):
            raise ValueError(f"{str(path)!r} must hold float images (n, C, H, W) in [-1, 1]")
        return as_uint8(x)
    raise ValueError(f"{str(path)!r} must be an .npz (arr_0), a .pt of score-sde sample or a "
                     "folder of images")


def load_samples(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """The samples written by `score-sde sample` (a .pt, .npz or PNG folder) and their metadata;
    npz and PNG images come back as floats k / 255 * 2 - 1 in [-1, 1], (n, C, H, W).

    Raises:
        ValueError: the samples or the .json beside them are missing.
    """
    path = Path(path)
    meta = meta_path(path)
    if not (path.exists() and meta.is_file()):
        raise ValueError(f"{str(path)!r} is not a sample file of `score-sde sample` with its "
                         f"{meta.name} beside it")
    if path.suffix == ".pt":
        x = torch.load(path, map_location="cpu", weights_only=True)
    else:
        x = to_unit(read_images(path))
    return x, json.loads(meta.read_text())
