"""A U-Net score network for images (DDPM / ADM style), x of shape (B, C, H, W).

Levels l = 0..L-1 (L = len(channel_mult)) work at resolution H / 2^l with channels * channel_mult[l]
channels. Down path: num_res_blocks residual blocks per level (each followed by self-attention if
the level's resolution is in attn_resolutions), then a stride-2 conv except at the last level.
Middle: res, attention, res. Up path: num_res_blocks + 1 blocks per level on the concatenated skip
connections, then a nearest-neighbour upsample and a conv. Out: GroupNorm, SiLU, conv (zero-init).
Every residual block receives the time embedding (plus the label embedding if class-conditional)
as a per-channel scale and shift after its second group norm. An image condition (SR3: the
degraded image brought to the target resolution) enters as extra input channels, concatenated to
x before the first conv; the output keeps x's channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from score_sde.models.embeddings import LabelEmbedding, batch_time, check_labels, time_features


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm over `channels` with gcd(groups, channels) groups (so any width works)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """x + conv(drop(act(norm(h) (1 + scale) + shift))), h = conv(act(norm(x))), with
    (scale, shift) = E act(emb) and a 1x1 skip conv if the channels change.

    The embedding enters as a per-channel scale and shift after the group norm (ADM's scale-shift
    norm): a shift added before a group norm would be erased by it when a group holds one channel.

    Args:
        c_in: input channels.
        c_out: output channels.
        emb_dim: the size of the time (and label) embedding.
        dropout: dropout probability before the second conv.
        groups: the number of GroupNorm groups (reduced to divide the channels).
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x (B, c_in, H, W), emb (B, emb_dim) -> (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb)).view(*emb.shape[:1], -1, 1, 1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """x + proj(multi-head self-attention over the H * W positions of norm(x)).

    Args:
        channels: input and output channels (divisible by num_heads).
        num_heads: the number of attention heads.
        groups: the number of GroupNorm groups (reduced to divide the channels).
    """

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attn_heads must divide the channels {channels}, got {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C / heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class ResAttnBlock(nn.Module):
    """A residual block followed by self-attention (or by nothing): one step of a U-Net level."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None):
        super().__init__()
        self.res, self.attn = res, attn if attn is not None else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """h (B, c_in, H, W), emb (B, emb_dim) -> (B, c_out, H, W)."""
        return self.attn(self.res(h, emb))


class Downsample(nn.Module):
    """A stride-2 3x3 conv: (B, C, H, W) -> (B, C, H / 2, W / 2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """U-Net s(x, t, y) for images of shape (B, in_channels, H, W), conditioned on time (and label).

    Args:
        in_channels: the image channels C (input and output).
        channels: the base channel count.
        channel_mult: the channel multiplier of each level; H and W must be divisible by
            2^(len(channel_mult) - 1).
        num_res_blocks: residual blocks per level on the down path (one more on the up path).
        attn_resolutions: spatial sizes (e.g. (16,) for 32x32 inputs, (4,) for 8x8) at which
            self-attention follows each residual block; needs image_size to place them.
        dropout: dropout probability inside the residual blocks.
        num_classes: if given, condition on labels y in [0, num_classes); y = num_classes or
            y=None is the unconditional (null) label.
        image_size: the input's H = W; required when attn_resolutions is non-empty, and then
            checked on every call. Without attention any H, W divisible as above works.
        time_embedding: "sinusoidal" (DDPM's features of 1000 t) or "fourier".
        attn_heads: the number of attention heads.
        norm_groups: GroupNorm groups (reduced to the gcd with each layer's channels).
        cond_channels: the channels of an image condition `cond` (B, cond_channels, H, W)
            concatenated to x at the input (0: none); cond=None is the all-zero condition.
    """

    def __init__(self, in_channels: int = 1, *, channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (), dropout: float = 0.0,
                 num_classes: int | None = None, image_size: int | None = None,
                 time_embedding: str = "sinusoidal", attn_heads: int = 1, norm_groups: int = 32,
                 cond_channels: int = 0):
        super().__init__()
        channel_mult, attn_resolutions = tuple(channel_mult), tuple(attn_resolutions)
        for name, value in (("in_channels", in_channels), ("channels", channels),
                            ("num_res_blocks", num_res_blocks), ("attn_heads", attn_heads),
                            ("norm_groups", norm_groups)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(cond_channels, int) and cond_channels >= 0):
            raise ValueError(f"cond_channels must be an int >= 0, got {cond_channels!r}")
        if not channel_mult or not all(isinstance(m, int) and m >= 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of ints >= 1, got "
                             f"{channel_mult!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.in_channels, self.image_size, self.cond_channels = in_channels, image_size, cond_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        resolutions = self._resolutions(image_size, attn_resolutions, len(channel_mult))

        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(time_features(time_embedding, channels),
                                        nn.Linear(channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.label_embed = None if num_classes is None else LabelEmbedding(num_classes, emb_dim)

        def block(c_in: int, c_out: int, level: int) -> ResAttnBlock:
            use_attn = resolutions is not None and resolutions[level] in attn_resolutions
            return ResAttnBlock(ResBlock(c_in, c_out, emb_dim, dropout, norm_groups),
                                AttentionBlock(c_out, attn_heads, norm_groups) if use_attn else None)

        self.conv_in = nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [channels], channels  # the channels of every skip connection, in order
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(c, channels * mult, level))
                c = channels * mult
                skips.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb_dim, dropout, norm_groups)
        self.mid_attn = AttentionBlock(c, attn_heads, norm_groups)
        self.mid2 = ResBlock(c, c, emb_dim, dropout, norm_groups)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(c + skips.pop(), channels * mult, level))
                c = channels * mult
            if level > 0:
                self.up.append(Upsample(c))
        assert not skips
        self.out = nn.Sequential(group_norm(c, norm_groups), nn.SiLU(),
                                 nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _resolutions(image_size: int | None, attn_resolutions: tuple[int, ...],
                     levels: int) -> list[int] | None:
        """The spatial size of each level, after checking attn_resolutions against them."""
        if image_size is None:
            if attn_resolutions:
                raise ValueError(f"attn_resolutions={attn_resolutions} are spatial sizes: pass "
                                 "image_size (the input's H = W) to place them")
            return None
        factor = 2 ** (levels - 1)
        if not (isinstance(image_size, int) and image_size >= 1 and image_size % factor == 0):
            raise ValueError(f"image_size must be a positive int divisible by 2^(len(channel_mult)"
                             f" - 1) = {factor}, got {image_size!r}")
        resolutions = [image_size // 2**level for level in range(levels)]
        unknown = [r for r in attn_resolutions if r not in resolutions]
        if unknown:
            raise ValueError(f"attn_resolutions must be among the U-Net's resolutions "
                             f"{tuple(resolutions)} for image_size={image_size}, got {unknown}")
        return resolutions

    @property
    def num_classes(self) -> int | None:
        return None if self.label_embed is None else self.label_embed.num_classes

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None, *,
                cond: Tensor | None = None) -> Tensor:
        """The raw network output.

        Args:
            x: (B, in_channels, H, W) noisy images x_t.
            t: (B,) times in [0, T], as is (or a float for the whole batch).
            y: (B,) integer labels in [0, num_classes] (num_classes = null), or None.
            cond: (B, cond_channels, H, W) an image condition, or None (all zeros); only for a
                net with cond_channels > 0.

        Returns:
            (B, in_channels, H, W).
        """
        self._check_input(x)
        check_labels(y, self.label_embed)
        emb = self.time_embed(batch_time(t, x))
        if self.label_embed is not None:
            emb = emb + self.label_embed(y, x.shape[0], x.device)
        hs = [self.conv_in(self._with_condition(x, cond))]
        for layer in self.down:
            hs.append(layer(hs[-1], emb) if isinstance(layer, ResAttnBlock) else layer(hs[-1]))
        h = self.mid2(self.mid_attn(self.mid1(hs[-1], emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResAttnBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)

    def _with_condition(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """x with the condition's channels appended: (B, in_channels + cond_channels, H, W)."""
        if not self.cond_channels:
            if cond is not None:
                raise ValueError("cond is given but the U-Net takes no condition (cond_channels=0); "
                                 "build it with cond_channels=<the condition's channels>")
            return x
        if cond is None:
            return torch.cat([x, x.new_zeros(x.shape[0], self.cond_channels, *x.shape[2:])], 1)
        want = (x.shape[0], self.cond_channels, *x.shape[2:])
        if tuple(cond.shape) != want:
            raise ValueError(f"cond must have shape (B, cond_channels, H, W) = {want} for x of shape "
                             f"{tuple(x.shape)}, got {tuple(cond.shape)}")
        return torch.cat([x, cond.to(x)], 1)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, in_channels, H, W) = (B, {self.in_channels}, "
                             f"H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"x must be {self.image_size}x{self.image_size} (image_size), got "
                             f"{h}x{w}")
        if h % self.factor or w % self.factor:
            raise ValueError(f"x's H and W must be divisible by 2^(len(channel_mult) - 1) = "
                             f"{self.factor}, got {h}x{w}")
