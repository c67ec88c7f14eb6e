"""Backbones: bidirectional networks from noisy token ids to logits."""

from omni_blocks.backbones.base import Backbone

__all__ = ["Backbone"]
