"""Sample quality: the Frechet distance (FID) and the kernel distance (KID) between two image sets,
computed by torchmetrics (`FrechetInceptionDistance`, `KernelInceptionDistance`) in the features of

    "inception"  torch-fidelity's Inception-v3 with the TF FID weights (pool3, 2048-d): the FID of
                 the papers. An optional extra, `pip install 'score-sde[fid]'` (it pulls
                 torchvision); the weights come from torch-fidelity's download, or from a local
                 file (`inception_weights=`), read with weights_only=True.
    "judge"      the logits of the labelled data's judge classifier (`score_sde.judge`: logistic
                 regression on the pixels), no download: the digits experiments report it, and the
                 tests exercise the same path through it.

torchmetrics, not a formula of our own: the FID of the literature is a fixed pipeline (uint8 input,
TF-compatible resizing, Inception pool features, float64 statistics) whose details change the
number, and torchmetrics keeps it with torch-fidelity's extractor, matching the reference
implementation. It takes any torch module as the feature extractor, so the judge's features go
through the very same statistics. Images enter as uint8 (n, C, H, W); grey images are repeated to
RGB for the Inception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from score_sde.console import log
from score_sde.data import Dataset, as_uint8, to_unit
from score_sde.judge import Judge, fit_judge

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


@dataclass
class FIDReport:
    """The distances between two image sets.

    Attributes:
        fid: the Frechet distance of the feature Gaussians.
        kid: the kernel distance (cubic polynomial MMD^2, unbiased), mean over subsets, or None.
        kid_std: its standard deviation over the subsets, or None.
        n_samples, n_reference: the images in each set.
        features: "inception" or "judge".
    """

    fid: float
    kid: float | None
    kid_std: float | None
    n_samples: int
    n_reference: int
    features: str


class JudgeFeatures(nn.Module):
    """The judge's logits as features: uint8 images (n, C, H, W) -> (n, K), K the classes."""

    def __init__(self, judge: Judge):
        super().__init__()
        clf = judge.classifier
        self.register_buffer("weight", torch.as_tensor(clf.coef_, dtype=torch.float64))
        self.register_buffer("bias", torch.as_tensor(clf.intercept_, dtype=torch.float64))
        self.num_features = int(self.weight.shape[0])

    def forward(self, levels: Tensor) -> Tensor:
        return to_unit(levels).double().flatten(1) @ self.weight.T + self.bias


class _RGB(nn.Module):
    """Repeat grey images to three channels in front of an RGB feature extractor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.num_features = net, 2048

    def forward(self, levels: Tensor) -> Tensor:
        return self.net(levels.expand(-1, 3, -1, -1) if levels.shape[1] == 1 else levels)


def inception(weights: str | None = None) -> nn.Module:
    """torch-fidelity's FID Inception (pool3, 2048-d) through torchmetrics, on uint8 images.

    Raises:
        ValueError: torch-fidelity is not installed (the extra that installs it), the weights
            cannot be downloaded (the file to provide) or the file is not a state dict of tensors.
    """
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:
        raise ValueError("FID in Inception features needs torchmetrics: pip install "
                         "'score-sde[fid]'") from err
    try:
        import torch_fidelity  # noqa: F401
    except Exception as err:  # not installed, or a torchvision that does not import
        raise ValueError(f"FID in Inception features needs torch-fidelity (with torchvision), which "
                         f"does not import ({type(err).__name__}: {err}): pip install "
                         "'score-sde[fid]'; without it, features=judge measures labelled data "
                         "such as digits") from err
    if weights is not None:
        path = Path(weights).expanduser()
        try:  # tensors only: a file that holds code is refused before torch-fidelity reads it
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"inception_weights must be a state dict file of tensors "
                             f"({INCEPTION_FILE}), got {weights!r} ({err})") from err
        weights = str(path)
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=weights)
    except OSError as err:  # URLError and the hub's download errors
        raise ValueError(f"could not download the FID Inception weights ({err}); offline, fetch "
                         f"{INCEPTION_URL} where there is a network and pass "
                         f"inception_weights=<that file>") from err
    return _RGB(net)


def feature_extractor(features: str, *, inception_weights: str | None = None,
                      judge_data: Dataset | None = None) -> nn.Module:
    """The feature module of `features` ("inception" or "judge", the latter fitted on judge_data)."""
    if features == "inception":
        return inception(inception_weights)
    if features == "judge":
        if judge_data is None:
            raise ValueError("features=judge needs a labelled data set to fit the judge on")
        return JudgeFeatures(fit_judge(judge_data))
    raise ValueError(f"features must be 'inception' or 'judge', got {features!r}")


def distances(samples: Tensor, reference: Tensor, extractor: nn.Module, *, kid: bool = True,
              kid_subset_size: int = 1000, kid_subsets: int = 100, batch_size: int = 200,
              seed: int = 0, device: torch.device | str = "cpu", features: str = "custom"
              ) -> FIDReport:
    """FID (and KID) of uint8 images `samples` (n, C, H, W) to `reference` (m, C, H, W).

    KID's subsets are min(kid_subset_size, n, m) images, drawn with torch's RNG seeded by `seed`
    (restored after).

    Raises:
        ValueError: fewer than 2 images in a set, or sets of different image shapes.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples and reference must be images of one shape, got "
                         f"{tuple(samples.shape[1:])} and {tuple(reference.shape[1:])}")
    if min(len(samples), len(reference)) < 2:
        raise ValueError(f"FID needs at least 2 images in each set, got {len(samples)} and "
                         f"{len(reference)}")
    if samples.dtype != torch.uint8 or reference.dtype != torch.uint8:
        raise ValueError("samples and reference must be uint8 images (score_sde.data.as_uint8)")
    extractor = extractor.to(device).eval()
    size = min(kid_subset_size, len(samples), len(reference))
    metrics = [FrechetInceptionDistance(feature=extractor)]
    if kid:
        metrics.append(KernelInceptionDistance(feature=extractor, subsets=kid_subsets,
                                               subset_size=size))
    metrics = [m.to(device) for m in metrics]
    with torch.no_grad():
        for images, real in ((reference, True), (samples, False)):
            for i in range(0, len(images), batch_size):
                chunk = images[i:i + batch_size].to(device)
                for m in metrics:
                    m.update(chunk, real=real)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        values = [m.compute() for m in metrics]
    fid = float(values[0])
    kid_mean, kid_std = (float(values[1][0]), float(values[1][1])) if kid else (None, None)
    return FIDReport(fid, kid_mean, kid_std, len(samples), len(reference), features)


