"""Raw examples (pixels, waveforms) -> examples with local codes, checked per example.

Templates take local codes (`image_codes`, `speech_codes`). These helpers run the modality
tokenizers on raw data first and check it against what the tokenizer needs, so that an
image of the wrong size or audio at the wrong sample rate raises a
[`DataError`][omni_blocks.data.sequence.DataError] that names the example, instead of a
tokenizer error deep inside a data loader (or, worse, codes of the wrong count).

Raw keys: `image` (a `(channels, height, width)` tensor, floats in `[0, 1]` or uint8), and
`audio` (a mono `(time,)` float waveform) with `sample_rate` (Hz).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from omni_blocks.data.sequence import DataError, describe_example
from omni_blocks.tokenizers.base import ImageTokenizer, SpeechTokenizer

__all__ = ["tokenize_example", "tokenize_examples"]


def tokenize_example(
    example: Mapping[str, Any],
    *,
    image_tokenizer: ImageTokenizer | None = None,
    speech_tokenizer: SpeechTokenizer | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    """A copy of `example` with `image` -> `image_codes` and `audio` -> `speech_codes`.

    Other keys are kept; `image`, `audio` and `sample_rate` are dropped once tokenized.

    Args:
        example: a dict with raw `image` and/or `audio` + `sample_rate` (and anything else).
        image_tokenizer: encodes `image` (needed when the example has one).
        speech_tokenizer: encodes `audio` (needed when the example has one).
        index: the example's position in its dataset, quoted in error messages.

    Raises:
        DataError: no tokenizer for a raw field, an image of the wrong shape, audio at the
            wrong sample rate or of the wrong shape, or any other input the tokenizer
            rejects; the message names the example.
    """
    name = describe_example(example, index)
    if not isinstance(example, Mapping):
        raise DataError(f"{name}: examples are dicts, got {type(example).__name__}")
    out = dict(example)
    if "image" in example:
        if image_tokenizer is None:
            raise DataError(f"{name}: has a raw 'image' but no image_tokenizer was given")
        out["image_codes"] = _image_codes(example["image"], image_tokenizer, name)
        del out["image"]
    if "audio" in example:
        if speech_tokenizer is None:
            raise DataError(f"{name}: has raw 'audio' but no speech_tokenizer was given")
        out["speech_codes"] = _speech_codes(example, speech_tokenizer, name)
        out.pop("audio")
        out.pop("sample_rate", None)
    return out


def tokenize_examples(
    examples: Iterable[Mapping[str, Any]],
    *,
    image_tokenizer: ImageTokenizer | None = None,
    speech_tokenizer: SpeechTokenizer | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """[`tokenize_example`][omni_blocks.data.tokenize.tokenize_example] on each example,
    errors naming its index; `progress` shows a tqdm bar."""
    return [
        tokenize_example(
            example, image_tokenizer=image_tokenizer, speech_tokenizer=speech_tokenizer, index=i
        )
        for i, example in enumerate(tqdm(examples, disable=not progress, desc="tokenize"))
    ]


def _image_codes(image: Any, tokenizer: ImageTokenizer, name: str) -> Tensor:
    expected = (tokenizer.channels, tokenizer.image_size, tokenizer.image_size)
    if not isinstance(image, Tensor):
        raise DataError(f"{name}: 'image' must be a tensor {expected}, got {type(image).__name__}")
    if tuple(image.shape) != expected:
        size = tokenizer.image_size
        raise DataError(
            f"{name}: 'image' has shape {tuple(image.shape)}, but the image tokenizer takes "
            f"(channels, height, width) = {expected}: {size}x{size} pixels with "
            f"{tokenizer.channels} channel(s); resize or crop it first"
        )
    try:
        codes = tokenizer.encode(image[None])
    except (ValueError, TypeError) as err:
        raise DataError(f"{name}: the image tokenizer rejected 'image': {err}") from err
    return torch.as_tensor(codes)[0].reshape(-1).long()


def _speech_codes(example: Mapping[str, Any], tokenizer: SpeechTokenizer, name: str) -> Tensor:
    wave = example["audio"]
    if "sample_rate" not in example:
        raise DataError(f"{name}: raw 'audio' needs a 'sample_rate' (Hz) next to it")
    rate = example["sample_rate"]
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise DataError(f"{name}: 'sample_rate' must be an int (Hz), got {rate!r}")
    if rate != tokenizer.sample_rate:
        raise DataError(
            f"{name}: 'audio' has sample rate {rate} Hz, but the speech tokenizer needs "
            f"{tokenizer.sample_rate} Hz; convert it with "
            f"omni_blocks.tokenizers.audio.resample(audio, {rate}, {tokenizer.sample_rate})"
        )
    if not isinstance(wave, Tensor) or wave.ndim != 1:
        shape = tuple(wave.shape) if isinstance(wave, Tensor) else type(wave).__name__
        raise DataError(f"{name}: 'audio' must be a mono (time,) waveform tensor, got {shape}")
    if wave.numel() == 0:
        raise DataError(f"{name}: 'audio' is empty")
    try:
        codes = tokenizer.encode(wave, sample_rate=rate)  # type: ignore[call-arg]
    except (ValueError, TypeError) as err:
        raise DataError(f"{name}: the speech tokenizer rejected 'audio': {err}") from err
    codes = torch.as_tensor(codes).reshape(-1).long()
    if codes.numel() == 0:
        raise DataError(f"{name}: 'audio' gave no speech codes (too short?)")
    return codes
