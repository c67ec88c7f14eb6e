"""Position penalties: logit adjustments that depend on where a masked position lies.

Omni-Diffusion generates images and speech as long, fixed-length responses whose tail is
often padding. A confidence-ordered sampler then tends to unmask the (easy, confident) tail
pads first and commit to a short answer. The paper's remedy is a *position penalty* that
shrinks the logits of late positions so that they look less confident and are unmasked
later.

A penalty sees the logits of the candidate positions together with each position's index
among the row's still-masked positions and the number of still-masked positions of the row,
and returns adjusted logits. It runs after temperature and top-k / top-p filtering and
before the softmax, as in Omni-Diffusion's `sample_tokens`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from omni_blocks.typing import SeqMask

__all__ = ["CandidateLogits", "CandidatePositions", "NoPenalty", "PositionPenalty", "TailPenalty"]

CandidateLogits = Float[Tensor, "n vocab"]
"""Logits at the `n` positions that may be unmasked this step (one row each)."""

CandidatePositions = Int[Tensor, " n"]
"""One integer per candidate position (an index, a count)."""


class PositionPenalty(ABC):
    """The interface every position penalty implements.

    The sampler asks `changes_logits` first (a penalty that changes nothing costs nothing), then
    [`positions`][omni_blocks.sampling.penalties.PositionPenalty.positions] for each candidate's
    index and count, then [`apply`][omni_blocks.sampling.penalties.PositionPenalty.apply].
    """

    @property
    def changes_logits(self) -> bool:
        """Whether `apply` may change anything (False skips the penalty altogether)."""
        return True

    def positions(
        self, masked: SeqMask, where: CandidatePositions
    ) -> tuple[CandidatePositions, CandidatePositions]:
        """Each candidate's index among the masked positions of its row, and that row's count.

        Args:
            masked: the positions still masked before this step.
            where: the candidates as flat indices into `masked` (row-major).
        """
        index = masked.long().cumsum(-1) - 1
        length = masked.sum(-1, keepdim=True).expand_as(index)
        return index.flatten()[where], length.flatten()[where]

    @abstractmethod
    def apply(
        self,
        logits: CandidateLogits,
        index: CandidatePositions,
        length: CandidatePositions,
    ) -> CandidateLogits:
        """Adjust the logits of each candidate position (in place or not: the sampler
        passes its own copy and uses the returned tensor).

        Args:
            logits: logits of the candidate positions.
            index: each candidate's 0-based index among the still-masked positions of its row
                (left to right).
            length: the number of still-masked positions of each candidate's row.
        """


@dataclass(frozen=True)
class NoPenalty(PositionPenalty):
    """Leave the logits unchanged (Dream, LLaDA, Fast-dLLM; Omni-Diffusion for text)."""

    @property
    def changes_logits(self) -> bool:
        """Never."""
        return False

    def apply(
        self,
        logits: CandidateLogits,
        index: CandidatePositions,
        length: CandidatePositions,
    ) -> CandidateLogits:
        return logits


@dataclass(frozen=True)
class TailPenalty(PositionPenalty):
    """Omni-Diffusion's position penalty: flatten the logits of late masked positions.

    Upstream rule (`sample_tokens(..., max_position_penalty)` in Omni-Diffusion's
    `omni_diffusion/models/dream/generation_utils.py`): among the `N` still-masked positions
    of a row, the first `free_positions` (100) are untouched; the `j`-th one after them gets
    the factor

        f = 1 + ((j - free_positions) / (N - free_positions)) ** exponent * (strength - 1)

    (linear, `exponent = 1`, upstream), rising from 1 towards `strength`. Each logit `l` of
    such a position becomes `l / f` if `l >= 0` and `l * f` if `l < 0` (the rule of the CTRL
    repetition penalty). Every logit moves down and the argmax (the greedy token) is
    unchanged. Among positive logits it acts like a temperature `f`: a position whose
    likely tokens have positive logits, the usual case for a trained model, gets a flatter
    distribution and a lower confidence. The rule depends on the sign of the logits, not
    only on their differences: among negative logits it sharpens instead.
    Omni-Diffusion's inference uses `strength = 2.0` for text-to-image and speech-to-image
    and no penalty (`1.0`) for text and speech outputs. When `N <= free_positions` nothing
    changes.

    The index counts still-masked positions, so the penalised tail moves as the response
    fills in: the last masked positions are always the most penalised.

    Args:
        strength: the factor reached at the last masked position (`max_position_penalty`);
            1.0 turns the penalty off.
        free_positions: masked positions at the head that are never penalised (upstream:
            100).
        exponent: shape of the ramp; 1 is upstream's linear ramp, larger values spare more
            of the middle and penalise only the very tail.
        pool: `"row"` counts `j` and `N` within each row (omni_blocks); `"batch"` counts them
            over the masked positions of the whole batch in row-major order, as
            Omni-Diffusion's `sample_tokens` does on its flattened `mask_logits` (identical
            for a batch of one row).

    Raises:
        ValueError: `strength < 1`, `free_positions < 0`, `exponent <= 0` or an unknown
            `pool`.
    """

    strength: float = 2.0
    free_positions: int = 100
    exponent: float = 1.0
    pool: Literal["row", "batch"] = "row"

    def __post_init__(self) -> None:
        if not self.strength >= 1.0 or math.isinf(self.strength):
            raise ValueError(f"strength must be a finite number >= 1; got {self.strength}")
        if self.free_positions < 0:
            raise ValueError(f"free_positions must be >= 0; got {self.free_positions}")
        if not self.exponent > 0:
            raise ValueError(f"exponent must be > 0; got {self.exponent}")
        if self.pool not in ("row", "batch"):
            raise ValueError(f"pool must be 'row' or 'batch'; got {self.pool!r}")

    @property
    def changes_logits(self) -> bool:
        """Unless `strength` is 1."""
        return self.strength != 1.0

    def positions(
        self, masked: SeqMask, where: CandidatePositions
    ) -> tuple[CandidatePositions, CandidatePositions]:
        """Per-row ranks and counts, or (`pool="batch"`) ranks and the count over the batch."""
        if self.pool == "row":
            return super().positions(masked, where)
        flat = masked.flatten().long()
        index = flat.cumsum(0) - 1
        return index[where], torch.full_like(where, int(flat.sum()))

    def factor(self, index: CandidatePositions, length: CandidatePositions) -> Float[Tensor, " n"]:
        """The factor `f >= 1` of each candidate (1 where it is not penalised), float32.

        Computed in float64 and rounded once, as upstream builds its factors from Python
        floats, so that the penalised logits agree with upstream's to the bit.
        """
        dtype = torch.float32 if index.device.type == "mps" else torch.float64
        span = (length - self.free_positions).clamp(min=1).to(dtype)
        ramp = ((index - self.free_positions).to(dtype) / span).clamp(min=0.0)
        return (ramp.pow(self.exponent) * (self.strength - 1.0) + 1.0).float()

    def apply(
        self,
        logits: CandidateLogits,
        index: CandidatePositions,
        length: CandidatePositions,
    ) -> CandidateLogits:
        if self.strength == 1.0 or not bool((length > self.free_positions).any()):
            return logits
        factor = self.factor(index, length)
        # only the penalised rows change: adjust those and write them back in place
        rows = (factor > 1).nonzero().squeeze(-1)
        f = factor[rows].to(logits.dtype).unsqueeze(-1)
        tail = logits.index_select(0, rows)
        return logits.index_copy_(0, rows, torch.where(tail >= 0, tail / f, tail * f))
