"""Classifier-free guidance for masked diffusion: push predictions away from the unconditional.

Each step runs the denoiser twice, on the sequence as it is and on an *unconditional*
version of it, and mixes the logits position by position as

    logits = uncond + (scale + 1) * (cond - uncond)

which is LLaDA's `cfg_scale` (unsupervised CFG, Nie et al., 2025) and Omni-Diffusion's `cfg`
(speech-to-image: `cfg=2.0`). `scale = 0` gives the conditional logits back. Both passes go
through the model as one batch of twice the rows; the sampler counts them as two function
evaluations.

Two ways to build the unconditional input:

- [`ClassifierFreeGuidance`][omni_blocks.sampling.guidance.ClassifierFreeGuidance] replaces
  the prompt by `[MASK]` (LLaDA's way; no task knowledge needed, the row keeps its length);
- [`PromptSwapGuidance`][omni_blocks.sampling.guidance.PromptSwapGuidance] replaces the
  prompt by a fixed, task-specific unconditional prompt (Omni-Diffusion's way, for
  speech-to-image: its system prompt and an empty user turn).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.sampling.penalties import CandidateLogits
from omni_blocks.typing import SeqMask, TokenIds

__all__ = ["ClassifierFreeGuidance", "Guidance", "GuidedInput", "PromptSwapGuidance"]


@dataclass
class GuidedInput:
    """The unconditional pass's input: ids, attention mask and embedding slots."""

    ids: TokenIds
    attention_mask: SeqMask | None = None
    slots: EmbeddingSlots | None = None


class Guidance(ABC):
    """The interface of a guidance block: the unconditional input, and the mixing rule."""

    @abstractmethod
    def unconditional_input(
        self,
        ids: TokenIds,
        *,
        target_mask: SeqMask,
        attention_mask: SeqMask | None,
        mask_id: int,
        pad_id: int,
    ) -> GuidedInput:
        """The input of the unconditional pass; its ids have the shape of `ids`, and the
        logits of both passes are mixed at the same positions."""

    @abstractmethod
    def combine(self, cond: CandidateLogits, uncond: CandidateLogits) -> CandidateLogits:
        """Guided logits from the conditional and unconditional ones."""


@dataclass(frozen=True)
class ClassifierFreeGuidance(Guidance):
    """Guidance with the prompt masked out for the unconditional pass.

    Args:
        scale: guidance strength `w` in `uncond + (w + 1) * (cond - uncond)`.

    Raises:
        ValueError: `scale` is negative or not finite.
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale >= 0 or math.isinf(self.scale):
            raise ValueError(f"scale must be a finite number >= 0; got {self.scale}")

    def unconditional(self, ids: TokenIds, prompt: SeqMask, mask_id: int) -> TokenIds:
        """The unconditional ids: every `prompt` position replaced by `mask_id`."""
        return ids.masked_fill(prompt, mask_id)

    def unconditional_input(
        self,
        ids: TokenIds,
        *,
        target_mask: SeqMask,
        attention_mask: SeqMask | None,
        mask_id: int,
        pad_id: int,
    ) -> GuidedInput:
        """The same row with its prompt masked (padding stays padding; slots, which sit in
        the prompt, are masked with it)."""
        prompt = ~target_mask if attention_mask is None else attention_mask & ~target_mask
        return GuidedInput(self.unconditional(ids, prompt, mask_id), attention_mask)

    def combine(self, cond: CandidateLogits, uncond: CandidateLogits) -> CandidateLogits:
        """Guided logits from the conditional and unconditional ones."""
        # upstream's own expression (torch.lerp rounds differently for weights >= 0.5)
        return uncond + (self.scale + 1.0) * (cond - uncond)


@dataclass(frozen=True)
class PromptSwapGuidance(ClassifierFreeGuidance):
    """Guidance whose unconditional pass reads a fixed prompt instead of the row's own.

    Omni-Diffusion's speech-to-image guidance (`_sample` with `cfg > 0` and
    `task="S2I"`): the unconditional sequence is the unconditional prompt followed by the
    row's current target region (its masks and the tokens revealed so far). The logits of the
    two passes are mixed at the same positions.

    Upstream builds the unconditional sequence left-aligned and fills the rest of the row
    with zero *embeddings*, which every position attends to (its sampler drops attention
    masks), and mixes position by position: the unconditional logit at a target position
    comes from another token of the unconditional sequence whenever the two prompts differ
    in length. `align_response=False` reproduces that exactly; `align_response=True` puts the
    unconditional prompt right before the target instead (the row's padding on the left, not
    attended), so that each target position is mixed with its own unconditional prediction.

    Build one from text with
    [`from_text`][omni_blocks.sampling.guidance.PromptSwapGuidance.from_text]; Omni-Diffusion's
    speech-to-image prompt is `SPEECH_TO_IMAGE_UNCONDITIONAL`.

    Args:
        scale: guidance strength (upstream `cfg`).
        unconditional_ids: the unconditional prompt's token ids.
        align_response: see above (False: upstream's exact behaviour).

    Raises:
        ValueError: `scale` is negative, or the prompt is empty.
    """

    unconditional_ids: Sequence[int] = ()
    align_response: bool = False

    SPEECH_TO_IMAGE_UNCONDITIONAL = (
        "<|im_start|>system\nPlease generate an image based on the input audio.<|im_end|>\n"
        "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"
    )
    """Omni-Diffusion's unconditional prompt for speech-to-image (`generation_utils.py`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.unconditional_ids:
            raise ValueError("PromptSwapGuidance needs the unconditional prompt's ids")
        object.__setattr__(self, "unconditional_ids", tuple(int(i) for i in self.unconditional_ids))

    @classmethod
    def from_text(
        cls, text: str, tokenizer: Any, scale: float = 2.0, *, align_response: bool = False
    ) -> PromptSwapGuidance:
        """Guidance with the unconditional prompt `text`, encoded by `tokenizer` (a
        `TextTokenizer`, or anything whose `encode` returns ids)."""
        ids = tokenizer.encode(text)
        return cls(scale, tuple(int(i) for i in ids), align_response)

    def unconditional_input(
        self,
        ids: TokenIds,
        *,
        target_mask: SeqMask,
        attention_mask: SeqMask | None,
        mask_id: int,
        pad_id: int,
    ) -> GuidedInput:
        """The unconditional prompt, then each row's target region (see the class)."""
        rows, width = ids.shape
        prompt = torch.tensor(self.unconditional_ids, dtype=ids.dtype, device=ids.device)
        out = torch.full_like(ids, pad_id)
        real = torch.zeros_like(target_mask)
        for row in range(rows):
            sequence = torch.cat([prompt, ids[row][target_mask[row]]])
            if len(sequence) > width:
                raise ValueError(
                    f"the unconditional prompt ({len(prompt)} tokens) and the target region do "
                    f"not fit in the row's {width} positions; the conditional prompt must be "
                    "at least as long as the unconditional one"
                )
            start = width - len(sequence) if self.align_response else 0
            out[row, start : start + len(sequence)] = sequence
            real[row, start : start + len(sequence)] = True
        if self.align_response:
            return GuidedInput(out, real)
        # upstream: zero embeddings after the sequence, attended like any position
        return GuidedInput(out, None, EmbeddingSlots(~real, None))
