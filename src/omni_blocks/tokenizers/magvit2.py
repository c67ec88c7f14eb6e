"""MAGVIT-v2 image tokenizer: conv encoder, lookup-free quantization, conv decoder.

This is the image tokenizer of Omni-Diffusion (and of Show-o and MMaDA, whose checkpoint
Omni-Diffusion reuses): a 256x256 RGB image becomes a 16x16 grid of codes in
`[0, 8192)`, 256 tokens; a 512x512 image becomes 32x32 = 1,024 tokens.

The module tree and parameter names follow the open checkpoint (Hugging Face repository
`showlab/magvitv2`, file `pytorch_model.safetensors`) as defined by upstream
`VQGANEncoder`, `VQGANDecoder`, `LFQuantizer` and `MAGVITv2` in
`omni_diffusion/models/magvit/modeling_magvitv2.py` and the taming-transformers blocks of
`common_modules.py` (VITA-MLLM/Omni-Diffusion; identical to showlab/Show-o
`models/modeling_magvitv2.py`), so that those weights load with `strict=True`:

```text
encoder.conv_in, encoder.down.{level}.block.{i}.{norm1,conv1,norm2,conv2,nin_shortcut},
encoder.down.{level}.downsample.conv, encoder.mid.{block_1,attn_1,block_2},
encoder.norm_out, encoder.conv_out, encoder.quant_conv,
decoder.post_quant_conv, decoder.conv_in, decoder.mid.{block_1,attn_1,block_2},
decoder.up.{level}.block.{i}.*, decoder.up.{level}.upsample.conv, decoder.norm_out,
decoder.conv_out, quantize.embedding, quantize.power_vals
```

Upstream's config file holds no architecture (only `_class_name` and
`_diffusers_version`): the architecture is the constructors' defaults, which are the
defaults of [`MagvitV2`][omni_blocks.tokenizers.magvit2.MagvitV2] here. Note the
encoder and decoder differ: channel multipliers `(1, 2, 2, 4, 4)` vs `(1, 1, 2, 2, 4)` and
residual blocks per level `(4, 3, 4, 3, 4)` vs `(4, 4, 3, 4, 3)`.

Differences from upstream (none change the weights or the codes):

- `encode` / `decode` take and return images in `[0, 1]` and do upstream's normalisation
  inside: `x * 2 - 1` in (upstream `Normalize(mean=0.5, std=0.5)`), `clamp((x + 1) / 2, 0, 1)`
  out (upstream's post-processing in Show-o / MMaDA / Omni-Diffusion). `get_code` and
  `decode_code` keep upstream's `[-1, 1]` pixel convention.
- The quantizer only quantizes (with a straight-through gradient); upstream's entropy and
  commitment losses for training the tokenizer are not reproduced.
- `double_z` (unused upstream, and inconsistent with `quant_conv` there) is not offered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int, Shaped
from torch import Tensor, nn

from omni_blocks.checkpointing import resolve_checkpoint
from omni_blocks.tokenizers._images import check_codes, check_images
from omni_blocks.vocab import Modality

__all__ = [
    "LookupFreeQuantizer",
    "MagvitV2",
    "MagvitV2Decoder",
    "MagvitV2Encoder",
    "PretrainedMagvitV2",
]

CONFIG_NAME = "config.json"
"""Name of the config file in a checkpoint folder (upstream: diffusers' `config.json`)."""

SAFETENSORS_NAMES = (
    "pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
)
"""Weight files tried in order; upstream `save_pretrained` writes the first one."""

PICKLE_NAMES = ("pytorch_model.bin", "diffusion_pytorch_model.bin")
"""Pickled weight files, read only with `allow_pickle=True` (and `weights_only=True`)."""

_DERIVED_BUFFERS = ("quantize.embedding", "quantize.power_vals")
_GROUPS = 32  # upstream Normalize(): GroupNorm(num_groups=32, eps=1e-6, affine=True)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=_GROUPS, num_channels=channels, eps=1e-6, affine=True)


class _ResnetBlock(nn.Module):
    """taming-transformers ResnetBlock without time embedding (upstream `temb_channels=0`)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: Float[Tensor, "b ci h w"]) -> Float[Tensor, "b co h w"]:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class _AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (taming AttnBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        h = self.norm(x)
        q, k, v = (rearrange(f(h), "b c h w -> b 1 (h w) c") for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=x.shape[2], w=x.shape[3])
        return x + self.proj_out(out)


class _Downsample(nn.Module):
    """Stride-2 3x3 conv after zero-padding right and bottom by one pixel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h2 w2"]:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class _Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h2 w2"]:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block` (residual blocks), `attn` (maybe empty), and a resampler
    stored as `downsample` (encoder) or `upsample` (decoder) when the level has one."""

    def __init__(self, blocks: list[_ResnetBlock], attns: list[_AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def forward(self, h: Float[Tensor, "b ci h w"]) -> Float[Tensor, "b co h2 w2"]:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        for name in ("downsample", "upsample"):
            if name in self._modules:
                h = self._modules[name](h)  # type: ignore[misc]
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = _ResnetBlock(channels, channels, dropout)
        self.attn_1 = _AttnBlock(channels)
        self.block_2 = _ResnetBlock(channels, channels, dropout)

    def forward(self, h: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        return self.block_2(self.attn_1(self.block_1(h)))


def _check_levels(name: str, ch: int, ch_mult: Sequence[int], blocks: Sequence[int]) -> None:
    if len(ch_mult) < 1 or len(ch_mult) != len(blocks):
        raise ValueError(
            f"{name}: ch_mult {tuple(ch_mult)} and num_res_blocks {tuple(blocks)} must be "
            "non-empty and of the same length (one entry per resolution level)"
        )
    if any(n < 1 for n in blocks) or any(m < 1 for m in ch_mult):
        raise ValueError(f"{name}: ch_mult and num_res_blocks entries must be >= 1")
    for width in [ch, *(ch * m for m in ch_mult)]:
        if width % _GROUPS:
            raise ValueError(
                f"{name}: every width ch * ch_mult must be a multiple of {_GROUPS} (GroupNorm "
                f"with {_GROUPS} groups, as upstream); got ch={ch}, ch_mult={tuple(ch_mult)}"
            )


class MagvitV2Encoder(nn.Module):
    """MAGVIT-v2 encoder (upstream `VQGANEncoder`): image in `[-1, 1]` -> latents.

    `len(ch_mult) - 1` stride-2 downsamplings (5 levels: 16x), a middle block with
    attention, then `conv_out` and the 1x1 `quant_conv` to `z_channels` channels.

    Args:
        ch: base width.
        ch_mult: width multiplier of each level.
        num_res_blocks: residual blocks of each level.
        attn_resolutions: feature-map sizes (for an input of `resolution` pixels) at which
            levels also get attention blocks; upstream `(5,)` never matches, so the open
            checkpoint has attention only in the middle block.
        dropout: dropout inside residual blocks.
        in_ch: image channels.
        resolution: nominal input size used only to place attention blocks.
        z_channels: latent channels = bits per code of the lookup-free quantizer.
    """

    def __init__(
        self,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 4, 4),
        num_res_blocks: Sequence[int] = (4, 3, 4, 3, 4),
        attn_resolutions: Sequence[int] = (5,),
        dropout: float = 0.0,
        in_ch: int = 3,
        resolution: int = 256,
        z_channels: int = 13,
    ) -> None:
        super().__init__()
        _check_levels("MagvitV2Encoder", ch, ch_mult, num_res_blocks)
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        widths = [ch] + [ch * m for m in ch_mult]
        res = resolution
        for level, n_blocks in enumerate(num_res_blocks):
            blocks, attns = [], []
            width_in, width_out = widths[level], widths[level + 1]
            for _ in range(n_blocks):
                blocks.append(_ResnetBlock(width_in, width_out, dropout))
                width_in = width_out
                if res in attn_resolutions:
                    attns.append(_AttnBlock(width_out))
            down = _Level(blocks, attns)
            if level != len(ch_mult) - 1:
                down.downsample = _Downsample(width_out)
                res //= 2
            self.down.append(down)
        self.mid = _Mid(widths[-1], dropout)
        self.norm_out = _norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b z h2 w2"]:
        """Encode pixels in `[-1, 1]` to continuous latents (before quantization)."""
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class MagvitV2Decoder(nn.Module):
    """MAGVIT-v2 decoder (upstream `VQGANDecoder`): quantized latents -> image in ~`[-1, 1]`.

    The 1x1 `post_quant_conv`, `conv_in`, a middle block with attention, then
    `len(ch_mult) - 1` nearest-neighbour 2x upsamplings. `up[0]` is the full-resolution
    level (upstream builds the list in reverse and prepends).

    Args:
        ch: base width.
        ch_mult: width multiplier of each level (from full resolution down).
        num_res_blocks: residual blocks of each level.
        attn_resolutions: feature-map sizes at which levels also get attention blocks.
        dropout: dropout inside residual blocks.
        out_ch: image channels.
        resolution: nominal output size used only to place attention blocks.
        z_channels: latent channels (bits per code).
    """

    def __init__(
        self,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: Sequence[int] = (4, 4, 3, 4, 3),
        attn_resolutions: Sequence[int] = (5,),
        dropout: float = 0.0,
        out_ch: int = 3,
        resolution: int = 256,
        z_channels: int = 13,
    ) -> None:
        super().__init__()
        _check_levels("MagvitV2Decoder", ch, ch_mult, num_res_blocks)
        n_levels = len(ch_mult)
        width = ch * ch_mult[-1]
        res = resolution // 2 ** (n_levels - 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = _Mid(width, dropout)
        levels: list[_Level] = []
        for level in reversed(range(n_levels)):
            blocks, attns = [], []
            width_out = ch * ch_mult[level]
            for _ in range(num_res_blocks[level]):
                blocks.append(_ResnetBlock(width, width_out, dropout))
                width = width_out
                if res in attn_resolutions:
                    attns.append(_AttnBlock(width))
            up = _Level(blocks, attns)
            if level != 0:
                up.upsample = _Upsample(width)
                res *= 2
            levels.insert(0, up)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(width)
        self.conv_out = nn.Conv2d(width, out_ch, 3, padding=1)

    def forward(self, z: Float[Tensor, "b z h w"]) -> Float[Tensor, "b c h2 w2"]:
        """Decode quantized latents (entries +-1) to pixels, roughly in `[-1, 1]`."""
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LookupFreeQuantizer(nn.Module):
    """Lookup-free quantization (LFQ, Yu et al. 2023, MAGVIT-v2): one bit per channel.

    Each latent vector `z` in R^bits is quantized channel-wise to `sign(z)` in {-1, +1}
    (`z > 0` -> +1, else -1), so the implicit codebook is {-1, +1}^bits with 2^bits entries
    and no lookup. A code's index reads the bits most significant first:

    $$ k = \\sum_{i=0}^{\\text{bits}-1} 1[z_i > 0] \\, 2^{\\text{bits}-1-i}, $$

    so code 1 is (-1, ..., -1, +1). The buffers `embedding` (`(2^bits, bits)`, row `k` the
    +-1 vector of code `k`) and `power_vals` (`2^(bits-1), ..., 2, 1`) mirror upstream
    `LFQuantizer` and are part of the checkpoint.

    Args:
        bits: bits per code (upstream `codebook_dim`; MAGVIT-v2: 13, 8,192 codes).
    """

    embedding: Tensor
    power_vals: Tensor

    def __init__(self, bits: int = 13) -> None:
        super().__init__()
        if not 1 <= bits <= 30:
            raise ValueError(f"LookupFreeQuantizer bits must be in [1, 30], got {bits}")
        self.bits = bits
        self.register_buffer("embedding", self.code_vectors(torch.arange(2**bits), bits))
        self.register_buffer("power_vals", 2 ** torch.arange(bits - 1, -1, -1))

    @property
    def codebook_size(self) -> int:
        """Number of codes, `2 ** bits`."""
        return int(2**self.bits)

    @staticmethod
    def code_vectors(codes: Int[Tensor, "*shape"], bits: int) -> Float[Tensor, "*shape bits"]:
        """The +-1 vector of each code (most significant bit first)."""
        shifts = torch.arange(bits - 1, -1, -1, device=codes.device)
        return (((codes.long()[..., None] >> shifts) & 1) * 2 - 1).float()

    def codes(self, z: Float[Tensor, "b bits h w"]) -> Int[Tensor, "b h w"]:
        """Code index of each latent vector (upstream `get_indices`, without the channel dim)."""
        if z.shape[1] != self.bits:
            raise ValueError(f"expected {self.bits} latent channels, got {z.shape[1]}")
        weights = self.power_vals.to(z.device).long().view(1, -1, 1, 1)
        return ((z > 0).long() * weights).sum(dim=1)

    def latents(self, codes: Int[Tensor, "b h w"]) -> Float[Tensor, "b bits h w"]:
        """The quantized latents of codes (upstream `get_codebook_entry`)."""
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        vectors = self.code_vectors(codes, self.bits).to(self.embedding.dtype)
        return rearrange(vectors, "b h w bits -> b bits h w")

    def forward(
        self, z: Float[Tensor, "b bits h w"]
    ) -> tuple[Float[Tensor, "b bits h w"], Int[Tensor, "b h w"]]:
        """Quantize to +-1 with a straight-through gradient; also return the codes."""
        quantized = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return z + (quantized - z).detach(), self.codes(z)


class MagvitV2(nn.Module):
    """The MAGVIT-v2 image tokenizer of Omni-Diffusion, Show-o and MMaDA.

    Implements [`ImageTokenizer`][omni_blocks.tokenizers.base.ImageTokenizer]: `encode`
    maps images in `[0, 1]` of shape `(batch, in_ch, image_size, image_size)` to codes
    `(batch, tokens_per_item)` in `[0, 2 ** z_channels)`, row-major over the code grid, as
    upstream `get_code`; `decode` inverts it up to the tokenizer's loss. The default
    arguments are the architecture of the open checkpoint (about 95 M parameters); load it
    with [`from_pretrained`][omni_blocks.tokenizers.magvit2.MagvitV2.from_pretrained].

    Args:
        ch: base width of encoder and decoder.
        encoder_ch_mult: encoder width multipliers per level (upstream encoder `ch_mult`).
        encoder_num_res_blocks: encoder residual blocks per level.
        decoder_ch_mult: decoder width multipliers per level (upstream decoder `ch_mult`).
        decoder_num_res_blocks: decoder residual blocks per level.
        attn_resolutions: feature-map sizes with attention blocks (upstream `(5,)`: none).
        dropout: dropout in residual blocks.
        in_ch: input image channels.
        out_ch: output image channels.
        resolution: upstream's nominal resolution, only used to place attention blocks.
        z_channels: latent channels = LFQ bits per code (13: 8,192 codes).
        image_size: the height and width `encode` accepts; the weights are convolutional, so
            the same checkpoint serves 256 (256 tokens) and 512 (1,024 tokens).

    Raises:
        ValueError: the two level lists differ in length, a width is not a multiple of 32,
            or `image_size` is not a multiple of the downsampling factor.
    """

    def __init__(
        self,
        ch: int = 128,
        encoder_ch_mult: Sequence[int] = (1, 2, 2, 4, 4),
        encoder_num_res_blocks: Sequence[int] = (4, 3, 4, 3, 4),
        decoder_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        decoder_num_res_blocks: Sequence[int] = (4, 4, 3, 4, 3),
        attn_resolutions: Sequence[int] = (5,),
        dropout: float = 0.0,
        in_ch: int = 3,
        out_ch: int = 3,
        resolution: int = 256,
        z_channels: int = 13,
        image_size: int = 256,
    ) -> None:
        super().__init__()
        if len(encoder_ch_mult) != len(decoder_ch_mult):
            raise ValueError(
                f"encoder and decoder need the same number of levels, got encoder_ch_mult "
                f"{tuple(encoder_ch_mult)} and decoder_ch_mult {tuple(decoder_ch_mult)}"
            )
        factor = 2 ** (len(encoder_ch_mult) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(
                f"image_size must be a positive multiple of the downsampling factor {factor}, "
                f"got {image_size}"
            )
        self.config: dict[str, Any] = {
            "ch": ch,
            "encoder_ch_mult": list(encoder_ch_mult),
            "encoder_num_res_blocks": list(encoder_num_res_blocks),
            "decoder_ch_mult": list(decoder_ch_mult),
            "decoder_num_res_blocks": list(decoder_num_res_blocks),
            "attn_resolutions": list(attn_resolutions),
            "dropout": dropout,
            "in_ch": in_ch,
            "out_ch": out_ch,
            "resolution": resolution,
            "z_channels": z_channels,
            "image_size": image_size,
        }
        self._image_size = image_size
        self._in_ch = in_ch
        self._factor = factor
        self.encoder = MagvitV2Encoder(
            ch,
            encoder_ch_mult,
            encoder_num_res_blocks,
            attn_resolutions,
            dropout,
            in_ch,
            resolution,
            z_channels,
        )
        self.decoder = MagvitV2Decoder(
            ch,
            decoder_ch_mult,
            decoder_num_res_blocks,
            attn_resolutions,
            dropout,
            out_ch,
            resolution,
            z_channels,
        )
        self.quantize = LookupFreeQuantizer(z_channels)

    # ------------------------------------------------------------------ protocol
    @property
    def modality(self) -> Modality:
        """Always `Modality.IMAGE`."""
        return Modality.IMAGE

    @property
    def codebook_size(self) -> int:
        """`2 ** z_channels` (8,192 for MAGVIT-v2)."""
        return self.quantize.codebook_size

    @property
    def image_size(self) -> int:
        """Height and width of the images `encode` accepts and `decode` returns."""
        return self._image_size

    @property
    def channels(self) -> int:
        """Image channels (3, RGB)."""
        return self._in_ch

    @property
    def downsample_factor(self) -> int:
        """Pixels per code along each side (16 for MAGVIT-v2)."""
        return self._factor

    @property
    def grid_size(self) -> int:
        """Codes along each side: `image_size // downsample_factor`."""
        return self._image_size // self._factor

    @property
    def tokens_per_item(self) -> int:
        """Codes per image, `grid_size ** 2` (256 for 256x256)."""
        return self.grid_size**2

    @torch.no_grad()
    def encode(
        self, batch: Shaped[Tensor, "batch channel height width"]
    ) -> Int[Tensor, "batch tokens"]:
        """Images in `[0, 1]` (float) or `[0, 255]` (uint8) -> codes, row-major.

        The images are moved to the model's device and dtype and normalised to `[-1, 1]`.

        Raises:
            ValueError: wrong shape, channel count, size or value range.
            TypeError: a dtype other than floating point or uint8.
        """
        images = check_images(
            batch, channels=self.channels, image_size=self.image_size, name="MagvitV2"
        )
        param = next(self.parameters())
        return self.get_code(images.to(param.device, param.dtype) * 2 - 1)

    @torch.no_grad()
    def decode(
        self, codes: Shaped[Tensor, "batch tokens"]
    ) -> Float[Tensor, "batch channel height width"]:
        """Codes `(batch, tokens_per_item)` -> float32 images in `[0, 1]`.

        Raises:
            TypeError: non-integer codes.
            ValueError: wrong number of codes, or a code outside `[0, codebook_size)`.
        """
        codes = check_codes(
            codes, codebook_size=self.codebook_size, tokens=self.tokens_per_item, name="MagvitV2"
        )
        pixels = self.decode_code(codes.to(self.quantize.embedding.device))
        return ((pixels.float() + 1) / 2).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ upstream API
    def get_code(
        self, pixel_values: Float[Tensor, "batch channel height width"]
    ) -> Int[Tensor, "batch tokens"]:
        """Upstream `get_code`: pixels in `[-1, 1]` -> codes `(batch, h * w)`, no checks."""
        codes = self.quantize.codes(self.encoder(pixel_values))
        return rearrange(codes, "b h w -> b (h w)")

    def decode_code(
        self, codes: Int[Tensor, "batch tokens"], shape: tuple[int, int] | None = None
    ) -> Float[Tensor, "batch channel height width"]:
        """Upstream `decode_code`: codes -> pixels roughly in `[-1, 1]` (not clamped).

        Args:
            codes: `(batch, h * w)` codes.
            shape: the code grid `(h, w)`; default: a square grid.
        """
        if shape is None:
            side = round(codes.shape[1] ** 0.5)
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes do not form a square grid; pass shape")
            shape = (side, side)
        grid = rearrange(codes, "b (h w) -> b h w", h=shape[0], w=shape[1])
        latents = self.quantize.latents(grid).to(next(self.decoder.parameters()).dtype)
        return self.decoder(latents)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `pytorch_model.safetensors` (upstream's layout) to a folder.

        Returns:
            The folder.
        """
        from safetensors.torch import save_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "MAGVITv2", **self.config}
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / SAFETENSORS_NAMES[0]), metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        *,
        revision: str | None = None,
        allow_pickle: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **config: Any,
    ) -> MagvitV2:
        """Load weights in the upstream layout from a folder, a file, or the Hugging Face hub.

        The architecture is, by increasing priority: the constructor defaults (the open
        checkpoint's architecture), the fields of `config.json` when it has any (upstream's
        has none; keys starting with `_` are ignored), and `config` keyword arguments (for
        example `image_size=512`). Weights load with `strict=True`.

        Args:
            source: a folder, a weights file, or a hub repository id such as
                `"showlab/magvitv2"` (downloaded through `huggingface_hub`).
            revision: hub revision (branch, tag or commit).
            allow_pickle: also read `pytorch_model.bin` (with `torch.load(weights_only=True)`)
                when no safetensors file exists. Off by default: pickles can run code.
            device: where to put the model.
            dtype: parameter dtype (default: the checkpoint's).
            **config: constructor arguments overriding the defaults and `config.json`.

        Raises:
            FileNotFoundError: no weights file found (the message lists what was tried).
            ValueError: only pickled weights found and `allow_pickle` is False; unknown
                config fields; weights that do not fit the architecture (missing,
                unexpected or mis-shaped tensors, or an LFQ bit order unlike upstream's).
        """
        settings, state = _read_checkpoint(source, revision, allow_pickle)
        settings.update(config)
        _check_fields(settings)
        model = cls(**settings)
        model.load_upstream_state_dict(state)
        model.eval()
        return model.to(device=device, dtype=dtype)

    def load_upstream_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a state dict in the upstream key layout, with errors that name the problem.

        Raises:
            ValueError: missing or unexpected keys, mismatched shapes, or quantizer buffers
                whose bit order differs from upstream's.
        """
        own = self.state_dict()
        state = dict(state)
        for name in _DERIVED_BUFFERS:  # deterministic: a checkpoint may leave them out
            state.setdefault(name, own[name])
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state))
            if tuple(state[k].shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or mismatched:
            raise ValueError(
                "checkpoint does not fit this MagvitV2 architecture (pass the right config): "
                f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected "
                f"key(s) {unexpected[:5]}, {len(mismatched)} shape mismatch(es) {mismatched[:5]}"
            )
        for name in _DERIVED_BUFFERS:
            if not torch.equal(state[name].to(own[name].dtype).cpu(), own[name].cpu()):
                raise ValueError(
                    f"checkpoint buffer {name} does not follow upstream's LFQ convention "
                    "(most significant bit first, +-1 entries)"
                )
        self.load_state_dict(state, strict=True)


class PretrainedMagvitV2(MagvitV2):
    """A [`MagvitV2`][omni_blocks.tokenizers.magvit2.MagvitV2] loaded from a checkpoint.

    The same model as `MagvitV2.from_pretrained`, as a class whose constructor takes plain
    values, so a LightningCLI config can name it (for example as the image tokenizer of
    [`ManifestDataModule`][omni_blocks.data.manifest.ManifestDataModule]):

    ```yaml
    image_tokenizer:
      class_path: omni_blocks.tokenizers.PretrainedMagvitV2
      init_args: {pretrained: showlab/magvitv2, image_size: 256}
    ```

    Args:
        pretrained: a folder, a weights file, or a hub repository id (`"showlab/magvitv2"`).
        revision: hub revision (branch, tag or commit).
        image_size: the resolution `encode` takes (256: 256 codes; 512: 1,024); `None`
            keeps the checkpoint's (or the default 256).
        allow_pickle: also read `pytorch_model.bin` when no safetensors file exists.
        device: where the model runs (`"cpu"`, `"cuda"`, ...).
        dtype: parameter dtype (`"float32"`, `"bfloat16"`); `None` keeps the checkpoint's.

    Raises:
        FileNotFoundError: no weights at `pretrained`.
        ValueError: weights that do not fit the architecture of the checkpoint's config.
    """

    def __init__(
        self,
        pretrained: str = "showlab/magvitv2",
        revision: str | None = None,
        image_size: int | None = None,
        allow_pickle: bool = False,
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        settings, state = _read_checkpoint(pretrained, revision, allow_pickle)
        if image_size is not None:
            settings["image_size"] = image_size
        _check_fields(settings)
        super().__init__(**settings)
        self.pretrained = str(pretrained)
        self.load_upstream_state_dict(state)
        self.eval()
        torch_dtype = None if dtype is None else getattr(torch, str(dtype), None)
        if dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use for example 'float32' or 'bfloat16'")
        self.to(device=device, dtype=torch_dtype)


def _constructor_fields() -> list[str]:
    import inspect

    return [p for p in inspect.signature(MagvitV2.__init__).parameters if p != "self"]


def _check_fields(settings: dict[str, Any]) -> None:
    unknown = sorted(set(settings) - set(_constructor_fields()))
    if unknown:
        raise ValueError(
            f"unknown MagvitV2 config field(s) {unknown} (from config.json or keyword "
            f"arguments); known fields: {_constructor_fields()}"
        )


def _read_checkpoint(
    source: str | Path, revision: str | None, allow_pickle: bool
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The architecture settings (from `config.json`, keys starting with `_` dropped) and the
    state dict of a weights file, a folder or a hub repository."""
    path = resolve_checkpoint(source, revision=revision, allow_pickle=allow_pickle, allow_file=True)
    weights, config = _find_files(path, allow_pickle)
    settings: dict[str, Any] = {}
    if config is not None:
        stored = json.loads(config.read_text())
        settings = {k: v for k, v in stored.items() if not k.startswith("_")}
    return settings, _read_state_dict(weights)


def _find_files(path: Path, allow_pickle: bool) -> tuple[Path, Path | None]:
    """(weights file, config file or None) of a weights file or a checkpoint folder."""
    if path.is_file():
        if path.suffix != ".safetensors" and not allow_pickle:
            raise ValueError(
                f"{path} is not a safetensors file; pickled weights load only with "
                "allow_pickle=True"
            )
        beside = path.parent / CONFIG_NAME
        return path, beside if beside.is_file() else None
    config = path / CONFIG_NAME if (path / CONFIG_NAME).is_file() else None
    for name in SAFETENSORS_NAMES:
        if (path / name).is_file():
            return path / name, config
    for name in PICKLE_NAMES:
        if (path / name).is_file():
            if not allow_pickle:
                raise ValueError(
                    f"{path} has only pickled weights ({name}); pass allow_pickle=True to read "
                    "them with torch.load(weights_only=True)"
                )
            return path / name, config
    tried = [*SAFETENSORS_NAMES, *(PICKLE_NAMES if allow_pickle else ())]
    raise FileNotFoundError(f"no MAGVIT-v2 weights in {path}; tried {tried}")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return dict(state)
