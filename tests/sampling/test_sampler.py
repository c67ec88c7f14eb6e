"""MaskedDiffusionSampler end to end, with stand-in denoisers whose behaviour is known."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from omni_blocks import Modality, VocabLayout
from omni_blocks.sampling import (
    BlockPlanner,
    ClassifierFreeGuidance,
    EntropyScorer,
    FixedCountPlanner,
    MarginScorer,
    MaskedDiffusionSampler,
    MaxProbScorer,
    RandomScorer,
    Sampler,
    SchedulePlanner,
    ThresholdPlanner,
    TokenChoice,
    UnmaskPlanner,
    dream_sampler,
    fast_dllm_sampler,
    llada_sampler,
    omni_diffusion_sampler,
)
from omni_blocks.schedules import CosineSchedule, LinearSchedule

LAYOUT = VocabLayout(text_size=12, speech_size=6, image_size=10)
MASK = LAYOUT.mask_id
V = LAYOUT.vocab_size


class RandomModel:
    """Logits drawn from its own generator; records every input it sees."""

    def __init__(self, seed: int = 0, vocab: int = V) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.vocab = vocab
        self.inputs: list[Tensor] = []
        self.masks: list[Tensor | None] = []

    def __call__(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        self.inputs.append(ids.clone())
        self.masks.append(attention_mask)
        return torch.randn(*ids.shape, self.vocab, generator=self.gen)


class FixedModel:
    """Always the same logits for a position, whatever the input ("predicts one token")."""

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits  # (seq, vocab)
        self.calls = 0

    def __call__(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        self.calls += 1
        return self.logits.expand(ids.shape[0], -1, -1).clone()


def batch_with_ragged_rows() -> tuple[Tensor, Tensor, Tensor]:
    """Three rows: left-padded prompts of 3, 1 and 2 tokens; targets of 6, 8 and 4 masks."""
    pad = LAYOUT.pad_id
    rows = [
        [pad, pad, 1, 2, 3] + [MASK] * 6 + [pad] * 2,
        [pad, pad, pad, pad, 4] + [MASK] * 8,
        [pad, pad, pad, 5, 6] + [MASK] * 4 + [pad] * 4,
    ]
    ids = torch.tensor(rows)
    attention = ids != pad
    return ids, attention, ids == MASK


def test_the_sampler_implements_the_protocol() -> None:
    assert isinstance(MaskedDiffusionSampler(), Sampler)


@pytest.mark.parametrize(
    "planner",
    [
        SchedulePlanner(num_steps=4),
        SchedulePlanner(CosineSchedule(), num_steps=3, rounding="ceil"),
        SchedulePlanner(num_steps=5, rounding="stochastic"),
        FixedCountPlanner(3),
        ThresholdPlanner(0.5),
        BlockPlanner(SchedulePlanner(num_steps=4), block_length=3),
        BlockPlanner(ThresholdPlanner(0.2), block_length=2),
    ],
    ids=lambda p: type(p).__name__,
)
def test_every_target_is_unmasked_and_nothing_else_changes(planner: object) -> None:
    ids, attention, masked = batch_with_ragged_rows()
    model = RandomModel()
    sampler = MaskedDiffusionSampler(planner=planner, choice=TokenChoice(temperature=1.0))
    out = sampler(model, ids, layout=LAYOUT, attention_mask=attention, generator=torch.Generator())
    assert not (out.ids == MASK).any()
    assert torch.equal(out.ids[~masked], ids[~masked])
    assert out.nfe == len(model.inputs)
    assert out.trajectory is not None
    assert ((out.trajectory >= 0) == masked).all()
    # the model always saw the attention mask, and a written position never changes again
    assert all(m is attention for m in model.masks)
    for before, after in zip(model.inputs, model.inputs[1:], strict=False):
        written = before != MASK
        assert torch.equal(after[written], before[written])


def test_schedule_planner_takes_num_steps_forward_passes() -> None:
    ids, attention, _ = batch_with_ragged_rows()
    model = RandomModel()
    out = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=4))(
        model, ids, layout=LAYOUT, attention_mask=attention
    )
    assert out.nfe == 4
    assert out.trajectory is not None and int(out.trajectory.max()) == 3


def dream_counts(remaining: int, num_steps: int, eps: float = 1e-3) -> list[int]:
    """Dream's `number_transfer_tokens` rule, written out independently."""
    timesteps = [1 + i * (eps - 1) / num_steps for i in range(num_steps + 1)]
    counts = []
    for i in range(num_steps):
        t, s = timesteps[i], timesteps[i + 1]
        n = math.floor(remaining * (1 - s / t)) if i < num_steps - 1 else remaining
        n = min(max(n, 1), remaining) if remaining else 0
        counts.append(n)
        remaining -= n
    return counts


