"""Unmask planners: how many (and which) masked positions a sampler reveals at each step.

A planner sees the confidence of every candidate position (positions still masked in the
current block) and returns the positions to unmask now. Three things make up a plan:

- the *blocks* of the target region (semi-autoregressive decoding): a sampler finishes
  block 0 of a row before it unmasks anything in block 1; plain planners use one block;
- the *step budget* of a block (`block_steps`): the steps the block is given;
- the *selection* at one step: the `k` most confident candidates for count planners, every
  candidate above a threshold for the threshold planner.

| planner | tokens per step | mirrors |
|---|---|---|
| `SchedulePlanner`, floor | `floor(r (1 - m(s)/m(t)))`, >= 1 | Dream, Omni-Diffusion |
| `SchedulePlanner`, ceil, `eps=0` | `ceil(r / steps left)` | LLaDA |
| `SchedulePlanner`, stochastic | `Binomial(r, 1 - m(s)/m(t))` | Dream `origin`, MDLM |
| `FixedCountPlanner` | `k` | fixed parallelism |
| `ThresholdPlanner` | all with confidence `>= tau`, >= 1 | Fast-dLLM |
| `BlockPlanner` | the inner planner's, block by block | LLaDA / Dream blocks |

(`r`: masked candidates left in the row's block; `m`: the schedule's `mask_prob`; `t`, `s`:
the times of the step, see `SchedulePlanner`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.schedules import LinearSchedule, NoiseSchedule
from omni_blocks.typing import SeqFloat, SeqMask

__all__ = [
    "BlockIndex",
    "BlockPlanner",
    "FixedCountPlanner",
    "RowCounts",
    "RowSteps",
    "SchedulePlanner",
    "ThresholdPlanner",
    "UnmaskPlanner",
    "select_top",
    "single_block",
]

RowCounts = Int[Tensor, " rows"]
"""One integer per row (or per row and block): lengths, steps, counts."""

BlockIndex = Int[Tensor, "batch seq"]
"""The block of each position of the target region; -1 outside the target."""

RowSteps = Int[Tensor, " batch"]
"""One integer per row of the batch: a step, a step budget or a count.

