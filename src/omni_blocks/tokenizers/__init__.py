"""Tokenizer adapters: text, image and speech to local codes and back."""

from omni_blocks.tokenizers.base import ModalityTokenizer

__all__ = ["ModalityTokenizer"]
