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
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["CandidateLogits", "CandidatePositions", "NoPenalty", "PositionPenalty", "TailPenalty"]

CandidateLogits = Float[Tensor, "n vocab"]
"""Logits at the `n` positions that may be unmasked this step (one row each)."""

CandidatePositions = Int[Tensor, " n"]
"""One integer per candidate position (an index, a count)."""


@runtime_checkable
class PositionPenalty(Protocol):
    """The interface every position penalty implements."""

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
        ...


@dataclass(frozen=True)
class NoPenalty(PositionPenalty):
    """Leave the logits unchanged (Dream, LLaDA, Fast-dLLM; Omni-Diffusion for text)."""

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

    Raises:
        ValueError: `strength < 1`, `free_positions < 0` or `exponent <= 0`.
    """

    strength: float = 2.0
    free_positions: int = 100
    exponent: float = 1.0

    def __post_init__(self) -> None:
        if not self.strength >= 1.0 or math.isinf(self.strength):
            raise ValueError(f"strength must be a finite number >= 1; got {self.strength}")
        if self.free_positions < 0:
            raise ValueError(f"free_positions must be >= 0; got {self.free_positions}")
        if not self.exponent > 0:
            raise ValueError(f"exponent must be > 0; got {self.exponent}")

    def factor(self, index: CandidatePositions, length: CandidatePositions) -> Float[Tensor, " n"]:
        """The factor `f >= 1` of each candidate (1 where it is not penalised)."""
        span = (length - self.free_positions).clamp(min=1).float()
        ramp = ((index - self.free_positions).float() / span).clamp(min=0.0)
        return 1.0 + ramp.pow(self.exponent) * (self.strength - 1.0)

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
