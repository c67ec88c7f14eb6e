"""How a template writes the speech a model hears: as discrete codes, or as a slot of
encoder features.

| block | in the sequence | example key |
|---|---|---|
| `SpeechCodes` | `[begin_speech] codes [end_speech]` | `speech_codes` |
| `SpeechFeatures` | `[begin_speech] placeholder x n [end_speech]` | `speech_features` |

(codes: GLM-4-Voice's, say; features: a front end's frames, whose `n` encoder outputs
replace the placeholders' embeddings).

Omni-Diffusion hears speech as features (SenseVoiceSmall's encoder, `n = frames + 4`) and
says speech as codes; a template takes either for its input by configuration
(`speech_input:`), the target of TTS is always codes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from omni_blocks.data.sequence import DataError, local_codes, segment
from omni_blocks.vocab import Modality, VocabError, VocabLayout

__all__ = ["SpeechCodes", "SpeechFeatures", "SpeechInput", "SpeechPiece", "placeholder_id"]

CONTEXT_OF_AUDIO = "<|context_of_audio|>"
"""Omni-Diffusion's placeholder inside a speech slot."""


@dataclass(frozen=True)
class SpeechPiece:
    """What a speech input adds to a prompt.

    Attributes:
        ids: the global ids (codes, or placeholders inside begin/end).
        slot: True at the placeholder positions (None for codes).
        features: the frames whose encoding fills the slot (None for codes).
    """

    ids: Tensor
    slot: Tensor | None = None
    features: Tensor | None = None


def placeholder_id(layout: VocabLayout) -> int:
    """The id written at slot positions: `<|context_of_audio|>` when the layout has it (the
    released layout does), else the pad id. The backbone never reads it (the slot's
    embeddings replace it)."""
    try:
        return layout.token_id(CONTEXT_OF_AUDIO)
    except VocabError:
        return layout.pad_id


class SpeechInput(ABC):
    """The interface: an example's speech -> a piece of prompt."""

    features_key: str | None = None
    """The example key of feature frames this input reads (None: it reads codes)."""

    @abstractmethod
    def piece(self, example: Mapping[str, Any], layout: VocabLayout, name: str) -> SpeechPiece:
        """The prompt piece of `example`'s speech (`name` identifies it in errors).

        Raises:
            DataError: the example lacks the key, or holds the wrong kind of value.
        """


@dataclass(frozen=True)
class SpeechCodes(SpeechInput):
    """Speech as discrete codes (`speech_codes`), wrapped in its begin / end tokens."""

    key: str = "speech_codes"

    def piece(self, example: Mapping[str, Any], layout: VocabLayout, name: str) -> SpeechPiece:
        codes = local_codes(example, self.key, Modality.SPEECH, layout, name, task="speech")
        return SpeechPiece(segment(codes, Modality.SPEECH, layout))


@dataclass(frozen=True)
class SpeechFeatures(SpeechInput):
    """Speech as a slot of encoder outputs: `speech_features` frames -> `n` positions.

    `n = ceil(frames / stride) + extra_positions` must be what the model's speech encoder
    makes of the frames: SenseVoiceSmall (Omni-Diffusion) adds 4 query positions to the
    frames (`extra_positions=4, stride=1`); `ConvSpeechEncoder(stride=s)` gives
    `ceil(frames / s)`.

    Args:
        extra_positions: positions the encoder adds to its frames.
        stride: frames per position.
        key: the example key of the frames.

    Raises:
        ValueError: a negative `extra_positions` or a `stride` below 1.
    """

    extra_positions: int = 4
    stride: int = 1
    key: str = "speech_features"

    def __post_init__(self) -> None:
        if self.extra_positions < 0 or self.stride < 1:
            raise ValueError("extra_positions must be >= 0 and stride >= 1")

    @property
    def features_key(self) -> str | None:  # type: ignore[override]
        return self.key

    def slot_length(self, frames: int) -> int:
        """Slot positions for `frames` feature frames."""
        return math.ceil(frames / self.stride) + self.extra_positions

    def piece(self, example: Mapping[str, Any], layout: VocabLayout, name: str) -> SpeechPiece:
        if self.key not in example:
            raise DataError(
                f"{name}: needs {self.key!r} (speech feature frames, from a front end such as "
                f"SenseVoiceFrontEnd); keys: {sorted(map(str, example))}"
            )
        value = example[self.key]
        if not isinstance(value, Tensor) or value.ndim != 2 or not value.dtype.is_floating_point:
            raise DataError(
                f"{name}: {self.key!r} must be a float tensor (frames, features); got "
                f"{type(value).__name__} {getattr(value, 'shape', '')}"
            )
        if value.shape[0] == 0 or not bool(torch.isfinite(value).all()):
            raise DataError(f"{name}: {self.key!r} is empty or holds NaN / inf")
        n = self.slot_length(int(value.shape[0]))
        ids = torch.cat(
            [
                torch.tensor([layout.begin_id(Modality.SPEECH)]),
                torch.full((n,), placeholder_id(layout)),
                torch.tensor([layout.end_id(Modality.SPEECH)]),
            ]
        )
        slot = torch.zeros(len(ids), dtype=torch.bool)
        slot[1:-1] = True
        return SpeechPiece(ids, slot, value.float())
