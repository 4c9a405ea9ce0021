"""diffusers' UNet2DModel as a score network trained here: the Score SDE paper's DDPM++ and NCSN++.

The architectures are diffusers' own blocks, configured like score_sde's continuous CIFAR-10 models
(channels 128, multipliers (1, 2, 2, 2), 4 residual blocks a level (8 for "deep"), attention at
16x16, dropout 0.1, single-head attention, GroupNorm eps 1e-6):

    "ddpmpp"  BigGAN residual blocks with resnet down- and up-sampling (ResnetDownsampleBlock2D,
              AttnDownBlock2D / ResnetUpsampleBlock2D, AttnUpBlock2D with resnet resampling),
              sinusoidal time features.
    "ncsnpp"  diffusers' NCSN++ blocks (SkipDownBlock2D, AttnSkipDownBlock2D / SkipUpBlock2D,
              AttnSkipUpBlock2D): FIR resnet down- and up-sampling, skip rescaling by 1/sqrt(2),
              the input pyramid and the output skip path (score_sde's progressive_input="input_skip",
              progressive="output_skip"; its CIFAR-10 NCSN++ uses "residual" / "none", which
              diffusers does not express), Gaussian Fourier time features. RGB only: diffusers'
              skip convolutions are built for 3 channels.

What diffusers does not expose: score_sde's 1/sqrt(2) skip rescaling of DDPM++'s residual blocks
(diffusers rescales only the middle block) and its "residual" progressive input of NCSN++.

Time input (`models.parameterization`: the net takes the SDE's t as is): the UNet is called with
timestep = time_scale * t (sinusoidal features), or with timestep = exp(time_scale * t) for Fourier
features, whose UNet takes log(timestep) and divides its output by timestep (NCSN++'s
scale-by-sigma): the division is undone here, so the output is the raw network output for any
prediction. time_scale = log(sigma_max / sigma_min) makes the Fourier features those of
log sigma(t) on VE, as in NCSN++ (up to a fixed phase the first linear layer absorbs).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from score_sde.models.embeddings import LabelEmbedding, batch_time, check_labels
from score_sde.models.unet import UNet
from score_sde.sde_lib import append_dims

ARCHS = ("ddpmpp", "ncsnpp")
_BLOCKS = {  # arch -> (down, attention down, up, attention up, time embedding)
    "ddpmpp": ("ResnetDownsampleBlock2D", "AttnDownBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D",
               "positional"),
    "ncsnpp": ("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "fourier"),
}


def import_diffusers():
    """diffusers, imported on first use (the library layers import without it).

    Raises:
        ImportError: diffusers is not installed, with the command that installs it.
    """
    try:
        import diffusers
    except ImportError as err:
        raise ImportError("diffusers is required for diffusers models: pip install 'diffusers>=0.27'"
                          ) from err
    return diffusers


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel built as DDPM++ or NCSN++, called as net(x, t, y=None).

    Args:
        in_channels: the image channels C (input and output; 3 for "ncsnpp").
        image_size: H = W of the inputs, divisible by 2^(len(channel_mult) - 1).
        arch: "ddpmpp" or "ncsnpp" (see the module docstring).
        channels: the base channel count (the paper: 128; a multiple of 32 for "ncsnpp").
        channel_mult: the channel multiplier of each level (the paper: (1, 2, 2, 2)).
        num_res_blocks: residual blocks per level on the down path, one more on the up path (the
            paper: 4, or 8 for the deep models).
        attn_resolutions: spatial sizes at which attention follows each residual block (the paper:
            (16,)); the middle block always has attention.
        dropout: dropout probability inside the residual blocks (the paper: 0.1).
        num_classes: if given, condition on labels y in [0, num_classes); y = num_classes or
            y=None is the null label (as `models.UNet`).
        time_scale: t is multiplied by it before the time features; default 1000 (sinusoidal, as
            DDPM's timesteps) or 1 (Fourier, frequencies N(0, 16^2) per unit of t).
        norm_groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, *, arch: str = "ddpmpp",
                 channels: int = 128, channel_mult: tuple[int, ...] = (1, 2, 2, 2),
                 num_res_blocks: int = 4, attn_resolutions: tuple[int, ...] = (16,),
                 dropout: float = 0.1, num_classes: int | None = None, time_scale: float | None = None,
                 norm_groups: int = 32):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if arch == "ncsnpp" and in_channels != 3:
            raise ValueError(f"in_channels must be 3 for arch='ncsnpp' (diffusers' skip blocks are "
                             f"RGB-only), got {in_channels!r}; use arch='ddpmpp'")
        if arch == "ncsnpp" and (not isinstance(channels, int) or channels % 32):
            raise ValueError(f"channels must be a multiple of 32 for arch='ncsnpp' (diffusers' skip "
                             f"blocks normalise with 32 groups), got {channels!r}")
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("channels", channels),
                            ("num_res_blocks", num_res_blocks), ("norm_groups", norm_groups)):
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        channel_mult, attn_resolutions = tuple(channel_mult), tuple(attn_resolutions)
        if not channel_mult or not all(isinstance(m, int) and m >= 1 for m in channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of ints >= 1, got {channel_mult!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        resolutions = UNet._resolutions(image_size, attn_resolutions, len(channel_mult))
        down, attn_down, up, attn_up, time_embedding = _BLOCKS[arch]
        self.fourier = time_embedding == "fourier"
        self.time_scale = float(time_scale if time_scale is not None else 1.0 if self.fourier else 1000.0)
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a finite number > 0, got {time_scale!r}")
        self.in_channels, self.image_size = in_channels, image_size
        emb_dim = 4 * channels
        attn = [r in attn_resolutions for r in resolutions]
        self.unet = import_diffusers().UNet2DModel(
            sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
            time_embedding_type=time_embedding, block_out_channels=tuple(channels * m for m in channel_mult),
            down_block_types=tuple(attn_down if a else down for a in attn),
            up_block_types=tuple(attn_up if a else up for a in reversed(attn)),
            layers_per_block=num_res_blocks, dropout=dropout, attention_head_dim=None,
            norm_num_groups=norm_groups, norm_eps=1e-6, downsample_type="resnet", upsample_type="resnet",
            mid_block_scale_factor=math.sqrt(2) if arch == "ncsnpp" else 1.0,
            class_embed_type=None if num_classes is None else "identity")
        self.label_embed = None if num_classes is None else LabelEmbedding(num_classes, emb_dim)

    @property
    def num_classes(self) -> int | None:
        return None if self.label_embed is None else self.label_embed.num_classes

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output.

        Args:
            x: (B, in_channels, image_size, image_size) noisy images x_t.
            t: (B,) times in [0, T], as is (or a float for the whole batch).
            y: (B,) integer labels in [0, num_classes] (num_classes = null), or None.

        Returns:
            (B, in_channels, image_size, image_size).
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, self.image_size, self.image_size):
            raise ValueError(f"x must have shape (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}) (in_channels, image_size), got {tuple(x.shape)}")
        check_labels(y, self.label_embed)
        scaled = self.time_scale * batch_time(t, x)
        labels = None if self.label_embed is None else self.label_embed(y, x.shape[0], x.device)
        if not self.fourier:
            return self.unet(x, scaled, class_labels=labels).sample
        timestep = scaled.exp()
        return self.unet(x, timestep, class_labels=labels).sample * append_dims(timestep, x.ndim)
