"""The sampler's parts one by one: penalties, token choice, planners."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from omni_blocks import VocabLayout
from omni_blocks.sampling import (
    BlockPlanner,
    ClassifierFreeGuidance,
    ConfidenceScorer,
    EntropyScorer,
    FixedCountPlanner,
    MarginScorer,
    MaskedDiffusionSampler,
    MaxProbScorer,
    NoPenalty,
    PositionPenalty,
    RandomScorer,
    SchedulePlanner,
    TailPenalty,
    ThresholdPlanner,
    TokenChoice,
    TokenChooser,
    UnmaskPlanner,
)
from omni_blocks.sampling.planners import select_top
from omni_blocks.schedules import LinearSchedule

# ------------------------------------------------------------------------------ protocols


@pytest.mark.parametrize(
    ("block", "protocol"),
    [
        (MaxProbScorer(), ConfidenceScorer),
        (MarginScorer(), ConfidenceScorer),
        (EntropyScorer(), ConfidenceScorer),
        (RandomScorer(), ConfidenceScorer),
        (NoPenalty(), PositionPenalty),
        (TailPenalty(), PositionPenalty),
        (SchedulePlanner(), UnmaskPlanner),
        (FixedCountPlanner(), UnmaskPlanner),
        (ThresholdPlanner(), UnmaskPlanner),
        (BlockPlanner(), UnmaskPlanner),
        (TokenChoice(), TokenChooser),
    ],
    ids=lambda b: type(b).__name__,
)
def test_blocks_implement_their_protocol(block: object, protocol: type) -> None:
    assert isinstance(block, protocol)


# ------------------------------------------------------------------------------ penalty


def upstream_penalty(logits: Tensor, strength: float) -> Tensor:
    """Omni-Diffusion's `max_position_penalty` rule, rows = the masked positions in order."""
    n = logits.shape[-2]
    if n <= 100:
        return logits
    ramp = [i / (n - 100) * (strength - 1.0) + 1.0 for i in range(n - 100)]
    factor = torch.cat([torch.ones(100), torch.tensor(ramp)]).unsqueeze(-1).expand_as(logits)
    out = logits.clone()
    out[logits < 0] *= factor[logits < 0]
    out[logits >= 0] /= factor[logits >= 0]
    return out


@pytest.mark.parametrize("n", [40, 101, 180])
def test_tail_penalty_matches_the_upstream_rule(n: int) -> None:
    logits = torch.randn(n, 9, generator=torch.Generator().manual_seed(n))
    index = torch.arange(n)
    length = torch.full((n,), n)
    ours = TailPenalty(strength=2.0).apply(logits.clone(), index, length)
    torch.testing.assert_close(ours, upstream_penalty(logits, 2.0))
    # the greedy token is unchanged
    assert torch.equal(ours.argmax(-1), logits.argmax(-1))
    # on positive logits it is a temperature: the confidence of tail positions drops
    positive = logits.abs() + 0.1
    penalised = TailPenalty().apply(positive.clone(), index, length)
    drop = positive.softmax(-1).amax(-1) - penalised.softmax(-1).amax(-1)
    assert (drop[:100] == 0).all()
    if n > 101:
        assert (drop[101:] > 0).all()


def test_tail_penalty_shape_parameters() -> None:
    index, length = torch.arange(10), torch.full((10,), 10)
    linear = TailPenalty(strength=3.0, free_positions=0).factor(index, length)
    torch.testing.assert_close(linear, 1 + 2 * index.float() / 10)
    steep = TailPenalty(strength=3.0, free_positions=0, exponent=2.0).factor(index, length)
    assert (steep <= linear).all() and steep[-1] < linear[-1]
    assert TailPenalty(strength=1.0).apply(torch.ones(3, 2), index[:3], length[:3]).eq(1).all()


