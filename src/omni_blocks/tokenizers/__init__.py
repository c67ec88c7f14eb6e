"""Tokenizer adapters: text, image and speech to local codes and back."""

from omni_blocks.tokenizers.base import ModalityTokenizer
from omni_blocks.tokenizers.text import QwenTextTokenizer, TextTokenizer

__all__ = ["ModalityTokenizer", "QwenTextTokenizer", "TextTokenizer"]
