"""Token choice: which token a sampler writes at a position it unmasks.

The choice runs in two halves around the position penalty, in Omni-Diffusion's / Dream's
order (`sample_tokens`): `filter` scales the logits by the temperature and applies top-p,
then top-k; the sampler applies the position penalty and the softmax; `draw` picks a token
from the probabilities (greedy at temperature 0, a categorical draw otherwise). The scorers
then read those same probabilities, so top-k / top-p also change the confidence even at
temperature 0 (as upstream).

After top-k or top-p only a few tokens per position keep a probability above zero, so
`filter` returns just those (a [`FilteredLogits`][omni_blocks.sampling.choice.FilteredLogits]
with the columns they came from): the penalty, the softmax, the draw and the scorer then
work on a few dozen columns instead of the whole vocabulary. Upstream sorts the whole
vocabulary at every step to find the nucleus; `TokenChoice` finds the same tokens from a
partial top-k and falls back to the full sort only for rows where the cumulative
probability lies within `1e-4` of the `top_p` boundary (see `TokenChoice`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Int
from torch import Tensor

from omni_blocks.sampling.penalties import CandidateLogits
from omni_blocks.sampling.scorers import CandidateProbs, CandidateTokens

__all__ = ["NUCLEUS_MARGIN", "FilteredLogits", "TokenChoice", "TokenChooser"]

NUCLEUS_MARGIN = 1e-4
"""How far a cumulative probability must lie from `top_p` for the fast nucleus search to
decide a row; closer rows are sorted the way upstream sorts them (its cumulative sum and
ours add the same probabilities in different orders, which moves the last bits)."""


@dataclass
class FilteredLogits:
    """The candidates' logits after temperature, top-p and top-k.

    Attributes:
        logits: `(n, k)` logits; -inf marks a removed token.
        columns: the column of the unfiltered logits each of the `k` entries came from,
            `(n, k)`, in descending order of logit; None when `logits` keeps every column
            (no truncation, or a fallback to the full width).
    """

    logits: CandidateLogits
    columns: Int[Tensor, "n k"] | None = None

    def token_columns(self, picked: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """Columns of the unfiltered logits of entries picked in `logits`."""
        if self.columns is None:
            return picked
        return self.columns.gather(-1, picked.unsqueeze(-1)).squeeze(-1)

    def dense(self, width: int) -> CandidateLogits:
        """The logits over all `width` columns, -inf at every removed token."""
        if self.columns is None:
            return self.logits
        out = self.logits.new_full((self.logits.shape[0], width), -math.inf)
        # the entries past a row's kept tokens are -inf padding whose columns may repeat
        rows, entries = (self.logits > -math.inf).nonzero(as_tuple=True)
        out[rows, self.columns[rows, entries]] = self.logits[rows, entries]
        return out


class TokenChooser(ABC):
    """The interface of a token choice: filter logits, then draw from probabilities."""

    @abstractmethod
    def filter(self, logits: CandidateLogits) -> FilteredLogits:
        """Reshape the candidate logits (temperature, truncation); -inf removes a token.
        May return only the columns that keep a finite logit."""

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
        top_k: keep only the `top_k` likeliest tokens (None: all); a token tied with the
            `top_k`-th is kept too (upstream's `logits < kth` rule).
        top_p: nucleus sampling: keep the likeliest tokens up to and including the first one
            at which their cumulative probability exceeds `top_p` (None or 1.0: all). The
            likeliest token is always kept. Top-p runs before top-k, as upstream.
        sort_vocabulary: find the nucleus exactly as Dream's and Omni-Diffusion's
            `top_p_logits` do (sort the whole row, softmax the sorted logits, cumulative
            sum) and keep every column, so that the probabilities equal upstream's to the
            bit; slow. Off (the default), the same tokens are kept (a partial top-k decides
            each row whose cumulative probability lies further than `NUCLEUS_MARGIN` from
            `top_p`, the full sort the others) and only they are returned: their
            probabilities then differ from upstream's in the last bits.

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

    def filter(self, logits: CandidateLogits) -> FilteredLogits:
        if self.temperature > 0 and self.temperature != 1:
            logits = logits / self.temperature
        width = logits.shape[-1]
        top_p = self.top_p if self.top_p is not None and self.top_p < 1 else None
        top_k = self.top_k if self.top_k is not None and self.top_k < width else None
        if top_p is None and top_k is None:
            return FilteredLogits(logits)
        if self.sort_vocabulary:
            if top_p is not None:
                logits = _sorted_top_p(logits, top_p)
            if top_k is not None:
                logits = _masked_top_k(logits, top_k)
            return FilteredLogits(logits)
        return _truncate(logits, top_p, top_k)

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


def _masked_top_k(logits: CandidateLogits, top_k: int) -> CandidateLogits:
    """Upstream's `top_k_logits`: -inf below the `top_k`-th largest logit."""
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def _truncate(logits: CandidateLogits, top_p: float | None, top_k: int | None) -> FilteredLogits:
    """Top-p, then top-k, on the few likeliest tokens of each row.

    Each row is decided from its `k` likeliest tokens, `k` growing (1, 8, 64 or `top_k + 1`)
    until the row is decided; a row is decided when its kept set is certain: the nucleus
    boundary lies inside the `k` tokens with the cumulative probability at least
    `NUCLEUS_MARGIN` away from `top_p` on both sides and no tie across it, or the `top_k`
    cut comes first (and is not a tie). Rows left over take upstream's full sort, and then
    every row is returned at full width.
    """
    n, width = logits.shape
    count = torch.zeros(n, dtype=torch.long, device=logits.device)
    order = torch.zeros(n, 0, dtype=torch.long, device=logits.device)
    probs = logits.softmax(-1) if top_p is not None else logits
    todo = torch.arange(n, device=logits.device)
    best: Tensor | None = None
    sizes = [1, 8, 64] if top_p is not None else []
    if top_k is not None:
        sizes = [k for k in sizes if k <= top_k] + [top_k + 1]
    if top_p is not None and top_p + NUCLEUS_MARGIN >= 0.5 and sizes and sizes[0] == 1:
        # a token above top_p is the nucleus on its own (and cannot be tied); amax first,
        # the (slower) argmax only of those rows
        best = probs.amax(-1)
        alone = best > top_p + NUCLEUS_MARGIN
        count = alone.long()
        order = torch.zeros(n, 1, dtype=torch.long, device=logits.device)
        if bool(alone.any()):
            order[alone, 0] = probs[alone].max(-1).indices
        todo = todo[~alone]
    for k in sizes:
        if k == 1 or todo.numel() == 0:
            continue
        k = min(k, width)
        rows = todo
        if best is not None and k < width and (top_k is None or k <= top_k):
            # k tokens of at most `best` each cannot pass top_p: no point looking at k
            rows = todo[best[todo] * k > (top_p or 0.0)]
            if rows.numel() == 0:
                continue
        rows_probs = probs if rows.numel() == n else probs.index_select(0, rows)
        top, index = rows_probs.topk(k, dim=-1)
        kept = _decide(top, top_p, top_k, complete=k == width)
        decided = kept > 0
        rows = rows[decided]
        if rows.numel():
            if order.shape[1] < k:
                order = torch.nn.functional.pad(order, (0, k - order.shape[1]))
            order[rows, :k] = index[decided]
            count[rows] = kept[decided]
        todo = todo[~torch.isin(todo, rows)]
    if todo.numel():
        return _full_width(logits, top_p, top_k, todo, order, count)
    keep = int(count.max()) if n else 0
    columns = order[:, :keep]
    kept_logits = logits.gather(-1, columns)
    beyond = torch.arange(keep, device=logits.device) >= count.unsqueeze(-1)
    return FilteredLogits(kept_logits.masked_fill(beyond, -math.inf), columns)


