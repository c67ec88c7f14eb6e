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
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from einops import rearrange

from omni_blocks.sampling.penalties import CandidateLogits
from omni_blocks.sampling.scorers import CandidateProbs, CandidateTokens

__all__ = ["TokenChoice", "TokenChooser"]


class TokenChooser(ABC):
    """The interface of a token choice: filter logits, then draw from probabilities."""

    @abstractmethod
    def filter(self, logits: CandidateLogits) -> CandidateLogits:
        """Reshape the candidate logits (temperature, truncation); -inf removes a token."""

    @abstractmethod
    def draw(
        self, probs: CandidateProbs, *, generator: torch.Generator | None = None
    ) -> CandidateTokens:
        """Pick one token per candidate position from its probabilities."""


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
        sort_vocabulary: find the nucleus as Dream's and Omni-Diffusion's `top_p_logits` do
            (sort the whole row, softmax the sorted logits, cumulative sum), so that the
            token at the boundary is the same to the bit. Off, the nucleus is searched among
            the top 8, then 64 tokens first, which keeps the same tokens except where the
            cumulative sum at the boundary differs from upstream's in its last bit, and is
            many times faster for a trained model's short nuclei.

    Raises:
        ValueError: negative temperature, `top_k < 1` or `top_p` outside `(0, 1]`.
    """

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    sort_vocabulary: bool = False

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
            nucleus = _sorted_top_p if self.sort_vocabulary else _top_p
            logits = nucleus(logits, self.top_p)
        if self.top_k is not None and self.top_k < logits.shape[-1]:
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        return logits

    def draw(
        self, probs: CandidateProbs, *, generator: torch.Generator | None = None
    ) -> CandidateTokens:
        if self.temperature == 0 or probs.shape[0] == 0:
            # max(-1).indices: several times faster than argmax on CPU
            return probs.max(-1).indices
        # inverse-CDF sampling: one uniform number per position instead of one per token
        # (torch.multinomial and Gumbel-max draw n x vocab random numbers, which costs more
        # than the rest of a sampling step on CPU). Drawing u below the row's total and
        # searching for the first cumulative sum above it never lands on a zero-probability
        # token.
        cdf = probs.cumsum(-1)
        u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device)
        picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
        return rearrange(picked, "n 1 -> n").clamp(max=probs.shape[-1] - 1)


def _sorted_top_p(logits: CandidateLogits, top_p: float) -> CandidateLogits:
    """The nucleus by upstream's own steps: sort, softmax of the sorted logits, cumulative
    sum, drop the tokens after the first one past `top_p`."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop = cumulative > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
    drop[..., 0] = False
    return logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)


def _top_p(logits: CandidateLogits, top_p: float) -> CandidateLogits:
    """Remove the tokens outside the nucleus of probability `top_p` (keep at least one).

    Upstream sorts the whole vocabulary; a trained model's nucleus is usually a handful of
    tokens, so this looks at the top 8, then the top 64, and sorts only the rows whose
    nucleus is not complete yet. The kept set is the same: a token is dropped once the
    likelier tokens exceed `top_p`. (Near-uniform rows, as from an untrained model, still
    cost a full sort.)
    """
    probs = logits.softmax(-1)
    vocab = probs.shape[-1]
    keep = torch.zeros_like(probs, dtype=torch.bool)
    todo = torch.arange(probs.shape[0], device=probs.device)
    k = 8
    while todo.numel():
        k = min(k, vocab)
        top, index = probs.index_select(0, todo).topk(k, dim=-1)
        cumulative = top.cumsum(-1)
        done = cumulative[:, -1] > top_p if k < vocab else torch.ones_like(todo, dtype=torch.bool)
        kept = torch.ones_like(top, dtype=torch.bool)
        kept[:, 1:] = cumulative[:, :-1] <= top_p
        rows = todo[done]
        keep[rows] = keep[rows].scatter(-1, index[done], kept[done])
        todo = todo[~done]
        k = vocab if k >= 64 else k * 8
    return logits.masked_fill(~keep, -math.inf)