def _builtin_data(name: str) -> Dataset:
    """A data set of the `data` config group by name (digits, cifar10, mnist, ...)."""
    from hydra.utils import instantiate

    conf = resources.files("score_sde.conf") / "data" / f"{name}.yaml"
    if not conf.is_file():
        raise ValueError(f"no data set {name!r} in the data group")
    node = OmegaConf.create(conf.read_text())
    if OmegaConf.missing_keys(node):
        raise ValueError(f"data {name!r} needs a path: give the folder or .npz itself instead")
    return instantiate(node)


def reference_images(reference: str) -> Tensor:
    """uint8 images of `reference`: an .npz, a .pt or a folder of images, or `<data>-<split>`
    (cifar10-train, digits-test, ...): a split of a data set of the `data` group."""
    from score_sde.samples import read_images

    path = Path(reference).expanduser()
    if not path.exists() and "-" in reference:
        name, split = reference.rsplit("-", 1)
        if split in ("train", "test"):
            data = _builtin_data(name)
            return as_uint8(data.train if split == "train" else data.test)
    return read_images(path)


def fid_command(cfg: DictConfig, device: torch.device) -> FIDReport:
    """`score-sde fid`: read both sets, compute, print."""
    from score_sde.samples import read_images

    samples, reference = read_images(cfg.samples), reference_images(cfg.reference)
    if cfg.n:
        samples, reference = samples[:cfg.n], reference[:cfg.n]
    judge_data = _builtin_data(cfg.judge_data) if cfg.features == "judge" else None
    extractor = feature_extractor(cfg.features, inception_weights=cfg.inception_weights,
                                  judge_data=judge_data)
    rep = distances(samples, reference, extractor, kid=cfg.kid, kid_subset_size=cfg.kid_subset_size,
                    kid_subsets=cfg.kid_subsets, batch_size=cfg.batch_size, seed=cfg.seed,
                    device=device, features=cfg.features)
    for line in report_lines(rep, cfg.samples, cfg.reference):
        log.info(line)
    return rep


def report_lines(rep: FIDReport, samples: str, reference: str) -> list[str]:
    lines = [f"{rep.n_samples} images of {samples} against {rep.n_reference} of {reference}, "
             f"{rep.features} features:", f"FID: {rep.fid:.4f}"]
    if rep.kid is not None:
        lines.append(f"KID: {rep.kid:.6f} +- {rep.kid_std:.6f} (std over subsets)")
    return lines


def training_fid(samples: Tensor, data: Dataset, settings: Any, *, seed: int,
                 device: torch.device | str) -> dict[str, Any]:
    """`eval.fid` of training: the eval samples (n, C, H, W) in [-1, 1] against the training
    split, in the features of settings.fid; metrics fid, fid_reference (its images),
    fid_features, kid and kid_std."""
    judge_data = data if settings.fid == "judge" else None
    extractor = feature_extractor(settings.fid, inception_weights=settings.inception_weights,
                                  judge_data=judge_data)
    rep = distances(as_uint8(samples), as_uint8(data.train), extractor, seed=seed, device=device,
                    features=settings.fid)
    out = {"fid": rep.fid, "fid_reference": rep.n_reference, "fid_features": settings.fid}
    if rep.kid is not None and math.isfinite(rep.kid):
        out.update(kid=rep.kid, kid_std=rep.kid_std)
    return out
