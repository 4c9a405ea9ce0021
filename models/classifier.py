"""Noise-conditional classifiers p_t(y | x_t) for classifier guidance.

The classifier sees the same noisy data as the score network: x_t = alpha(t) x_0 + sigma(t) z with
t ~ U(t_eps, T), and learns p_t(y | x_t) by cross-entropy (`sde_lib.classifier_loss`).
`NoisyClassifier` is a residual MLP for vector data, `NoisyConvClassifier` a small conv net for
images. Its logits serve directly as the `log_prob_y_fn(x, t)` of
`solvers.guidance.classifier_guidance`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from score_sde.models.embeddings import batch_time, time_features
from score_sde.models.mlp import ResidualMLPBlock
from score_sde.models.unet import ResBlock, group_norm


class NoisyClassifier(nn.Module):
    """Residual MLP c(x, t) -> (B, num_classes) logits of p_t(y | x_t), for data of shape (B, dim).

    x -> Linear -> depth x ResidualMLPBlock(time embedding) -> LayerNorm, SiLU, Linear.

    Args:
        dim: the data dimension d.
        num_classes: the number of classes K (>= 2).
        hidden: the width of the residual stream.
        depth: the number of residual blocks (>= 1).
        embed_dim: the size of the time features (even).
        time_embedding: "fourier" or "sinusoidal".
        fourier_scale: the std of the Fourier frequencies (per unit of t).
    """

    def __init__(self, dim: int, num_classes: int, *, hidden: int = 128, depth: int = 2,
                 embed_dim: int = 64, time_embedding: str = "fourier",
                 fourier_scale: float = 16.0):
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("num_classes", num_classes, 2),
                                 ("hidden", hidden, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.dim, self.num_classes = dim, num_classes
        self.time_embed = nn.Sequential(
            time_features(time_embedding, embed_dim, fourier_scale=fourier_scale),
            nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Class logits of p_t(y | x_t).

        Args:
            x: (B, dim) noisy data x_t.
            t: (B,) times in [0, T] (or a float for the whole batch).

        Returns:
            (B, num_classes) logits.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, dim) = (B, {self.dim}), got {tuple(x.shape)}")
        emb = self.time_embed(batch_time(t, x))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


class NoisyConvClassifier(nn.Module):
    """A small convolutional c(x, t) -> (B, num_classes) logits of p_t(y | x_t) for images.

    x -> conv3x3 -> depth x (ResBlock(time embedding), 2x2 average pool) -> GroupNorm, SiLU,
    spatial mean -> Linear. The ResBlocks are the U-Net's (scale-shift time conditioning).

    Args:
        channels: image channels C, for x of shape (B, C, H, W) with H, W divisible by 2^depth.
        num_classes: the number of classes K (>= 2).
        width: the channels of every block.
        depth: the number of ResBlock + pool levels (>= 1).
        embed_dim: the size of the time features (even).
        groups: the number of GroupNorm groups (reduced to divide width).
        time_embedding: "fourier" or "sinusoidal".
        fourier_scale: the std of the Fourier frequencies (per unit of t).
    """

    def __init__(self, channels: int, num_classes: int, *, width: int = 32, depth: int = 2,
                 embed_dim: int = 64, groups: int = 8, time_embedding: str = "fourier",
                 fourier_scale: float = 16.0):
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("num_classes", num_classes, 2),
                                 ("width", width, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.channels, self.num_classes, self.depth = channels, num_classes, depth
        self.time_embed = nn.Sequential(
            time_features(time_embedding, embed_dim, fourier_scale=fourier_scale),
            nn.Linear(embed_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(width, width, width, 0.0, groups)
                                    for _ in range(depth))
        self.norm = group_norm(width, groups)
        self.out = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Class logits of p_t(y | x_t).

        Args:
            x: (B, C, H, W) noisy images x_t, H and W divisible by 2^depth.
            t: (B,) times in [0, T] (or a float for the whole batch).

        Returns:
            (B, num_classes) logits.
        """
        size = 2**self.depth
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] % size or x.shape[3] % size:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W) with H, W divisible "
                             f"by 2^depth = {size}, got {tuple(x.shape)}")
        emb = self.time_embed(batch_time(t, x))
        h = self.inp(x)
        for block in self.blocks:
            h = F.avg_pool2d(block(h, emb), 2)
        return self.out(F.silu(self.norm(h)).mean(dim=(2, 3)))
