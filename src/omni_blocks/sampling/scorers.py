"""Confidence scorers: how sure the model is about the token it would write at a position.

A sampler unmasks the most confident positions first. Every scorer reads the probabilities
the sampler's token choice produced (after temperature, top-k / top-p, modality restriction
and the position penalty) and the token chosen at each position, and returns one score per
position: higher means "unmask earlier".

| scorer | score of a position | Dream `alg` | LLaDA `remasking` |
|---|---|---|---|
| `MaxProbScorer` | `p(chosen token)` | `maskgit_plus` | `low_confidence` |
| `MarginScorer` | `p(top-1) - p(top-2)` | `topk_margin` | - |
| `EntropyScorer` | `sum_v p(v) log p(v)` | `entropy` | - |
| `RandomScorer` | `U(0, 1)`, ignores the model | `origin` (see its notes) | `random` |

LLaDA's `low_confidence` remasking keeps the tokens whose sampled value has the highest
probability, which is `MaxProbScorer`. The match is exact at temperature 0 (LLaDA's default
and its reported setting); at temperature > 0 LLaDA scores the sampled token under the
*untempered* softmax, whereas Dream and omni_blocks score it under the tempered one.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "CandidateProbs",
    "CandidateScores",
    "CandidateTokens",
    "ConfidenceScorer",
    "EntropyScorer",
    "MarginScorer",
    "MaxProbScorer",
    "RandomScorer",
]

CandidateProbs = Float[Tensor, "n vocab"]
"""Probabilities at the `n` positions that may be unmasked this step (one row each)."""

CandidateTokens = Int[Tensor, " n"]
"""The token chosen at each of the `n` candidate positions."""

CandidateScores = Float[Tensor, " n"]
"""One confidence per candidate position; higher is unmasked earlier."""


class ConfidenceScorer(ABC):
    """The interface every confidence scorer implements."""

    @abstractmethod
    def score(
        self,
        probs: CandidateProbs,
        tokens: CandidateTokens,
        *,
        generator: torch.Generator | None = None,
    ) -> CandidateScores:
        """Score each candidate position (higher: unmask earlier).

        Args:
            probs: the token distribution at each candidate position (rows sum to one).
            tokens: the token chosen at each candidate position.
            generator: random source for scorers that need one.
        """


@dataclass(frozen=True)
class MaxProbScorer(ConfidenceScorer):
    """Confidence = probability of the chosen token (MaskGIT's rule).

    Dream's `alg="maskgit_plus"` and LLaDA's `remasking="low_confidence"` (exact at
    temperature 0). With greedy token choice this is the largest probability at the position.
    """

    def score(
        self,
        probs: CandidateProbs,
        tokens: CandidateTokens,
        *,
        generator: torch.Generator | None = None,
    ) -> CandidateScores:
        return probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class MarginScorer(ConfidenceScorer):
    """Confidence = `p(top-1) - p(top-2)`, the gap between the two likeliest tokens.

    Dream's `alg="topk_margin"` (Kim et al., 2025, "Train for the Worst, Plan for the Best").
    A position where two tokens are nearly tied is left for later even if both are likely.
    """

    def score(
        self,
        probs: CandidateProbs,
        tokens: CandidateTokens,
        *,
        generator: torch.Generator | None = None,
    ) -> CandidateScores:
        if probs.shape[-1] < 2:  # one token kept (after top-k / top-p): no runner-up
            return probs[:, 0] if probs.shape[-1] else probs.new_zeros(probs.shape[0])
        top = probs.topk(2, dim=-1).values
        return top[:, 0] - top[:, 1]


@dataclass(frozen=True)
class EntropyScorer(ConfidenceScorer):
    """Confidence = negative entropy `sum_v p(v) log p(v)` of the position's distribution.

    Dream's `alg="entropy"`, which is also what Omni-Diffusion decodes with (its inference
    script uses `entropy` for ASR, TTS and VQA, and `entropy-penalty`, entropy plus a
    repetition penalty omni_blocks does not implement, for image and speech generation).
    Unlike the two scorers above it looks at the whole distribution, not just its top.

    Args:
        epsilon: 0 computes `p log p` with `0 log 0 = 0`; a positive value computes
            `p log(p + epsilon)` instead, which is what Dream's and Omni-Diffusion's
            `sample_tokens` write (`epsilon = 1e-10`): the two differ in the last bits, which
            is enough to swap two nearly tied positions, so the upstream-exact presets use it.

    Raises:
        ValueError: a negative or non-finite `epsilon`.
    """

    epsilon: float = 0.0

    def __post_init__(self) -> None:
        if not (self.epsilon >= 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"epsilon must be a finite number >= 0; got {self.epsilon}")

    def score(
        self,
        probs: CandidateProbs,
        tokens: CandidateTokens,
        *,
        generator: torch.Generator | None = None,
    ) -> CandidateScores:
        if self.epsilon > 0:
            return (probs * torch.log(probs + self.epsilon)).sum(-1)
        # p log p with 0 log 0 = 0: the clamp keeps the log finite, the factor p zeroes it
        # (several times faster on CPU than torch.special.entr)
        tiny = torch.finfo(probs.dtype).tiny
        return (probs * probs.clamp(min=tiny).log()).sum(-1)


@dataclass(frozen=True)
class RandomScorer(ConfidenceScorer):
    """Confidence drawn uniformly at random: unmask in a random order.

    LLaDA's `remasking="random"` exactly. With a
    [`SchedulePlanner`][omni_blocks.sampling.planners.SchedulePlanner] whose
    `rounding="stochastic"` it is also exactly Dream's `alg="origin"` and MDLM's ancestral
    sampler: each masked token is revealed independently with probability
    `1 - mask_prob(s) / mask_prob(t)` per step (a binomial count of uniformly chosen
    positions is the same distribution). With the default `rounding="floor"` the count per
    step is deterministic and only the order is random.
    """

    def score(
        self,
        probs: CandidateProbs,
        tokens: CandidateTokens,
        *,
        generator: torch.Generator | None = None,
    ) -> CandidateScores:
        return torch.rand(tokens.shape[0], generator=generator, device=probs.device)
