"""The speech a model hears: front ends, encoders and projectors (the continuous path).

- [`omni_blocks.speech.encoders`][omni_blocks.speech.encoders]: the
  [`SpeechFrontEnd`][omni_blocks.speech.SpeechFrontEnd] and
  [`SpeechEncoder`][omni_blocks.speech.SpeechEncoder] interfaces, and a small trainable pair
  ([`LogMelFrontEnd`][omni_blocks.speech.LogMelFrontEnd],
  [`ConvSpeechEncoder`][omni_blocks.speech.ConvSpeechEncoder]);
- [`omni_blocks.speech.sensevoice`][omni_blocks.speech.sensevoice]: SenseVoiceSmall, the
  paper's ([`SenseVoiceFrontEnd`][omni_blocks.speech.SenseVoiceFrontEnd],
  [`SenseVoiceEncoder`][omni_blocks.speech.SenseVoiceEncoder]);
- [`omni_blocks.speech.projectors`][omni_blocks.speech.projectors]: encoder outputs to
  backbone embeddings ([`ResamplerProjector`][omni_blocks.speech.ResamplerProjector],
  [`LinearProjector`][omni_blocks.speech.LinearProjector]);
- [`speech_slots`][omni_blocks.speech.speech_slots]: a batch's frames to the embeddings of
  its slots (what `OmniDiffusionModule` hands the backbone).
"""

from omni_blocks.speech.encoders import (
    ConvSpeechEncoder,
    LogMelFrontEnd,
    SpeechEncoder,
    SpeechFrontEnd,
)
from omni_blocks.speech.projectors import LinearProjector, Projector, ResamplerProjector
from omni_blocks.speech.sensevoice import (
    PretrainedSenseVoice,
    SenseVoiceEncoder,
    SenseVoiceFrontEnd,
)
from omni_blocks.speech.slots import SlotError, speech_slots

__all__ = [
    "ConvSpeechEncoder",
    "LinearProjector",
    "LogMelFrontEnd",
    "PretrainedSenseVoice",
    "Projector",
    "ResamplerProjector",
    "SenseVoiceEncoder",
    "SenseVoiceFrontEnd",
    "SlotError",
    "SpeechEncoder",
    "SpeechFrontEnd",
    "speech_slots",
]
