"""Tokenizer adapters: text, image and speech to local codes and back."""

from omni_blocks.tokenizers.base import ModalityTokenizer, SpeechTokenizer
from omni_blocks.tokenizers.glm4voice import GLM4VoiceTokenizer, SpeechDecoder, WhisperVQEncoder
from omni_blocks.tokenizers.speech_vq import MelVQSpeechTokenizer

__all__ = [
    "GLM4VoiceTokenizer",
    "MelVQSpeechTokenizer",
    "ModalityTokenizer",
    "SpeechDecoder",
    "SpeechTokenizer",
    "WhisperVQEncoder",
]
