"""The `Sampler` interface and its output."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.typing import Logits, SeqMask, TokenIds
from omni_blocks.vocab import Modality, VocabLayout

__all__ = ["Denoiser", "SampleOutput", "Sampler"]

Denoiser = Callable[[TokenIds, SeqMask | None], Logits]
"""Anything that maps `(ids, attention_mask)` to aligned logits: a `Backbone`, or a wrapper."""


@dataclass
class SampleOutput:
    """What a sampler returns.

    Attributes:
        ids: the sequences with every `[MASK]` position filled.
        nfe: number of forward passes of the denoiser (function evaluations), counting the
            unconditional passes of classifier-free guidance.
        trajectory: optional; the step (0-based) at which each position was unmasked, -1 for
            positions that were never masked. Render it to see the unmasking order.
    """

    ids: TokenIds
    nfe: int
    trajectory: Int[Tensor, "batch seq"] | None = None


class Sampler(ABC):
    """The interface every sampler implements.

    The region to generate is the *target*: `target_mask` flags it (by default, the positions
    that hold `layout.mask_id`). Inside it the sampler writes exactly the positions that hold
    `layout.mask_id`; every other position (the prompt, known tokens of an inpainting target)
    is returned unchanged.
    """

    @abstractmethod
    def __call__(
        self,
        model: Denoiser,
        ids: TokenIds,
        *,
        layout: VocabLayout,
        modality: Modality | None = None,
        target_mask: SeqMask | None = None,
        attention_mask: SeqMask | None = None,
        generator: torch.Generator | None = None,
        slots: EmbeddingSlots | None = None,
    ) -> SampleOutput:
        """Fill the `[MASK]` positions of `ids`.

        Args:
            model: the denoiser.
            ids: prompt and target; `mask_id` marks positions to generate.
            layout: the vocabulary layout (mask id, modality ranges).
            modality: when given, generated ids are restricted to this modality's ids.
            target_mask: the target region (defaults to the masked positions); position
                penalties and blocks are counted within it.
            attention_mask: False at padding the model must ignore.
            generator: makes sampling deterministic.
            slots: embeddings given in place of token embeddings at prompt positions.
        """
