"""Input checks shared by the image tokenizers (private).

Both image tokenizers take the same raw data: a batch of square images as a tensor
`(batch, channels, height, width)`, either floats in `[0, 1]` or `uint8` in `[0, 255]`;
and both take codes as an integer tensor `(batch, tokens)` in `[0, codebook_size)`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

__all__ = ["check_codes", "check_images"]

# Resampling (bicubic, Lanczos) overshoots [0, 1] slightly; values this close are clamped.
_RANGE_TOLERANCE = 1e-3


def check_images(
    images: Shaped[Tensor, "batch channel height width"],
    *,
    channels: int,
    image_size: int,
    name: str,
) -> Float[Tensor, "batch channel height width"]:
    """Validate a batch of images and return it as float32 values in `[0, 1]`.

    Args:
        images: `(batch, channels, height, width)`; floats in `[0, 1]` or `uint8` in `[0, 255]`.
        channels: the channel count the tokenizer expects.
        image_size: the height and width the tokenizer expects.
        name: the tokenizer's name, for error messages.

    Raises:
        TypeError: `images` is not a tensor, or has a dtype other than floating point or uint8.
        ValueError: wrong number of dimensions, channels or size; an empty batch; NaN or
            infinite values; float values outside `[0, 1]`.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"{name}.encode expects a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        hint = " (add a batch dimension with images[None])" if images.ndim == 3 else ""
        raise ValueError(
            f"{name}.encode expects a batch of images (batch, channels, height, width), got a "
            f"tensor of shape {tuple(images.shape)}{hint}"
        )
    b, c, h, w = images.shape
    if b == 0:
        raise ValueError(f"{name}.encode got an empty batch")
    if c != channels:
        raise ValueError(
            f"{name}.encode expects {channels} channel(s) in dimension 1, got {c} "
            f"(shape {tuple(images.shape)}; channels come before height and width)"
        )
    if (h, w) != (image_size, image_size):
        raise ValueError(
            f"{name}.encode expects {image_size}x{image_size} images, got {h}x{w}; "
            "resize or crop them first"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"{name}.encode expects floating point values in [0, 1] or uint8 values in "
            f"[0, 255], got dtype {images.dtype}"
        )
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name}.encode got NaN or infinite pixel values")
    low, high = float(images.min()), float(images.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        if low < 0 and low >= -1 - _RANGE_TOLERANCE and high <= 1 + _RANGE_TOLERANCE:
            hint = "; values look normalised to [-1, 1]: pass (images + 1) / 2"
        elif high > 1:
            hint = "; values look like 0..255 or 0..16 counts: divide by the maximum value"
        else:
            hint = ""
        raise ValueError(
            f"{name}.encode expects float pixel values in [0, 1], got values in "
            f"[{low:.4g}, {high:.4g}]{hint}"
        )
    return images.clamp(0.0, 1.0)


def check_codes(
    codes: Shaped[Tensor, "batch tokens"],
    *,
    codebook_size: int,
    tokens: int,
    name: str,
) -> Int[Tensor, "batch tokens"]:
    """Validate a batch of codes and return it as int64.

    Raises:
        TypeError: `codes` is not an integer tensor.
        ValueError: wrong shape, or a code outside `[0, codebook_size)`.
    """
    if not isinstance(codes, Tensor):
        raise TypeError(f"{name}.decode expects a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"{name}.decode expects integer codes, got dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != tokens:
        raise ValueError(
            f"{name}.decode expects codes of shape (batch, {tokens}), got {tuple(codes.shape)}"
        )
    if codes.numel():
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= codebook_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{name}.decode got code {bad}, outside the codebook [0, {codebook_size})"
            )
    return codes.long()