def llada_counts(masked: int, num_steps: int) -> list[int]:
    """LLaDA's `get_num_transfer_tokens`: an even split, remainder first."""
    base, remainder = divmod(masked, num_steps)
    return [base + (1 if i < remainder else 0) for i in range(num_steps)]


def per_step_counts(trajectory: Tensor, num_steps: int) -> list[list[int]]:
    return [
        torch.bincount(row[row >= 0], minlength=num_steps)[:num_steps].tolist()
        for row in trajectory
    ]


def test_each_step_unmasks_exactly_the_planned_count_dream() -> None:
    ids, attention, masked = batch_with_ragged_rows()
    out = MaskedDiffusionSampler(planner=SchedulePlanner(LinearSchedule(), num_steps=4))(
        RandomModel(), ids, layout=LAYOUT, attention_mask=attention
    )
    assert out.trajectory is not None
    expected = [dream_counts(int(n), 4) for n in masked.sum(-1)]
    assert per_step_counts(out.trajectory, 4) == expected


def test_each_step_unmasks_exactly_the_planned_count_llada() -> None:
    ids, attention, masked = batch_with_ragged_rows()
    sampler = llada_sampler(num_steps=4, block_length=None)
    out = sampler(RandomModel(), ids, layout=LAYOUT, attention_mask=attention)
    assert out.trajectory is not None
    expected = [llada_counts(int(n), 4) for n in masked.sum(-1)]
    assert per_step_counts(out.trajectory, 4) == expected


def test_blocks_are_decoded_left_to_right_with_their_share_of_steps() -> None:
    ids, attention, masked = batch_with_ragged_rows()
    # LLaDA: 8 steps for 8 target positions in blocks of 4 -> 4 steps per block
    sampler = llada_sampler(num_steps=8, block_length=4)
    out = sampler(RandomModel(), ids, layout=LAYOUT, attention_mask=attention)
    assert out.trajectory is not None
    for row, mask in zip(out.trajectory, masked, strict=True):
        steps = row[mask]
        blocks = torch.arange(len(steps)) // 4
        for b in range(int(blocks.max())):
            assert steps[blocks == b].max() < steps[blocks == b + 1].min()
        # a block of l of the row's L target positions gets min(8 * l // L, l) steps and
        # splits its tokens evenly over them, remainder first (LLaDA)
        for b in range(int(blocks.max()) + 1):
            in_block = steps[blocks == b]
            share = min(8 * len(in_block) // len(steps), len(in_block))
            counts = torch.bincount(in_block - in_block.min()).tolist()
            assert counts == llada_counts(len(in_block), share)


def test_threshold_planner_uses_fewer_passes_on_a_confident_model() -> None:
    ids, attention, _ = batch_with_ragged_rows()
    logits = torch.full((ids.shape[1], V), -10.0)
    logits[:, 3] = 10.0  # p(token 3) ~ 1 everywhere
    confident = FixedModel(logits)
    fast = MaskedDiffusionSampler(planner=ThresholdPlanner(0.9))(
        confident, ids, layout=LAYOUT, attention_mask=attention
    )
    slow = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=8))(
        confident, ids, layout=LAYOUT, attention_mask=attention
    )
    assert fast.nfe == 1 < slow.nfe == 8
    assert torch.equal(fast.ids, slow.ids)
    # inside blocks of 4 positions: one pass per block
    blocks = fast_dllm_sampler(block_length=4)(
        confident, ids, layout=LAYOUT, attention_mask=attention
    )
    assert blocks.nfe == 2


