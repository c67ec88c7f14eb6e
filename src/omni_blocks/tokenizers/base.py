"""The `ModalityTokenizer` protocol: raw data <-> local codes of one modality.

Adapters produce *local* codes in `[0, codebook_size)`; `VocabLayout` turns them into
global ids. Adapters never know about offsets.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from omni_blocks.vocab import Modality

__all__ = ["ImageTokenizer", "ModalityTokenizer", "SpeechTokenizer"]


@runtime_checkable
class ModalityTokenizer(Protocol):
    """The interface every tokenizer adapter implements."""

    @property
    def modality(self) -> Modality:
        """The modality this tokenizer handles."""
        ...

    @property
    def codebook_size(self) -> int:
        """Number of distinct local codes."""
        ...

    def encode(self, batch: Any) -> Any:
        """Raw data (a batch) -> local codes (a tensor, or a list of tensors when lengths vary)."""
        ...

    def decode(self, codes: Any) -> Any:
        """Local codes -> raw data."""
        ...


@runtime_checkable
class ImageTokenizer(ModalityTokenizer, Protocol):
    """A [`ModalityTokenizer`][omni_blocks.tokenizers.base.ModalityTokenizer] for images.

    Images have a fixed number of tokens per item: a tokenizer takes square images of one
    size, `(batch, channels, image_size, image_size)` with float values in `[0, 1]` (or
    `uint8` in `[0, 255]`), and returns `(batch, tokens_per_item)` codes, row-major over its
    code grid; `decode` takes such codes and returns float images in `[0, 1]`.
    MAGVIT-v2 at 256x256: 16x16 = 256 tokens per image.
    """

    @property
    def image_size(self) -> int:
        """Height and width in pixels of the images `encode` takes and `decode` returns."""
        ...

    @property
    def channels(self) -> int:
        """Channels of those images (3 for RGB, 1 for grey scale)."""
        ...

    @property
    def tokens_per_item(self) -> int:
        """Codes per image."""
        ...


@runtime_checkable
class SpeechTokenizer(ModalityTokenizer, Protocol):
    """A [`ModalityTokenizer`][omni_blocks.tokenizers.base.ModalityTokenizer] for speech.

    Speech has no fixed number of tokens per item: a tokenizer emits codes at a fixed rate,
    `frame_rate` codes per second of audio (GLM-4-Voice: 12.5 Hz, one code per 1,280 samples
    at 16 kHz), so an utterance of `s` seconds takes about `s * frame_rate` positions of the
    unified sequence.
    """

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz of the waveforms `encode` takes."""
        ...

    @property
    def frame_rate(self) -> float:
        """Codes per second of audio, in Hz."""
        ...