def _decide(
    top: Tensor, top_p: float | None, top_k: int | None, complete: bool
) -> Int[Tensor, " rows"]:
    """How many of the sorted `top` values each row keeps; 0 where `top` cannot tell."""
    rows, k = top.shape
    positions = torch.arange(k, device=top.device)
    # a tie with the next token: which of the tied tokens a sort keeps is the sort's choice
    tie = torch.zeros_like(top, dtype=torch.bool)
    tie[:, :-1] = top[:, :-1] == top[:, 1:]
    unseen = torch.zeros_like(tie)
    unseen[:, -1] = not complete  # the token after the last one is not in view
    decided_k = torch.zeros(rows, dtype=torch.long, device=top.device)
    if top_k is not None and top_k < k:
        # top-k keeps the first top_k if they are all inside the nucleus and the cut is clean
        clean = ~tie[:, top_k - 1]
        if top_p is not None:
            cumulative = top.cumsum(-1)
            inside = (
                cumulative[:, top_k - 2] <= top_p - NUCLEUS_MARGIN
                if top_k >= 2
                else torch.ones_like(clean)
            )
            clean = clean & inside
        decided_k = torch.where(clean, top_k, 0)
    if top_p is None:
        return decided_k
    cumulative = top.cumsum(-1)
    above = cumulative > top_p
    found = above.any(-1)
    first = torch.where(found, above.float().argmax(-1), k - 1)
    at = cumulative.gather(-1, first.unsqueeze(-1)).squeeze(-1)
    before = cumulative.gather(-1, (first - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    clear = (at > top_p + NUCLEUS_MARGIN) & ((first == 0) | (before <= top_p - NUCLEUS_MARGIN))
    cut = positions.unsqueeze(0) == first.unsqueeze(-1)
    clean = ~((tie | unseen) & cut).any(-1)
    nucleus = torch.where(found & clear & clean, first + 1, 0)
    if complete:
        # every token is in view: a row that never passes top_p keeps them all
        everything = ~found & (cumulative[:, -1] <= top_p - NUCLEUS_MARGIN)
        nucleus = torch.where(everything, k, nucleus)
    if top_k is not None:
        # top-k after top-p: a nucleus larger than top_k is cut to top_k (cleanly)
        over = nucleus > top_k
        cut_clean = ~tie[:, min(top_k, k) - 1] if top_k <= k else torch.ones_like(over)
        nucleus = torch.where(over, torch.where(cut_clean, top_k, 0), nucleus)
        nucleus = torch.where(nucleus > 0, nucleus, decided_k)
    return nucleus


def _full_width(
    logits: CandidateLogits,
    top_p: float | None,
    top_k: int | None,
    todo: Tensor,
    order: Tensor,
    count: Tensor,
) -> FilteredLogits:
    """Every column: the decided rows keep their tokens, the rows in `todo` are filtered by
    upstream's full sort."""
    keep = torch.zeros_like(logits, dtype=torch.bool)
    decided = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    decided[todo] = False
    if order.shape[1]:
        take = torch.arange(order.shape[1], device=logits.device) < count.unsqueeze(-1)
        rows, entries = (take & decided.unsqueeze(-1)).nonzero(as_tuple=True)
        keep[rows, order[rows, entries]] = True
    out = logits.masked_fill(~keep, -math.inf)
    rest = logits.index_select(0, todo)
    if top_p is not None:
        rest = _sorted_top_p(rest, top_p)
    if top_k is not None:
        rest = _masked_top_k(rest, top_k)
    out[todo] = rest
    return FilteredLogits(out)
