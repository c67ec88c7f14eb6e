"""Mask strategies: how clean training sequences are corrupted into `x_t`.

A strategy receives clean ids, the region that may be masked (prompt tokens never are),
per-row diffusion times and a `torch.Generator`, and returns the corrupted ids plus the mask
of corrupted positions. The schedule decides *how many* tokens are masked at time `t`; the
strategy decides *which*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from omni_blocks.schedules import NoiseSchedule
from omni_blocks.typing import SeqFloat, SeqMask, Times, TokenIds
from omni_blocks.vocab import VocabLayout

__all__ = ["Corruption", "MaskStrategy"]


@dataclass
class Corruption:
    """The output of a mask strategy.

    Attributes:
        noisy_ids: `x_t`: the clean ids with `mask_id` written at masked positions.
        mask: True where a token was replaced by `[MASK]` (the positions the loss scores).
        loss_weight: optional per-position weight of the loss (for example attenuated
            tail-pad weights); `None` means weight 1 on every masked position.
    """

    noisy_ids: TokenIds
    mask: SeqMask
    loss_weight: SeqFloat | None = None


@runtime_checkable
class MaskStrategy(Protocol):
    """The interface every mask strategy implements."""

    def __call__(
        self,
        ids: TokenIds,
        maskable: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        """Corrupt `ids` at times `t`; only positions where `maskable` is True may change."""
        ...
