"""Unmask planners: how many masked positions a sampler reveals per step, and which.

A planner does two things:

1. once per sampling run, [`plan`][omni_blocks.sampling.planners.UnmaskPlanner.plan] cuts each
   row's target region into blocks and gives each block a budget of steps: a
   [`Plan`][omni_blocks.sampling.planners.Plan];
2. at every step, [`select`][omni_blocks.sampling.planners.UnmaskPlanner.select] picks, among
   the *candidates* (the positions still masked in each row's current block, which the plan
   names), the ones to unmask now, from the scorer's confidence.

| planner | tokens per step | mirrors |
|---|---|---|
| `SchedulePlanner`, floor | `floor(r (1 - m(s)/m(t)))`, >= 1 | Omni-Diffusion |
| `SchedulePlanner`, floor, `min_tokens=0` | the same, may be 0 | Dream |
| `SchedulePlanner`, ceil, `eps=0` | `ceil(r / steps left)` | LLaDA |
| `SchedulePlanner`, stochastic | `Binomial(r, 1 - m(s)/m(t))` | MDLM |
| `SchedulePlanner`, bernoulli | each candidate with `1 - m(s)/m(t)` | Dream `origin` |
| `FixedCountPlanner` | `k` | fixed parallelism |
| `ThresholdPlanner` | all with confidence `>= tau`, >= 1 | Fast-dLLM |
| `BlockPlanner` | the inner planner's, block by block | LLaDA / Dream blocks |

(`r`: masked candidates left in the row's block; `m`: the schedule's `mask_prob`; `t`, `s`:
the times of the step, see `SchedulePlanner`.)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.schedules import LinearSchedule, NoiseSchedule
from omni_blocks.typing import SeqFloat, SeqMask

__all__ = [
    "BlockIndex",
    "BlockPlanner",
    "FixedCountPlanner",
    "Plan",
    "PlanStep",
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
"""One integer per row of the batch: a step, a step budget or a count."""


@dataclass
class PlanStep:
    """What the plan says about the current step.

    Attributes:
        candidates: the positions still masked in each row's current block.
        step: each row's 0-based step within its current block.
        num_steps: each row's step budget of its current block (1 for finished rows).
        block: every position of each row's current block, masked or not (what a key/value
            cache recomputes); empty for finished rows.
    """

    candidates: SeqMask
    step: RowSteps
    num_steps: RowSteps
    block: SeqMask


class Plan:
    """Blocks and step budgets of one sampling run, made once by a planner.

    The sampler calls [`advance`][omni_blocks.sampling.planners.Plan.advance] at every step;
    the plan walks each row through its blocks, left to right: a row works on its first block
    that still holds a masked position, and its step count restarts when it moves to the next
    block.

    Args:
        block_of: the block of every target position (-1 outside the target).
        budget: steps of each row's blocks, `(batch, blocks)`; 0 for a block without a
            masked position.
    """

    def __init__(self, block_of: BlockIndex, budget: Int[Tensor, "batch blocks"]) -> None:
        self.block_of = block_of
        self.budget = budget
        self.num_blocks = int(budget.shape[-1])
        self._current = torch.full(budget.shape[:1], -1, dtype=torch.long, device=budget.device)
        self._step = torch.zeros_like(self._current)

    @property
    def max_steps(self) -> int:
        """Steps of the longest row: an upper bound for adaptive planners."""
        return int(self.budget.sum(-1).max()) if self.budget.numel() else 0

    def advance(self, masked: SeqMask) -> PlanStep:
        """The candidates, step and budget of every row for the step about to run."""
        block = torch.where(masked, self.block_of, self.num_blocks).amin(-1)
        self._step = torch.where(block == self._current, self._step + 1, 0)
        self._current = block
        in_block = self.block_of == block.unsqueeze(-1)
        num_steps = self.budget.gather(-1, block.clamp(max=self.num_blocks - 1).unsqueeze(-1))
        # a finished row has no block left: budget 1 keeps the planners' arithmetic finite
        return PlanStep(
            masked & in_block, self._step.clone(), num_steps.squeeze(-1).clamp(min=1), in_block
        )

    def restart(self) -> None:
        """Forget the walk (the next `advance` starts every row at step 0)."""
        self._current.fill_(-1)
        self._step.zero_()


def single_block(target_mask: SeqMask) -> BlockIndex:
    """The whole target region as block 0 (-1 elsewhere)."""
    return torch.where(target_mask, 0, -1)


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


class UnmaskPlanner(ABC):
    """The interface every unmask planner implements."""

    def plan(self, target_mask: SeqMask, masked: SeqMask) -> Plan:
        """Blocks and per-block step budgets of a sampling run (called once per run).

        A block without a masked position gets no step.
        """
        block_of = self.blocks(target_mask)
        rows = block_of.shape[0]
        num_blocks = int(block_of.max()) + 1 if block_of.numel() else 1
        index = block_of.clamp(min=0)
        positions = torch.zeros(rows, num_blocks, dtype=torch.long, device=block_of.device)
        positions.scatter_add_(-1, index, target_mask.long())
        holes = torch.zeros_like(positions).scatter_add_(-1, index, (masked & target_mask).long())
        target_length = target_mask.sum(-1, keepdim=True).expand(rows, num_blocks)
        steps = self.block_steps(positions.flatten(), target_length.flatten())
        return Plan(block_of, torch.where(holes > 0, steps.view(rows, num_blocks), 0))

    def blocks(self, target_mask: SeqMask) -> BlockIndex:
        """Split each row's target region into blocks decoded one after another.

        Returns the 0-based block of every target position (numbered left to right) and -1
        elsewhere; by default the whole target is one block
        ([`single_block`][omni_blocks.sampling.planners.single_block]).
        """
        return single_block(target_mask)

    @abstractmethod
    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        """Steps given to a block of `block_length` target positions in a target region of
        `target_length` positions (elementwise); an upper bound for adaptive planners."""

    @abstractmethod
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
            num_steps: step budget of each row's current block.
            generator: random source for stochastic planners.

        Returns:
            A subset of `candidates`; all of them once `step >= num_steps - 1` for budgeted
            planners.
        """