def test_threshold_planner_falls_back_to_one_token_per_step() -> None:
    ids = torch.tensor([[1] + [MASK] * 5])
    flat = FixedModel(torch.zeros(6, V))  # uniform: nothing reaches the threshold
    out = MaskedDiffusionSampler(planner=ThresholdPlanner(0.9))(flat, ids, layout=LAYOUT)
    assert out.nfe == 5
    assert out.trajectory is not None
    assert sorted(out.trajectory[0, 1:].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("modality", [Modality.IMAGE, Modality.SPEECH, Modality.TEXT])
def test_generated_ids_stay_in_the_target_modality(modality: Modality) -> None:
    ids, attention, masked = batch_with_ragged_rows()
    out = MaskedDiffusionSampler(choice=TokenChoice(temperature=2.0))(
        RandomModel(vocab=V + 7),  # a padded output head: the extra rows are never written
        ids,
        layout=LAYOUT,
        modality=modality,
        attention_mask=attention,
        generator=torch.Generator().manual_seed(1),
    )
    generated = out.ids[masked]
    allowed = LAYOUT.logit_mask(modality)
    assert allowed[generated].all()
    assert LAYOUT.is_modality(generated, modality).any()


def test_guidance_with_a_modality_restriction() -> None:
    ids, attention, masked = batch_with_ragged_rows()
    out = MaskedDiffusionSampler(
        planner=SchedulePlanner(num_steps=3), guidance=ClassifierFreeGuidance(1.5)
    )(LookupModel(), ids, layout=LAYOUT, modality=Modality.IMAGE, attention_mask=attention)
    assert out.nfe == 6
    assert LAYOUT.logit_mask(Modality.IMAGE)[out.ids[masked]].all()


def test_mask_id_is_never_written_even_if_the_model_prefers_it() -> None:
    logits = torch.zeros(4, V)
    logits[:, MASK] = 50.0
    out = MaskedDiffusionSampler()(
        FixedModel(logits), torch.tensor([[1, MASK, MASK, MASK]]), layout=LAYOUT
    )
    assert not (out.ids == MASK).any()


def test_known_tokens_inside_the_target_are_kept() -> None:
    # inpainting: the target holds known image tokens between masked ones
    image = LAYOUT.to_global(torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]), Modality.IMAGE)
    ids = torch.cat([torch.tensor([1, LAYOUT.begin_id(Modality.IMAGE)]), image]).unsqueeze(0)
    target = torch.zeros_like(ids, dtype=torch.bool)
    target[0, 2:] = True
    ids[0, [3, 5, 6, 9]] = MASK
    model = RandomModel()
    out = MaskedDiffusionSampler(planner=BlockPlanner(SchedulePlanner(num_steps=4), 4))(
        model, ids, layout=LAYOUT, modality=Modality.IMAGE, target_mask=target
    )
    known = ids != MASK
    assert torch.equal(out.ids[known], ids[known])
    for seen in model.inputs:
        assert torch.equal(seen[known], ids[known])
    assert out.trajectory is not None
    # blocks count target positions: block 0 = positions 2..5, block 1 = positions 6..9
    assert out.trajectory[0, [3, 5]].max() < out.trajectory[0, [6, 9]].min()