Custom planners should annotate with these very aliases: LightningCLI (jsonargparse) checks
that a `class_path` implements a protocol by comparing annotations."""


@runtime_checkable
class UnmaskPlanner(Protocol):
    """The interface every unmask planner implements."""

    def blocks(self, target: SeqMask) -> BlockIndex:
        """Split each row's target region into blocks decoded one after another.

        Returns the 0-based block of every target position (numbered left to right) and -1
        elsewhere. Planners without blocks return 0 on the whole target
        ([`single_block`][omni_blocks.sampling.planners.single_block]).
        """
        ...

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        """Steps given to a block of `block_length` target positions in a target region of
        `target_length` positions (elementwise); an upper bound for adaptive planners."""
        ...

    def select(
        self,
        confidence: SeqFloat,
        candidates: SeqMask,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> SeqMask:
        """Positions to unmask now.

        Args:
            confidence: the scorer's confidence at candidate positions (-inf elsewhere).
            candidates: positions still masked in each row's current block.
            step: 0-based step of each row within its current block.
            num_steps: step budget of each row's current block (`block_steps(...)`).
            generator: random source for stochastic planners.

        Returns:
            A subset of `candidates`; at least one position per row that has candidates, and
            all of them once `step >= num_steps - 1` for budgeted planners.
        """
        ...


def single_block(target: SeqMask) -> BlockIndex:
    """The whole target region as block 0 (-1 elsewhere)."""
    return torch.where(target, 0, -1)


def select_top(confidence: SeqFloat, candidates: SeqMask, count: RowSteps) -> SeqMask:
    """The `count[b]` most confident candidates of each row `b`, without a per-row loop.

    One `topk` of the largest count over all rows, then only the first `count[b]` picks of
    row `b` are kept. Counts larger than a row's number of candidates are clipped.
    """
    count = torch.minimum(count, candidates.sum(-1))
    k = int(count.max()) if count.numel() else 0
    chosen = torch.zeros_like(candidates)
    if k == 0:
        return chosen
    scores = confidence.masked_fill(~candidates, -math.inf)
    picks = scores.topk(k, dim=-1).indices
    keep = torch.arange(k, device=count.device) < count.unsqueeze(-1)
    return chosen.scatter(-1, picks, keep) & candidates


def _at_least_one(count: RowSteps, remaining: RowSteps) -> Tensor:
    return torch.where(remaining > 0, count.clamp(min=1), count)


@dataclass(frozen=True)
class SchedulePlanner(UnmaskPlanner):
    """Unmask as many tokens per step as a noise schedule moves from masked to clean.

    The steps walk diffusion time down Dream's grid `t_i = linspace(1, eps, num_steps + 1)[i]`.
    At step `i` (from `t = t_i` to `s = t_{i+1}`) a masked token stays masked with probability
    `mask_prob(s) / mask_prob(t)`, so of the `r` masked candidates the planner reveals

    - `rounding="floor"`: `floor(r * (1 - mask_prob(s) / mask_prob(t)))`, at least one
      (Dream's and Omni-Diffusion's `number_transfer_tokens`, with the linear schedule);
    - `rounding="ceil"`: the same fraction rounded up. With `eps=0` and the linear schedule
      the fraction is `1 / (num_steps - i)`, so this is exactly LLaDA's
      `get_num_transfer_tokens` (an even split, remainder first);
    - `rounding="stochastic"`: a binomial draw with that probability (Dream's `origin` and
      MDLM's ancestral sampler, together with
      [`RandomScorer`][omni_blocks.sampling.scorers.RandomScorer]); a step may reveal none.

    and everything left at the last step. Inside a
    [`BlockPlanner`][omni_blocks.sampling.planners.BlockPlanner] `num_steps` is the total over
    all blocks: a block of `l` of the target's `L` positions gets `num_steps * l // L` steps
    (at least one), which is LLaDA's `steps // num_blocks` and Omni-Diffusion's
    `int(l / L * steps)`. A block never gets more steps than positions (Omni-Diffusion's
    `min(steps, max_new_tokens)`): with deterministic rounding such extra steps would reveal
    nothing (Dream and LLaDA still run them), with stochastic rounding they would only stretch
    the time grid.

    Args:
        schedule: the noise schedule whose `mask_prob` sets the pace; None means
            [`LinearSchedule`][omni_blocks.schedules.LinearSchedule] (Dream, LLaDA). (None
            rather than a `LinearSchedule()` default keeps the block buildable from LightningCLI
            config: jsonargparse cannot tell which class a nested plain-dataclass default is.)
        num_steps: number of steps (forward passes without guidance) for the whole target.
        eps: the last time of the grid (Dream: 1e-3).
        rounding: how a fractional count becomes a number of tokens (see above).

    Raises:
        ValueError: `num_steps < 1`, `eps` outside `[0, 1)` or an unknown `rounding`.
    """

    schedule: NoiseSchedule | None = None
    num_steps: int = 128
    eps: float = 1e-3
    rounding: Literal["floor", "ceil", "stochastic"] = "floor"

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {self.num_steps}")
        if not 0 <= self.eps < 1:
            raise ValueError(f"eps must lie in [0, 1); got {self.eps}")
        if self.rounding not in ("floor", "ceil", "stochastic"):
            raise ValueError(
                f"rounding must be 'floor', 'ceil' or 'stochastic'; got {self.rounding!r}"
            )

    @property
    def noise_schedule(self) -> NoiseSchedule:
        """The schedule in use (`schedule`, or the linear schedule when it is None)."""
        return LinearSchedule() if self.schedule is None else self.schedule

    def blocks(self, target: SeqMask) -> BlockIndex:
        return single_block(target)

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        share = self.num_steps * block_length // target_length.clamp(min=1)
        # never more steps than positions (Omni-Diffusion: steps = min(steps, max_new_tokens))
        return torch.minimum(share, block_length).clamp(min=1)

    def times(self, step: RowSteps, num_steps: RowSteps) -> tuple[Tensor, Tensor]:
        """Times `(t, s)` of each row's step on the grid `linspace(1, eps, num_steps + 1)`."""
        # float64 so that LLaDA's exact even split survives the rounding (MPS has no float64)
        dtype = torch.float32 if step.device.type == "mps" else torch.float64
        num_steps = num_steps.clamp(min=1)
        step = torch.minimum(step, num_steps - 1).to(dtype)
        width = (1.0 - self.eps) / num_steps.to(dtype)
        t = (1.0 - step * width).clamp(0.0, 1.0)
        s = (1.0 - (step + 1) * width).clamp(0.0, 1.0)
        return t, s

    def count(
        self,
        remaining: RowSteps,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> RowSteps:
        """How many of the `remaining` masked candidates each row reveals at `step`."""
        t, s = self.times(step, num_steps)
        # one call for both times: each schedule call validates its input
        mask_t, mask_s = self.noise_schedule.mask_prob(torch.stack([t, s]))
        keep = mask_s / mask_t.clamp(min=1e-12)
        reveal = (1.0 - keep).clamp(0.0, 1.0)
        expected = remaining.to(reveal.dtype) * reveal
        if self.rounding == "floor":
            count = _at_least_one(expected.floor().long(), remaining)
        elif self.rounding == "ceil":
            # a tolerance so that 2.0000000001 (float error on an exact 2) is still 2
            count = _at_least_one((expected - 1e-9).ceil().long(), remaining)
        else:
            count = torch.binomial(remaining.to(reveal.dtype), reveal, generator=generator).long()
        count = torch.where(step >= num_steps - 1, remaining, count)
        return torch.minimum(count, remaining)

    def select(
        self,
        confidence: SeqFloat,
        candidates: SeqMask,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> SeqMask:
        remaining = candidates.sum(-1)
        count = self.count(remaining, step=step, num_steps=num_steps, generator=generator)
        return select_top(confidence, candidates, count)


@dataclass(frozen=True)
class FixedCountPlanner(UnmaskPlanner):
    """Unmask the `tokens_per_step` most confident candidates at every step.

    A target of `L` masked positions takes `ceil(L / tokens_per_step)` steps; 1 token per step
    is the fully sequential order (as many steps as tokens).

    Raises:
        ValueError: `tokens_per_step < 1`.
    """

    tokens_per_step: int = 1

    def __post_init__(self) -> None:
        if self.tokens_per_step < 1:
            raise ValueError(f"tokens_per_step must be >= 1; got {self.tokens_per_step}")

    def blocks(self, target: SeqMask) -> BlockIndex:
        return single_block(target)

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        k = self.tokens_per_step
        return ((block_length + k - 1) // k).clamp(min=1)

    def select(
        self,
        confidence: SeqFloat,
        candidates: SeqMask,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> SeqMask:
        count = torch.full_like(step, self.tokens_per_step)
        return select_top(confidence, candidates, count)


@dataclass(frozen=True)
class ThresholdPlanner(UnmaskPlanner):
    """Fast-dLLM's confidence-aware parallel decoding: unmask every confident candidate.

    At each step every candidate whose confidence is at least `threshold` is unmasked, and
    always the single most confident one, so every step makes progress (Wu et al., 2025,
    "Fast-dLLM", `get_transfer_index` with `threshold`; their experiments use 0.9 with
    LLaDA's `low_confidence` score, i.e.
    [`MaxProbScorer`][omni_blocks.sampling.scorers.MaxProbScorer], inside blocks of 32).
    The number of steps adapts to the model: a confident model finishes in far fewer steps
    than there are tokens. `num_steps` only bounds it (one token per step).

    Args:
        threshold: the confidence at or above which a candidate is unmasked. Its scale is the
            scorer's: a probability for max-prob and margin, a negative entropy (<= 0) for
            the entropy scorer.

    Raises:
        ValueError: `threshold` is NaN.
    """

    threshold: float = 0.9

    def __post_init__(self) -> None:
        if math.isnan(self.threshold):
            raise ValueError("threshold must be a number, got NaN")

    def blocks(self, target: SeqMask) -> BlockIndex:
        return single_block(target)

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        return block_length.clamp(min=1)

    def select(
        self,
        confidence: SeqFloat,
        candidates: SeqMask,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> SeqMask:
        confident = candidates & (confidence >= self.threshold)
        best = select_top(confidence, candidates, torch.ones_like(step))
        return confident | best


@dataclass(frozen=True)
class BlockPlanner(UnmaskPlanner):
    """Semi-autoregressive decoding: the target in blocks of `block_length`, left to right.

    Each row's target region (its positions counted left to right, prompt excluded) is cut
    into blocks of `block_length` positions; the sampler only unmasks positions of a row's
    first block that still has masked positions, and the inner `planner` decides how many
    per step, with the block's share of the step budget. LLaDA's `block_length` (its chat
    demo: 32 of 128 generated tokens), Dream's / Omni-Diffusion's `block_size`, and the
    blocks of Fast-dLLM. A block with no masked position takes no step.

    Args:
        planner: the planner used inside each block.
        block_length: positions per block (the last block of a row may be shorter).

    Raises:
        ValueError: `block_length < 1`.
    """

    planner: UnmaskPlanner = SchedulePlanner()
    block_length: int = 32

    def __post_init__(self) -> None:
        if self.block_length < 1:
            raise ValueError(f"block_length must be >= 1; got {self.block_length}")

    def blocks(self, target: SeqMask) -> BlockIndex:
        rank = target.long().cumsum(-1) - 1
        return torch.where(target, rank // self.block_length, -1)

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        return self.planner.block_steps(block_length, target_length)

    def select(
        self,
        confidence: SeqFloat,
        candidates: SeqMask,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> SeqMask:
        return self.planner.select(
            confidence, candidates, step=step, num_steps=num_steps, generator=generator
        )