def test_tail_penalty_unmasks_the_tail_last() -> None:
    # the tail is the most confident (like easy pad tokens): unpenalised it goes first
    layout = VocabLayout(text_size=4, speech_size=0, image_size=0)
    n = 130
    logits = torch.zeros(n, layout.vocab_size)
    logits[:, 1] = 3.0 + 0.01 * torch.arange(n)
    ids = torch.full((1, n), layout.mask_id)

    def order(penalty: PositionPenalty) -> Tensor:
        sampler = MaskedDiffusionSampler(planner=FixedCountPlanner(10), penalty=penalty)
        out = sampler(lambda x, m: logits.expand(len(x), -1, -1), ids, layout=layout)
        assert out.trajectory is not None
        return out.trajectory[0]

    assert order(NoPenalty())[-10:].eq(0).all()
    steps = order(TailPenalty(strength=2.0, free_positions=20))
    # penalised, the tail waits for the last steps (of 13); the middle goes first
    assert steps[-10:].min() >= int(steps.max()) - 2
    assert steps[20:30].eq(0).any()


def test_penalty_bad_parameters() -> None:
    with pytest.raises(ValueError, match="strength"):
        TailPenalty(strength=0.5)
    with pytest.raises(ValueError, match="free_positions"):
        TailPenalty(free_positions=-1)
    with pytest.raises(ValueError, match="exponent"):
        TailPenalty(exponent=0.0)


# ------------------------------------------------------------------------------ token choice


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5]])
    kept = TokenChoice(top_k=2).filter(logits)
    assert kept.columns is not None and kept.columns.tolist() == [[1, 4]]  # compact
    assert torch.isfinite(kept.dense(5)).tolist() == [[False, True, False, False, True]]


def test_top_k_keeps_ties_with_the_kth_like_upstream() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.0, 2.0, -1.0]])
    kept = TokenChoice(top_k=2).filter(logits).dense(5)
    assert torch.isfinite(kept).tolist() == [[False, True, True, True, False]]


def test_top_p_keeps_the_nucleus_like_upstream() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # cumulative 0.5, 0.8, 0.95, 1.0: top_p 0.8 keeps tokens until the cumulative exceeds it
    assert torch.isfinite(TokenChoice(top_p=0.8).filter(logits).dense(4)).tolist() == [
        [True, True, True, False]
    ]
    assert torch.isfinite(TokenChoice(top_p=0.4).filter(logits).dense(4)).tolist() == [
        [True, False, False, False]
    ]
    assert torch.equal(TokenChoice(top_p=1.0).filter(logits).logits, logits)


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.95])
@pytest.mark.parametrize("top_k", [None, 1, 5, 50])
def test_truncation_keeps_what_a_full_sort_keeps(top_p: float, top_k: int | None) -> None:
    # the nucleus search widens from the top tokens; compare with upstream's full sort
    # (sort_vocabulary=True runs upstream's steps), over flat and peaked rows, with ties
    gen = torch.Generator().manual_seed(0)
    for scale in (0.01, 0.1, 1.0, 3.0, 10.0, 30.0):
        logits = torch.randn(64, 300, generator=gen) * scale
        logits[:8] = logits[:8].round()  # ties
        fast = TokenChoice(top_p=top_p, top_k=top_k).filter(logits)
        slow = TokenChoice(top_p=top_p, top_k=top_k, sort_vocabulary=True).filter(logits)
        assert slow.columns is None
        assert torch.equal(torch.isfinite(fast.dense(300)), torch.isfinite(slow.logits))
        assert torch.equal(fast.dense(300), slow.logits)


def test_temperature_draws_follow_the_tempered_softmax() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]]).expand(20_000, -1)
    choice = TokenChoice(temperature=2.0)
    probs = choice.filter(logits).logits.softmax(-1)
    drawn = choice.draw(probs, generator=torch.Generator().manual_seed(0))
    expected = math.sqrt(3) / (1 + math.sqrt(3))  # p(1) at temperature 2
    assert abs(drawn.float().mean().item() - expected) < 0.015
    assert torch.equal(TokenChoice().draw(probs), torch.ones(20_000, dtype=torch.long))