def test_same_seed_same_output_and_different_seeds_differ() -> None:
    ids, attention, _ = batch_with_ragged_rows()
    sampler = MaskedDiffusionSampler(
        planner=SchedulePlanner(num_steps=3, rounding="stochastic"),
        scorer=RandomScorer(),
        choice=TokenChoice(temperature=1.0, top_k=8, top_p=0.9),
    )

    def run(seed: int) -> Tensor:
        out = sampler(
            RandomModel(seed=5),
            ids,
            layout=LAYOUT,
            attention_mask=attention,
            generator=torch.Generator().manual_seed(seed),
        )
        assert out.trajectory is not None
        return torch.cat([out.ids, out.trajectory])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def scorer_order(scorer: object, probs: Tensor) -> list[int]:
    """Positions (1-based, after the 1-token prompt) in the order the sampler unmasks them."""
    n = probs.shape[0]
    logits = torch.full((n + 1, V), -math.inf)
    logits[1:, : probs.shape[1]] = probs.log()
    ids = torch.tensor([[1] + [MASK] * n])
    out = MaskedDiffusionSampler(planner=FixedCountPlanner(1), scorer=scorer)(  # type: ignore[arg-type]
        FixedModel(logits), ids, layout=LAYOUT, generator=torch.Generator().manual_seed(3)
    )
    assert out.nfe == n and out.trajectory is not None
    return (out.trajectory[0, 1:].argsort() + 1).tolist()


# Per position, a distribution over four tokens; the scorers disagree on their order.
PROBS = torch.tensor(
    [
        [0.50, 0.50, 0.00, 0.00],  # max 0.50, margin 0.00, entropy 0.69
        [0.60, 0.10, 0.10, 0.20],  # max 0.60, margin 0.40, entropy 1.09
        [0.55, 0.45, 0.00, 0.00],  # max 0.55, margin 0.10, entropy 0.69 (-0.005)
        [0.90, 0.04, 0.03, 0.03],  # max 0.90, margin 0.86, entropy 0.41
        [0.40, 0.20, 0.20, 0.20],  # max 0.40, margin 0.20, entropy 1.33
    ]
)


def test_max_prob_scorer_unmasks_the_likeliest_token_first() -> None:
    expected = (PROBS.max(-1).values.argsort(descending=True) + 1).tolist()
    assert expected == [4, 2, 3, 1, 5]
    assert scorer_order(MaxProbScorer(), PROBS) == expected


def test_margin_scorer_unmasks_the_widest_gap_first() -> None:
    top2 = PROBS.topk(2, dim=-1).values
    expected = ((top2[:, 0] - top2[:, 1]).argsort(descending=True) + 1).tolist()
    assert expected == [4, 2, 5, 3, 1]
    assert scorer_order(MarginScorer(), PROBS) == expected


def test_entropy_scorer_unmasks_the_lowest_entropy_first() -> None:
    p = PROBS.clamp(min=1e-30)
    entropy = -(PROBS * p.log()).sum(-1)
    expected = (entropy.argsort() + 1).tolist()
    assert expected == [4, 3, 1, 2, 5]
    assert scorer_order(EntropyScorer(), PROBS) == expected


def test_random_scorer_ignores_the_model() -> None:
    order = scorer_order(RandomScorer(), PROBS)
    assert sorted(order) == [1, 2, 3, 4, 5]
    # the same seed gives the same order whatever the probabilities say
    assert scorer_order(RandomScorer(), PROBS.flip(0)) == order


def test_classifier_free_guidance_masks_the_prompt_and_mixes_logits() -> None:
    seen: list[Tensor] = []

    def model(ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        seen.append(ids.clone())
        logits = torch.zeros(*ids.shape, V)
        prompt_visible = (ids[:, :1] != MASK).float()  # (rows, 1)
        # conditional rows prefer token 2 slightly; unconditional rows prefer token 2 more and
        # token 5 less, so guidance (which amplifies cond - uncond) turns to token 5
        logits[..., 2] = 1.0 + 1.0 * (1 - prompt_visible)
        logits[..., 5] = 0.9 - 1.0 * (1 - prompt_visible)
        return logits

    ids = torch.tensor([[1, 7, MASK, MASK], [3, MASK, MASK, MASK]])
    plain = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=2))(model, ids, layout=LAYOUT)
    assert (plain.ids[ids == MASK] == 2).all() and plain.nfe == 2
    seen.clear()
    guided = MaskedDiffusionSampler(
        planner=SchedulePlanner(num_steps=2), guidance=ClassifierFreeGuidance(scale=1.0)
    )(model, ids, layout=LAYOUT)
    assert (guided.ids[ids == MASK] == 5).all()
    assert guided.nfe == 4
    first = seen[0]
    assert first.shape[0] == 4
    assert torch.equal(first[:2], ids)
    # the unconditional copy masks the prompt (everything outside the target)
    assert (first[2:][ids != MASK] == MASK).all()


