from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_blocks.masking import (
    AttenuatedTailPadMasking,
    Corruption,
    FullSequenceMasking,
    MaskStrategy,
    PerTokenTimeMasking,
    SpanMasking,
    UniformMasking,
    check_corruption_inputs,
)
from omni_blocks.schedules import (
    CosineSchedule,
    LinearSchedule,
    LogLinearSchedule,
    NoiseSchedule,
    PolynomialSchedule,
)
from omni_blocks.vocab import VocabLayout

LAYOUT = VocabLayout(text_size=100, speech_size=20, image_size=30)
PAD = LAYOUT.pad_id
MASK = LAYOUT.mask_id

REGION_STRATEGIES: list[MaskStrategy] = [
    UniformMasking(),
    AttenuatedTailPadMasking(),
    AttenuatedTailPadMasking(pad_mask_ratio=0.0, pad_loss_weight=0.25),
    SpanMasking(),
    SpanMasking(mean_span_length=1.0),
    SpanMasking(mean_span_length=30.0),
]
ALL_STRATEGIES = [*REGION_STRATEGIES, FullSequenceMasking()]
schedules = st.sampled_from(
    [LinearSchedule(), CosineSchedule(), PolynomialSchedule(2.0), LogLinearSchedule()]
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of content ids, a prompt prefix (not target_mask), then a tail of pad tokens."""
    batch = draw(st.integers(1, 6))
    seq = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, LAYOUT.text_size, (batch, seq), generator=g)
    prompt = torch.randint(0, seq + 1, (batch, 1), generator=g)
    pads = torch.randint(0, seq + 1, (batch, 1), generator=g)
    pos = torch.arange(seq)
    ids = torch.where(pos >= seq - pads, torch.full_like(ids, PAD), ids)
    target_mask = pos >= prompt
    t = torch.tensor(draw(st.lists(st.floats(0, 1, width=32), min_size=batch, max_size=batch)))
    return ids, target_mask, t


def corrupt(
    strategy: MaskStrategy,
    ids: torch.Tensor,
    target_mask: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    seed: int = 0,
) -> Corruption:
    g = torch.Generator().manual_seed(seed)
    return strategy(ids, target_mask, t, schedule=schedule, layout=LAYOUT, generator=g)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=repr)
@given(batches(), schedules, st.integers(0, 2**31))
def test_mask_is_consistent_and_prompt_never_masked(
    strategy: MaskStrategy,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    schedule: NoiseSchedule,
    seed: int,
) -> None:
    ids, target_mask, t = batch
    out = corrupt(strategy, ids, target_mask, t, schedule, seed)
    assert isinstance(strategy, MaskStrategy)
    assert out.mask.dtype == torch.bool and out.mask.shape == ids.shape
    assert torch.equal(out.noisy_ids == MASK, out.mask)
    assert torch.equal(out.noisy_ids[~out.mask], ids[~out.mask])
    if not isinstance(strategy, FullSequenceMasking):
        assert not bool(out.mask[~target_mask].any()), "a prompt token was masked"
    # t = 1 under a schedule with alpha(1) = 0 masks everything it may; t = 0 masks nothing
    ends = torch.tensor([0.0, 1.0]).repeat(ids.shape[0], 1)
    for col, expected in ((0, 0.0), (1, 1.0)):
        tt = ends[:, col]
        if float(schedule.mask_prob(tt[:1])) != expected:
            continue
        m = corrupt(strategy, ids, target_mask, tt, schedule, seed).mask
        region = (
            torch.ones_like(target_mask)
            if isinstance(strategy, FullSequenceMasking)
            else target_mask
        )
        if expected == 0.0:
            assert not bool(m.any())
        elif not isinstance(strategy, AttenuatedTailPadMasking):
            assert torch.equal(m, region)
        else:
            assert bool(m[region & (ids != PAD)].all())


@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=repr)
@given(batches(), st.integers(0, 2**31))
def test_same_generator_same_mask(
    strategy: MaskStrategy, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], seed: int
) -> None:
    ids, target_mask, t = batch
    a = corrupt(strategy, ids, target_mask, t, LinearSchedule(), seed)
    b = corrupt(strategy, ids, target_mask, t, LinearSchedule(), seed)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.noisy_ids, b.noisy_ids)


def test_different_seeds_give_different_masks() -> None:
    ids = torch.randint(0, 100, (4, 256), generator=torch.Generator().manual_seed(0))
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    t = torch.full((4,), 0.5)
    for strategy in ALL_STRATEGIES:
        a = corrupt(strategy, ids, target_mask, t, LinearSchedule(), 1).mask
        b = corrupt(strategy, ids, target_mask, t, LinearSchedule(), 2).mask
        assert not torch.equal(a, b), strategy


def _tolerance(p: float, n: int, corr: float = 1.0) -> float:
    """Five standard deviations of a mean of `n` Bernoulli(p), inflated by `corr`.

    Plus three counts (scaled by `corr`): for tiny `n p` the count is Poisson, not normal, and
    one masked token alone would exceed five standard deviations.
    """
    return 5 * math.sqrt(max(p * (1 - p), 1e-12) * corr / n) + 3 * corr / n


@pytest.mark.parametrize("strategy", [UniformMasking(), FullSequenceMasking()], ids=repr)
@given(schedules, st.floats(0, 1, width=32), st.integers(0, 2**31))
def test_empirical_mask_ratio_matches_mask_prob(
    strategy: MaskStrategy, schedule: NoiseSchedule, t0: float, seed: int
) -> None:
    batch, seq = 32, 256
    ids = torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(seed))
    target_mask = torch.arange(seq).expand(batch, seq) >= 16
    t = torch.full((batch,), t0)
    mask = corrupt(strategy, ids, target_mask, t, schedule, seed).mask
    p = float(schedule.mask_prob(t[:1]))
    region = (
        torch.ones_like(target_mask) if isinstance(strategy, FullSequenceMasking) else target_mask
    )
    n = int(region.sum())
    assert abs(float(mask[region].float().mean()) - p) <= _tolerance(p, n)


@given(
    schedules,
    st.floats(0, 1, width=32),
    st.floats(1.0, 40.0),
    st.integers(0, 2**31),
)
def test_span_masking_ratio_matches_mask_prob(
    schedule: NoiseSchedule, t0: float, span: float, seed: int
) -> None:
    batch, seq = 32, 256
    ids = torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(seed))
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    t = torch.full((batch,), t0)
    mask = corrupt(SpanMasking(span), ids, target_mask, t, schedule, seed).mask
    p = float(schedule.mask_prob(t[:1]))
    # the Markov chain's autocorrelation decays as lambda^k, lambda = 1 - q - r; the variance
    # of the mean of a stationary chain grows by (1 + lambda) / (1 - lambda)
    q = min(1.0, p / (span * (1 - p))) if p < 1 else 1.0
    r = 1.0 / span if p < span / (span + 1) else (1 - p) / max(p, 1e-12)
    lam = 1 - q - r
    corr = (1 + lam) / max(1 - lam, 1e-12)
    assert abs(float(mask.float().mean()) - p) <= _tolerance(p, mask.numel(), corr)


def test_span_masking_makes_spans_of_the_requested_mean_length() -> None:
    batch, seq, span = 64, 512, 6.0
    ids = torch.zeros(batch, seq, dtype=torch.long)
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    t = torch.full((batch,), 0.3)
    mask = corrupt(SpanMasking(span), ids, target_mask, t, LinearSchedule(), 3).mask
    starts = mask[:, 1:] & ~mask[:, :-1]
    n_spans = int(starts.sum() + mask[:, 0].sum())
    mean_length = float(mask.sum()) / n_spans
    # runs cut by the row end are shorter; allow for them
    assert 0.85 * span < mean_length < 1.1 * span
    iid = corrupt(UniformMasking(), ids, target_mask, t, LinearSchedule(), 3).mask
    iid_starts = int((iid[:, 1:] & ~iid[:, :-1]).sum() + iid[:, 0].sum())
    assert float(iid.sum()) / iid_starts < 2.0


@pytest.mark.parametrize("ratio", [0.6, 0.0, 0.25, 1.0])
@given(schedules, st.floats(0, 1, width=32), st.integers(0, 2**31))
def test_pad_masking_rate_follows_the_attenuation(
    ratio: float, schedule: NoiseSchedule, t0: float, seed: int
) -> None:
    batch, seq, n_pad = 32, 256, 128
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (batch, seq), generator=g)
    ids[:, seq - n_pad :] = PAD
    target_mask = torch.arange(seq).expand(batch, seq) >= 8
    t = torch.full((batch,), t0)
    strategy = AttenuatedTailPadMasking(pad_mask_ratio=ratio)
    mask = corrupt(strategy, ids, target_mask, t, schedule, seed).mask
    p = float(schedule.mask_prob(t[:1]))
    is_pad = ids == PAD
    content = target_mask & ~is_pad
    pad_rate = float(mask[is_pad].float().mean())
    content_rate = float(mask[content].float().mean())
    assert abs(pad_rate - ratio * p) <= _tolerance(ratio * p, int(is_pad.sum()))
    assert abs(content_rate - p) <= _tolerance(p, int(content.sum()))
    probs = strategy.mask_probs(ids, target_mask, t, schedule=schedule, pad_id=PAD)
    torch.testing.assert_close(probs[is_pad], torch.full_like(probs[is_pad], ratio * p))
    assert bool((probs[~target_mask] == 0).all())


def test_pad_loss_weight_lands_in_corruption() -> None:
    ids = torch.tensor([[5, 6, PAD, PAD]])
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    t = torch.ones(1)
    out = corrupt(AttenuatedTailPadMasking(1.0, 0.25), ids, target_mask, t, LinearSchedule())
    assert out.loss_weight is not None
    assert out.loss_weight.tolist() == [[1.0, 1.0, 0.25, 0.25]]
    assert (
        corrupt(AttenuatedTailPadMasking(), ids, target_mask, t, LinearSchedule()).loss_weight
        is None
    )


def test_full_sequence_masking_covers_the_prompt() -> None:
    ids = torch.arange(20).reshape(2, 10)
    target_mask = torch.zeros_like(ids, dtype=torch.bool)
    out = corrupt(FullSequenceMasking(), ids, target_mask, torch.ones(2), LinearSchedule())
    assert bool(out.mask.all())
    out = corrupt(UniformMasking(), ids, target_mask, torch.ones(2), LinearSchedule())
    assert not bool(out.mask.any())


# ---------------------------------------------------------------------------------- bad input


def test_check_corruption_inputs_names_the_problem() -> None:
    ids = torch.zeros(2, 5, dtype=torch.long)
    ok = torch.ones(2, 5, dtype=torch.bool)
    t = torch.full((2,), 0.5)
    check_corruption_inputs(ids, ok, t)
    with pytest.raises(TypeError, match=r"target_mask must be a bool tensor.*torch\.int64"):
        check_corruption_inputs(ids, ok.long(), t)
    with pytest.raises(
        ValueError, match=r"target_mask has shape \(2, 4\) but ids have shape \(2, 5\)"
    ):
        check_corruption_inputs(ids, ok[:, :4], t)
    with pytest.raises(ValueError, match=r"one time per row, shape \(2,\)"):
        check_corruption_inputs(ids, ok, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_corruption_inputs(ids, ok, torch.tensor([0.5, 1.2]))
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        check_corruption_inputs(ids.float(), ok, t)
    with pytest.raises(ValueError, match=r"ids must have shape \(batch, seq\)"):
        check_corruption_inputs(ids[0], ok[0], t[:1])


@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=repr)
def test_strategies_reject_bad_input(strategy: MaskStrategy) -> None:
    ids = torch.zeros(2, 5, dtype=torch.long)
    ok = torch.ones(2, 5, dtype=torch.bool)
    t = torch.full((2,), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt(strategy, ids, ok, torch.tensor([0.5, -0.5]), LinearSchedule())
    # dtype and shape errors: the library raises TypeError / ValueError with a message; in
    # the test-suite jaxtyping's run-time check (a TypeError) may fire first.
    with pytest.raises((TypeError, ValueError)):
        corrupt(strategy, ids, ok.long(), t, LinearSchedule())
    with pytest.raises((TypeError, ValueError)):
        corrupt(strategy, ids, ok[:, :4], t, LinearSchedule())
    with pytest.raises((TypeError, ValueError)):
        corrupt(strategy, ids, ok, torch.full((3,), 0.5), LinearSchedule())


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: AttenuatedTailPadMasking(pad_mask_ratio=1.5), "pad_mask_ratio"),
        (lambda: AttenuatedTailPadMasking(pad_loss_weight=-1.0), "pad_loss_weight"),
        (lambda: SpanMasking(mean_span_length=0.5), "mean_span_length"),
    ],
)
def test_bad_strategy_parameters_raise(factory: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory()  # type: ignore[operator]


def test_per_token_time_masks_half_of_content_and_less_of_pads() -> None:
    # upstream's marginals: E[(1 - eps) t + eps] = 0.5005 for content, 0.6 x that for pads
    layout = VocabLayout(
        text_size=10, speech_size=0, image_size=0, special_ids={"mask": 9, "pad": 0}
    )
    ids = torch.randint(1, 9, (400, 50), generator=torch.Generator().manual_seed(0))
    ids[:, 40:] = layout.pad_id
    target = torch.ones_like(ids, dtype=torch.bool)
    target[:, :5] = False
    out = PerTokenTimeMasking()(
        ids, target, torch.full((400,), 0.5), schedule=LinearSchedule(), layout=layout,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    content = out.mask[:, 5:40].float().mean()
    pads = out.mask[:, 40:].float().mean()
    assert not bool(out.mask[:, :5].any())
    # 14,000 and 4,000 Bernoulli draws: 5 standard deviations
    assert abs(float(content) - 0.5005) < 5 * (0.25 / 14_000) ** 0.5
    assert abs(float(pads) - 0.3003) < 5 * (0.21 / 4_000) ** 0.5


@given(seed=st.integers(0, 2**31), rows=st.integers(1, 6), seq=st.integers(1, 30))
@settings(max_examples=40, deadline=None)
def test_per_token_masking_in_one_draw_equals_upstreams_row_loop(
    seed: int, rows: int, seq: int
) -> None:
    from omni_blocks.masking import PerTokenTimeMasking
    from omni_blocks.vocab import VocabLayout

    layout = VocabLayout(40, 0, 0, special_ids={"mask": 39, "pad": 0, "eos": 0})
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 38, (rows, seq), generator=g)
    target = torch.rand(rows, seq, generator=g) < 0.6  # gaps and empty rows included
    strategy = PerTokenTimeMasking(0.6)
    one = strategy._all_rows_at_once(ids, target, layout, torch.Generator().manual_seed(seed))
    loop = strategy._row_by_row(ids, target, layout, torch.Generator().manual_seed(seed))
    assert torch.equal(one.mask, loop.mask)
    assert torch.equal(one.noisy_ids, loop.noisy_ids)
