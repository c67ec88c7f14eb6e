"""The `ModalityTokenizer` protocol: raw data <-> local codes of one modality.

Adapters produce *local* codes in `[0, codebook_size)`; `VocabLayout` turns them into
global ids. Adapters never know about offsets.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from omni_blocks.vocab import Modality

__all__ = ["ModalityTokenizer", "SpeechTokenizer"]


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