class LookupModel:
    """Logits that depend on the input: a fixed table row per token plus one per position."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(4)
        self.table = torch.randn(V, V, generator=gen)
        self.position = torch.randn(64, V, generator=gen)

    def __call__(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return self.table[ids] + self.position[: ids.shape[1]]


def test_guidance_scale_zero_is_the_conditional_model() -> None:
    ids, attention, _ = batch_with_ragged_rows()
    plain = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=3))(
        LookupModel(), ids, layout=LAYOUT, attention_mask=attention
    )
    guided = MaskedDiffusionSampler(
        planner=SchedulePlanner(num_steps=3), guidance=ClassifierFreeGuidance(0.0)
    )(LookupModel(), ids, layout=LAYOUT, attention_mask=attention)
    assert guided.nfe == 2 * plain.nfe == 6
    assert torch.equal(plain.ids, guided.ids)
    assert plain.trajectory is not None and guided.trajectory is not None
    assert torch.equal(plain.trajectory, guided.trajectory)


def test_nothing_to_fill_returns_the_input() -> None:
    ids = torch.tensor([[1, 2, 3]])
    model = RandomModel()
    out = MaskedDiffusionSampler()(model, ids, layout=LAYOUT)
    assert torch.equal(out.ids, ids) and out.nfe == 0 and not model.inputs


def test_progress_bar_is_off_by_default_and_shows_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids = torch.tensor([[1, MASK, MASK]])
    MaskedDiffusionSampler()(RandomModel(), ids, layout=LAYOUT)
    assert capsys.readouterr().err == ""
    MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=2), progress=True)(
        RandomModel(), ids, layout=LAYOUT
    )
    assert "2/2" in capsys.readouterr().err


@pytest.mark.parametrize(
    "factory",
    [dream_sampler, llada_sampler, fast_dllm_sampler, omni_diffusion_sampler],
)
def test_presets_fill_every_mask(factory: object) -> None:
    ids, attention, masked = batch_with_ragged_rows()
    sampler = factory()  # type: ignore[operator]
    assert isinstance(sampler, MaskedDiffusionSampler)
    out = sampler(
        RandomModel(),
        ids,
        layout=LAYOUT,
        attention_mask=attention,
        generator=torch.Generator().manual_seed(0),
    )
    assert not (out.ids == MASK).any() and torch.equal(out.ids[~masked], ids[~masked])


def test_presets_carry_the_published_settings() -> None:
    # Dream's README settings, with the top-k 50 its generation config inherits and its
    # arithmetic (float32 grid, a step may reveal nothing, no cap on the steps)
    dream = dream_sampler()
    assert dream.scorer == EntropyScorer(epsilon=1e-10)
    assert dream.choice == TokenChoice(temperature=0.2, top_p=0.95, top_k=50)
    assert dream.planner == SchedulePlanner(
        num_steps=512, eps=1e-3, rounding="floor", min_tokens=0, cap_steps=False,
        arithmetic="float32",
    )  # fmt: skip
    assert not dream.ban_mask and not dream.restrict_to_modality
    origin = dream_sampler(alg="origin")
    assert isinstance(origin.planner, SchedulePlanner) and origin.planner.rounding == "bernoulli"
    with pytest.raises((TypeError, ValueError), match="alg"):
        dream_sampler(alg="nope")  # type: ignore[arg-type]
    llada = llada_sampler(guidance_scale=0.5)
    assert llada.planner == BlockPlanner(
        SchedulePlanner(num_steps=128, eps=0.0, rounding="ceil"), 32
    )
    assert isinstance(llada.scorer, MaxProbScorer) and llada.guidance == ClassifierFreeGuidance(0.5)
    fast = fast_dllm_sampler()
    assert fast.planner == BlockPlanner(ThresholdPlanner(0.9), 32)
    omni = omni_diffusion_sampler(260, position_penalty=2.0, guidance_scale=2.0)
    assert omni.scorer == EntropyScorer(epsilon=1e-10)
    assert omni.choice == TokenChoice(temperature=0.0, top_p=0.9, top_k=50)
    assert omni.guidance == ClassifierFreeGuidance(2.0)
    assert type(omni.penalty).__name__ == "TailPenalty"
    assert isinstance(omni.planner, SchedulePlanner) and omni.planner.min_tokens == 1


# ------------------------------------------------------------------------------ bad input


def run(ids: object, **kwargs: object) -> None:
    MaskedDiffusionSampler()(RandomModel(), ids, layout=LAYOUT, **kwargs)  # type: ignore[arg-type]


def test_bad_ids_are_rejected() -> None:
    with pytest.raises((TypeError, ValueError), match=r"integer|Int"):
        run(torch.tensor([[1.0, float(MASK)]]))
    with pytest.raises((TypeError, ValueError), match=r"2-d|batch seq"):
        run(torch.tensor([1, MASK]))
    with pytest.raises(ValueError, match=f"id {V} lies outside"):
        run(torch.tensor([[V, MASK]]))


def test_bad_masks_are_rejected() -> None:
    ids = torch.tensor([[1, MASK, MASK]])
    with pytest.raises((TypeError, ValueError), match=r"shape|seq"):
        run(ids, target_mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises((TypeError, ValueError), match=r"bool|Bool"):
        run(ids, attention_mask=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside `target_mask`"):
        run(ids, target_mask=torch.tensor([[False, False, True]]))
    with pytest.raises(ValueError, match="padding"):
        run(ids, attention_mask=torch.tensor([[True, True, False]]))


def test_bad_modality_is_rejected() -> None:
    ids = torch.tensor([[1, MASK]])
    with pytest.raises((TypeError, ValueError), match=r"modality|Modality"):
        run(ids, modality="smell")
    text_only = VocabLayout(text_size=5, speech_size=0, image_size=0)
    with pytest.raises(ValueError, match="no image ids"):
        MaskedDiffusionSampler()(
            RandomModel(vocab=text_only.vocab_size),
            torch.tensor([[1, text_only.mask_id]]),
            layout=text_only,
            modality=Modality.IMAGE,
        )


def test_bad_model_output_is_rejected() -> None:
    ids = torch.tensor([[1, MASK]])
    with pytest.raises((TypeError, ValueError), match="logits"):
        MaskedDiffusionSampler()(lambda x, m: torch.zeros(1, 3, V), ids, layout=LAYOUT)
    with pytest.raises(ValueError, match="resize"):
        MaskedDiffusionSampler()(RandomModel(vocab=V - 1), ids, layout=LAYOUT)


def test_a_planner_that_stalls_is_reported() -> None:
    class Lazy(UnmaskPlanner):
        def block_steps(self, block_length: Tensor, target_length: Tensor) -> Tensor:
            return block_length.clamp(min=1)

        def select(self, confidence: Tensor, candidates: Tensor, **kwargs: object) -> Tensor:
            return torch.zeros_like(candidates)

    with pytest.raises(RuntimeError, match="left 2 position"):
        MaskedDiffusionSampler(planner=Lazy())(
            RandomModel(), torch.tensor([[1, MASK, MASK]]), layout=LAYOUT
        )
