"""The baseline a user tries first: sklearn's GaussianMixture on the same dequantized images.

Bits/dim use the convention of `solvers.bits_per_dim`: 8-bit levels k in [-1, 1] are dequantized
to y = (k + u) / 128 - 1, u ~ U[0, 1)^D, and bpd = (E[-log p(y)] / D + log 128) / log 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from score_sde.solvers.likelihood import dequantize


@dataclass
class GMMBaseline:
    """Test bits/dim of a full-covariance Gaussian mixture.

    Attributes:
        bpd: mean test bits/dim.
        stderr: its standard error over the test images.
        n_components: the number of components, chosen on a validation split of the train data.
    """

    bpd: float
    stderr: float
    n_components: int


def gmm_bits_per_dim(train: Tensor, test: Tensor, *, components: tuple[int, ...] = (1, 5, 10, 20),
                     seed: int = 0) -> GMMBaseline:
    """Fit GaussianMixture(K) on dequantized `train` (K picked on a 20% validation split), refit
    on all of it, and report bits/dim on dequantized `test`. train, test: (N, C, H, W) in [-1, 1].
    """
    from sklearn.mixture import GaussianMixture

    g = torch.Generator().manual_seed(seed)
    xtr, xte = (dequantize(x.double(), generator=g)[0].flatten(1).numpy() for x in (train, test))
    d = xtr.shape[1]
    n_val = max(1, len(xtr) // 5)
    fit, val = xtr[n_val:], xtr[:n_val]
    best = max(components, key=lambda k: GaussianMixture(k, random_state=seed, reg_covar=1e-4)
               .fit(fit).score(val))
    gmm = GaussianMixture(best, random_state=seed, reg_covar=1e-4).fit(xtr)
    bpd = (-gmm.score_samples(xte) / d + math.log(128.0)) / math.log(2.0)
    return GMMBaseline(float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), best)
