"""Tokenizer adapters: text, image and speech to local codes and back."""

from omni_blocks.tokenizers.base import ImageTokenizer, ModalityTokenizer, SpeechTokenizer
from omni_blocks.tokenizers.glm4voice import GLM4VoiceTokenizer, SpeechDecoder, WhisperVQEncoder
from omni_blocks.tokenizers.magvit2 import MagvitV2, PretrainedMagvitV2
from omni_blocks.tokenizers.patch_vq import PatchVQTokenizer
from omni_blocks.tokenizers.speech_vq import MelVQSpeechTokenizer
from omni_blocks.tokenizers.text import PretrainedTextTokenizer, QwenTextTokenizer, TextTokenizer

__all__ = [
    "GLM4VoiceTokenizer",
    "ImageTokenizer",
    "MagvitV2",
    "MelVQSpeechTokenizer",
    "ModalityTokenizer",
    "PatchVQTokenizer",
    "PretrainedMagvitV2",
    "PretrainedTextTokenizer",
    "QwenTextTokenizer",
    "SpeechDecoder",
    "SpeechTokenizer",
    "TextTokenizer",
    "WhisperVQEncoder",
]
