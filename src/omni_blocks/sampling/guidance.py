"""Classifier-free guidance for masked diffusion: push predictions away from the unconditional.

Each step runs the denoiser twice, on the sequence as it is and on an *unconditional* copy
whose prompt is replaced by `[MASK]`, and mixes the logits as

    logits = uncond + (scale + 1) * (cond - uncond)

which is LLaDA's `cfg_scale` (unsupervised CFG, Nie et al., 2025) and Omni-Diffusion's `cfg`
(speech-to-image: `cfg=2.0`). `scale = 0` gives the conditional logits back. Both passes go
through the model as one batch of twice the rows; the sampler counts them as two function
evaluations.

Omni-Diffusion builds its unconditional input differently: it keeps a task-specific system
prompt and drops (speech-to-image) or replaces with random text ids (text-to-image) the
user's content. Masking the whole prompt (LLaDA) needs no task knowledge, which is why
omni_blocks uses it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from omni_blocks.sampling.penalties import CandidateLogits
from omni_blocks.typing import SeqMask, TokenIds

__all__ = ["ClassifierFreeGuidance", "Guidance"]


class Guidance(ABC):
    """The interface of a guidance block: the unconditional input, and the mixing rule."""

    @abstractmethod
    def unconditional(self, ids: TokenIds, prompt: SeqMask, mask_id: int) -> TokenIds:
        """The input of the unconditional pass (same shape as `ids`)."""

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
        """The unconditional input: every `prompt` position replaced by `mask_id`."""
        return ids.masked_fill(prompt, mask_id)

    def combine(self, cond: CandidateLogits, uncond: CandidateLogits) -> CandidateLogits:
        """Guided logits from the conditional and unconditional ones."""
        # upstream's own expression (torch.lerp rounds differently for weights >= 0.5)
        return uncond + (self.scale + 1.0) * (cond - uncond)
