"""Token choice: which token a sampler writes at a position it unmasks.

The choice runs in two halves around the position penalty, in Omni-Diffusion's / Dream's
order (`sample_tokens`): `filter` scales the logits by the temperature and applies top-p,
then top-k; the sampler applies the position penalty and the softmax; `draw` picks a token
from the probabilities (greedy at temperature 0, a categorical draw otherwise). The scorers
then read those same probabilities, so top-k / top-p also change the confidence even at
temperature 0 (as upstream).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from einops import rearrange

from omni_blocks.sampling.penalties import CandidateLogits
from omni_blocks.sampling.scorers import CandidateProbs, CandidateTokens

__all__ = ["TokenChoice", "TokenChooser"]


@runtime_checkable
class TokenChooser(Protocol):
    """The interface of a token choice: filter logits, then draw from probabilities."""

    def filter(self, logits: CandidateLogits) -> CandidateLogits:
        """Reshape the candidate logits (temperature, truncation); -inf removes a token."""
        ...

    def draw(
        self, probs: CandidateProbs, *, generator: torch.Generator | None = None
    ) -> CandidateTokens:
        """Pick one token per candidate position from its probabilities."""
        ...


@dataclass(frozen=True)
class TokenChoice(TokenChooser):
    """Greedy or tempered categorical choice with optional top-k and top-p truncation.

    Args:
        temperature: 0 picks the most likely token (greedy, the default of Dream, LLaDA and
            Omni-Diffusion); `> 0` divides the logits by it and draws from the softmax.
        top_k: keep only the `top_k` likeliest tokens (None: all).
        top_p: nucleus sampling: keep the likeliest tokens up to and including the first one
            at which their cumulative probability exceeds `top_p` (None or 1.0: all). The
            likeliest token is always kept.

    Raises:
        ValueError: negative temperature, `top_k < 1` or `top_p` outside `(0, 1]`.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or math.isinf(self.temperature):
            raise ValueError(f"temperature must be a finite number >= 0; got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None; got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] or be None; got {self.top_p}")

    def filter(self, logits: CandidateLogits) -> CandidateLogits:
        if self.temperature > 0:
            logits = logits / self.temperature
        if self.top_p is not None and self.top_p < 1:
            logits = _top_p(logits, self.top_p)
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        return logits

    def draw(
        self, probs: CandidateProbs, *, generator: torch.Generator | None = None
    ) -> CandidateTokens:
        if self.temperature == 0 or probs.shape[0] == 0:
            return probs.argmax(-1)
        picked = torch.multinomial(probs, 1, generator=generator)
        return rearrange(picked, "n 1 -> n")


def _top_p(logits: CandidateLogits, top_p: float) -> CandidateLogits:
    """Remove the tokens outside the nucleus of probability `top_p` (keep at least one)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    # drop a token once the tokens before it already reach top_p: shift right by one
    drop_sorted = torch.zeros_like(cumulative, dtype=torch.bool)
    drop_sorted[:, 1:] = cumulative[:, :-1] > top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)
