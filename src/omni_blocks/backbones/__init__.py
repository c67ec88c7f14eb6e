"""Backbones: bidirectional networks from noisy token ids to logits.

- [`Backbone`][omni_blocks.backbones.Backbone]: the protocol every backbone implements.
- [`NativeTransformer`][omni_blocks.backbones.NativeTransformer]: a self-contained
  Qwen2 / Dream transformer with full attention (no `transformers` needed);
  [`PretrainedTransformer`][omni_blocks.backbones.PretrainedTransformer] loads a checkpoint.
- [`HFBackbone`][omni_blocks.backbones.HFBackbone]: a `transformers` model (Qwen2 with
  `is_causal=False`) behind the same protocol.
- [`LoraBackbone`][omni_blocks.backbones.LoraBackbone]: LoRA adapters (peft) on any of them,
  the new vocabulary rows trainable.
- [`CachingBackbone`][omni_blocks.backbones.CachingBackbone]: a backbone that can run a
  window of a sequence against a [`KeyValueCache`][omni_blocks.backbones.KeyValueCache]
  (the sampler's prefix and dual caches).
- [`TransformerConfig`][omni_blocks.backbones.TransformerConfig]: the `config.json` fields.
"""

from omni_blocks.backbones.base import (
    Backbone,
    CachingBackbone,
    EmbeddingSlots,
    KeyValueCache,
    grow_rows,
)
from omni_blocks.backbones.config import TransformerConfig, default_shift_logits, is_dream_config
from omni_blocks.backbones.hf import HFBackbone
from omni_blocks.backbones.lora import LoraBackbone
from omni_blocks.backbones.native import NativeTransformer, PretrainedTransformer, shift_right

__all__ = [
    "Backbone",
    "CachingBackbone",
    "EmbeddingSlots",
    "HFBackbone",
    "KeyValueCache",
    "LoraBackbone",
    "NativeTransformer",
    "PretrainedTransformer",
    "TransformerConfig",
    "default_shift_logits",
    "grow_rows",
    "is_dream_config",
    "shift_right",
]