def _at_least(count: RowSteps, remaining: RowSteps, minimum: int) -> Tensor:
    return torch.where(remaining > 0, count.clamp(min=minimum), count)


@dataclass(frozen=True)
class SchedulePlanner(UnmaskPlanner):
    """Unmask as many tokens per step as a noise schedule moves from masked to clean.

    The steps walk diffusion time down Dream's grid `t_i = linspace(1, eps, num_steps + 1)[i]`.
    At step `i` (from `t = t_i` to `s = t_{i+1}`) a masked token stays masked with probability
    `mask_prob(s) / mask_prob(t)`, so of the `r` masked candidates the planner reveals

    - `rounding="floor"`: `floor(r * (1 - mask_prob(s) / mask_prob(t)))`, at least
      `min_tokens` (Omni-Diffusion's `number_transfer_tokens`: at least 1; Dream's: at least
      0, so a step may reveal nothing);
    - `rounding="ceil"`: the same fraction rounded up. With `eps=0` and the linear schedule
      the fraction is `1 / (num_steps - i)`, so this is exactly LLaDA's
      `get_num_transfer_tokens` (an even split, remainder first);
    - `rounding="stochastic"`: a binomial draw with that probability (MDLM's ancestral
      sampler, with [`RandomScorer`][omni_blocks.sampling.scorers.RandomScorer]); a step may
      reveal none;
    - `rounding="bernoulli"`: every candidate independently with that probability, one
      uniform draw per candidate in row-major order: Dream's `alg="origin"` draw for draw
      (the confidence is ignored);

    and everything left at the last step. Inside a
    [`BlockPlanner`][omni_blocks.sampling.planners.BlockPlanner] `num_steps` is the total over
    all blocks: a block of `l` of the target's `L` positions gets `num_steps * l // L` steps
    (at least one), which is LLaDA's `steps // num_blocks` and Omni-Diffusion's
    `int(l / L * steps)`. With `cap_steps` a block never gets more steps than positions
    (Omni-Diffusion's `min(steps, max_new_tokens)`); Dream has no such cap.

    Args:
        schedule: the noise schedule whose `mask_prob` sets the pace (Dream, LLaDA: linear).
        num_steps: number of steps (forward passes without guidance) for the whole target.
        eps: the last time of the grid (Dream: 1e-3).
        rounding: how a fractional count becomes a number of tokens (see above).
        min_tokens: the fewest tokens a deterministic rounding reveals while candidates are
            left (1: every step makes progress; Dream: 0).
        cap_steps: never give a block more steps than it has positions.
        arithmetic: `"exact"`: times and counts in float64; `"float32"`: the time grid is
            `torch.linspace(1, eps, steps + 1)` in float32 and counts are
            `int(r * (1 - m(s) / m(t)))` in float32, exactly as Dream's and
            Omni-Diffusion's code computes them (a count can then be one off the exact
            value).

    Raises:
        ValueError: `num_steps < 1`, `eps` outside `[0, 1)`, an unknown `rounding` or
            `arithmetic`, or a negative `min_tokens`.
    """

    schedule: NoiseSchedule = LinearSchedule()  # noqa: RUF009 (frozen, shared safely)
    num_steps: int = 128
    eps: float = 1e-3
    rounding: Literal["floor", "ceil", "stochastic", "bernoulli"] = "floor"
    min_tokens: int = 1
    cap_steps: bool = True
    arithmetic: Literal["exact", "float32"] = "exact"

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1; got {self.num_steps}")
        if not 0 <= self.eps < 1:
            raise ValueError(f"eps must lie in [0, 1); got {self.eps}")
        if self.rounding not in ("floor", "ceil", "stochastic", "bernoulli"):
            raise ValueError(
                "rounding must be 'floor', 'ceil', 'stochastic' or 'bernoulli'; got "
                f"{self.rounding!r}"
            )
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be >= 0; got {self.min_tokens}")
        if self.arithmetic not in ("exact", "float32"):
            raise ValueError(f"arithmetic must be 'exact' or 'float32'; got {self.arithmetic!r}")

    def block_steps(self, block_length: RowCounts, target_length: RowCounts) -> RowCounts:
        share = self.num_steps * block_length // target_length.clamp(min=1)
        if self.cap_steps:
            # Omni-Diffusion: steps = min(steps, max_new_tokens)
            share = torch.minimum(share, block_length)
        return share.clamp(min=1)

    def times(self, step: RowSteps, num_steps: RowSteps) -> tuple[Tensor, Tensor]:
        """Times `(t, s)` of each row's step on the grid `linspace(1, eps, num_steps + 1)`."""
        num_steps = num_steps.clamp(min=1)
        step = torch.minimum(step, num_steps - 1)
        if self.arithmetic == "float32":
            # torch.linspace's own values, per distinct budget (upstream calls it the same way)
            t = torch.empty(step.shape, dtype=torch.float32, device=step.device)
            s = torch.empty_like(t)
            for n in num_steps.unique().tolist():
                grid = torch.linspace(1, self.eps, n + 1, device=step.device)
                rows = num_steps == n
                t[rows] = grid[step[rows]]
                s[rows] = grid[step[rows] + 1]
            return t, s
        # float64 so that LLaDA's exact even split survives the rounding (MPS has no float64)
        dtype = torch.float32 if step.device.type == "mps" else torch.float64
        width = (1.0 - self.eps) / num_steps.to(dtype)
        t = (1.0 - step.to(dtype) * width).clamp(0.0, 1.0)
        s = (1.0 - (step + 1).to(dtype) * width).clamp(0.0, 1.0)
        return t, s

    def reveal_probability(self, step: RowSteps, num_steps: RowSteps) -> Tensor:
        """`1 - mask_prob(s) / mask_prob(t)`: the chance a masked token is revealed now."""
        t, s = self.times(step, num_steps)
        # one call for both times: each schedule call validates its input
        mask_t, mask_s = self.schedule.mask_prob(torch.stack([t, s]))
        keep = mask_s / mask_t.clamp(min=1e-12)
        return (1.0 - keep).clamp(0.0, 1.0)

    def count(
        self,
        remaining: RowSteps,
        *,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None = None,
    ) -> RowSteps:
        """How many of the `remaining` masked candidates each row reveals at `step`."""
        reveal = self.reveal_probability(step, num_steps)
        expected = remaining.to(reveal.dtype) * reveal
        if self.rounding == "floor":
            count = _at_least(expected.floor().long(), remaining, self.min_tokens)
        elif self.rounding == "ceil":
            # a tolerance so that 2.0000000001 (float error on an exact 2) is still 2
            count = _at_least((expected - 1e-9).ceil().long(), remaining, self.min_tokens)
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
        if self.rounding == "bernoulli":
            return self._bernoulli(candidates, step, num_steps, generator)
        remaining = candidates.sum(-1)
        count = self.count(remaining, step=step, num_steps=num_steps, generator=generator)
        return select_top(confidence, candidates, count)

    def _bernoulli(
        self,
        candidates: SeqMask,
        step: RowSteps,
        num_steps: RowSteps,
        generator: torch.Generator | None,
    ) -> SeqMask:
        reveal = self.reveal_probability(step, num_steps)
        last = step >= num_steps - 1
        reveal = torch.where(last, torch.ones_like(reveal), reveal)
        # one draw per candidate, row-major (Dream: torch.rand(*x[mask_index].shape))
        where = candidates.flatten().nonzero().squeeze(-1)
        draw_device = generator.device if generator is not None else candidates.device
        u = torch.rand(where.shape, generator=generator, device=draw_device).to(reveal.device)
        row = where // candidates.shape[-1]
        # Dream compares the float32 draw with the float32 probability; `last` reveals all
        chosen = u < reveal[row].to(u.dtype) if self.arithmetic == "float32" else u < reveal[row]
        chosen = chosen | last[row]
        out = torch.zeros_like(candidates)
        out.view(-1)[where] = chosen
        return out


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
    than there are tokens. The plan's budget (one token per step) only bounds it.

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

    def blocks(self, target_mask: SeqMask) -> BlockIndex:
        rank = target_mask.long().cumsum(-1) - 1
        return torch.where(target_mask, rank // self.block_length, -1)

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