def test_token_choice_bad_parameters() -> None:
    for kwargs in ({"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            TokenChoice(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        ClassifierFreeGuidance(-1.0)


# ------------------------------------------------------------------------------ planners


def test_select_top_takes_a_different_count_per_row() -> None:
    confidence = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.3, 0.2, 0.8, 0.6], [0.4, 0.1, 0.2, 0.3]])
    candidates = torch.tensor(
        [[True, True, True, True], [True, False, True, True], [False, False, False, False]]
    )
    chosen = select_top(confidence, candidates, torch.tensor([2, 5, 1]))
    assert chosen.tolist() == [
        [False, True, False, True],
        [True, False, True, True],  # count clipped to the 3 candidates
        [False, False, False, False],
    ]


@given(st.integers(1, 200), st.integers(1, 64))
def test_schedule_planner_ceil_is_llada_even_split(masked: int, num_steps: int) -> None:
    planner = SchedulePlanner(LinearSchedule(), num_steps, eps=0.0, rounding="ceil")
    remaining = torch.tensor([masked])
    base, remainder = divmod(masked, num_steps)
    llada = [base + (1 if i < remainder else 0) for i in range(num_steps)]
    ours = []
    for i in range(num_steps):
        n = planner.count(remaining, step=torch.tensor([i]), num_steps=torch.tensor([num_steps]))
        ours.append(int(n))
        remaining = remaining - n
    # LLaDA spends steps with zero tokens when steps > tokens; ours does not need them
    assert [c for c in ours if c] == [c for c in llada if c]
    assert int(remaining) == 0


def test_stochastic_rounding_is_binomial() -> None:
    planner = SchedulePlanner(LinearSchedule(), num_steps=4, eps=0.0, rounding="stochastic")
    remaining = torch.full((20_000,), 12)
    counts = planner.count(
        remaining,
        step=torch.zeros(20_000, dtype=torch.long),
        num_steps=torch.full((20_000,), 4),
        generator=torch.Generator().manual_seed(0),
    ).float()
    # first of 4 steps on the linear grid: each token revealed with probability 1/4
    assert abs(counts.mean().item() - 3.0) < 0.05
    assert abs(counts.var().item() - 12 * 0.25 * 0.75) < 0.1
    # the last step reveals everything
    last = planner.count(remaining[:3], step=torch.full((3,), 3), num_steps=torch.full((3,), 4))
    assert last.tolist() == [12, 12, 12]


def test_block_steps_split_the_budget() -> None:
    planner = BlockPlanner(SchedulePlanner(num_steps=64), block_length=32)
    blocks = planner.blocks(torch.tensor([[False] * 3 + [True] * 70]))
    assert blocks[0, :3].eq(-1).all()
    assert torch.bincount(blocks[0, 3:]).tolist() == [32, 32, 6]
    steps = planner.block_steps(torch.tensor([32, 32, 6]), torch.tensor([70, 70, 70]))
    assert steps.tolist() == [29, 29, 5]  # int(l / L * 64), Omni-Diffusion's rule
    assert FixedCountPlanner(4).block_steps(torch.tensor([9]), torch.tensor([9])).tolist() == [3]
    assert ThresholdPlanner().block_steps(torch.tensor([9]), torch.tensor([20])).tolist() == [9]


def test_planner_bad_parameters() -> None:
    with pytest.raises(ValueError, match="num_steps"):
        SchedulePlanner(num_steps=0)
    with pytest.raises(ValueError, match="eps"):
        SchedulePlanner(eps=1.0)
    with pytest.raises((TypeError, ValueError), match="rounding"):
        SchedulePlanner(rounding="round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokens_per_step"):
        FixedCountPlanner(0)
    with pytest.raises(ValueError, match="block_length"):
        BlockPlanner(block_length=0)
    with pytest.raises(ValueError, match="threshold"):
        ThresholdPlanner(float("nan"))
