"""Tokenizer adapters: text, image and speech to local codes and back."""

from omni_blocks.tokenizers.base import ImageTokenizer, ModalityTokenizer
from omni_blocks.tokenizers.magvit2 import MagvitV2
from omni_blocks.tokenizers.patch_vq import PatchVQTokenizer
from omni_blocks.tokenizers.text import QwenTextTokenizer, TextTokenizer

__all__ = [
    "ImageTokenizer",
    "MagvitV2",
    "ModalityTokenizer",
    "PatchVQTokenizer",
    "QwenTextTokenizer",
    "TextTokenizer",
]
