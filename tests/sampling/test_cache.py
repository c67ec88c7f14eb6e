"""Key/value caches: exact with a refresh at every step, a window of the right size, clear
errors for models that cannot keep a cache."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from omni_blocks import VocabLayout
from omni_blocks.backbones import KeyValueCache, NativeTransformer
from omni_blocks.sampling import (
    BlockPlanner,
    CachedDenoiser,
    ClassifierFreeGuidance,
    DualCache,
    FixedCountPlanner,
    MaskedDiffusionSampler,
    NoCache,
    PrefixCache,
    SchedulePlanner,
    ThresholdPlanner,
    TokenChoice,
    UnmaskPlanner,
    fast_dllm_sampler,
    omni_diffusion_sampler,
)

LAYOUT = VocabLayout(text_size=40, speech_size=0, image_size=20)


def tiny(shift: bool = True, causal: bool = False) -> NativeTransformer:
    torch.manual_seed(0)
    net = NativeTransformer(
        vocab_size=LAYOUT.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        shift_logits=shift,
        causal=causal,
    ).eval()
    with torch.no_grad():
        net.lm_head.weight.mul_(20)  # peaked predictions, so that thresholds fire
    return net


def problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three left-padded rows; the last row has known tokens inside its target."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.full((3, 40), LAYOUT.mask_id)
    ids[:, :8] = torch.randint(0, 30, (3, 8), generator=gen)
    attention = torch.ones_like(ids, dtype=torch.bool)
    ids[1, :3] = LAYOUT.pad_id
    attention[1, :3] = False
    target = torch.zeros_like(attention)
    target[:, 8:] = True
    ids[2, 20:24] = torch.tensor([5, 6, 7, 8])  # inpainting: known tokens in the target
    return ids, attention, target


PLANNERS: list[UnmaskPlanner] = [
    SchedulePlanner(num_steps=12),
    FixedCountPlanner(3),
    ThresholdPlanner(0.5),
    BlockPlanner(SchedulePlanner(num_steps=16), block_length=8),
    BlockPlanner(ThresholdPlanner(0.7), block_length=8),
]


@pytest.mark.parametrize("planner", PLANNERS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("cache", [PrefixCache(refresh_every=1), DualCache(refresh_every=1)])
@pytest.mark.parametrize("shift", [False, True])
def test_a_cache_refreshed_every_step_is_the_uncached_sampler(
    planner: UnmaskPlanner, cache: PrefixCache | DualCache, shift: bool
) -> None:
    net = tiny(shift)
    ids, attention, target = problem()
    base = MaskedDiffusionSampler(planner=planner)
    kwargs = {"layout": LAYOUT, "attention_mask": attention, "target_mask": target}
    plain = base(net, ids, **kwargs, generator=torch.Generator().manual_seed(0))
    cached = replace(base, cache=cache)(
        net, ids, **kwargs, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(cached.ids, plain.ids)
    assert torch.equal(cached.trajectory, plain.trajectory)
    assert cached.nfe == plain.nfe


@pytest.mark.parametrize("cache", [PrefixCache(refresh_every=1), DualCache(refresh_every=1)])
def test_exact_with_guidance_and_sampled_tokens(cache: PrefixCache | DualCache) -> None:
    net = tiny()
    ids, attention, target = problem()
    base = MaskedDiffusionSampler(
        planner=BlockPlanner(SchedulePlanner(num_steps=8), block_length=16),
        choice=TokenChoice(temperature=1.0, top_k=5),
        guidance=ClassifierFreeGuidance(1.5),
    )
    kwargs = {"layout": LAYOUT, "attention_mask": attention, "target_mask": target}
    plain = base(net, ids, **kwargs, generator=torch.Generator().manual_seed(3))
    cached = replace(base, cache=cache)(
        net, ids, **kwargs, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(cached.ids, plain.ids)


def test_the_window_logits_equal_a_full_pass_when_nothing_changed() -> None:
    for shift in (False, True):
        for causal in (False, True):
            net = tiny(shift, causal)
            ids, attention, _ = problem()
            for mask in (None, attention):
                full = net(ids, mask)
                logits, cache = net.forward_cached(ids, mask)
                assert torch.equal(logits, full)  # the refresh pass is forward, bit for bit
                for window in [(0, 5), (8, 16), (16, 40), (39, 40)]:
                    part, cache = net.forward_cached(ids, mask, cache=cache, window=window)
                    torch.testing.assert_close(part, full[:, window[0] : window[1]])


def test_prefix_and_dual_cache_recompute_only_their_window() -> None:
    net = tiny()
    ids, attention, target = problem()
    widths: list[int] = []
    original = net.forward_cached

    def spy(*args: object, **kwargs: object) -> tuple[torch.Tensor, KeyValueCache]:
        logits, cache = original(*args, **kwargs)  # type: ignore[arg-type]
        widths.append(logits.shape[1])
        return logits, cache

    net.forward_cached = spy  # type: ignore[method-assign]
    planner = BlockPlanner(SchedulePlanner(num_steps=16), block_length=8)
    kwargs = {"layout": LAYOUT, "attention_mask": attention, "target_mask": target}
    for cache, expected in [(PrefixCache(), {40, 32, 24, 16, 8}), (DualCache(), {40, 8})]:
        widths.clear()
        out = MaskedDiffusionSampler(planner=planner, cache=cache)(net, ids, **kwargs)
        assert set(widths) == expected
        assert widths.count(40) == 4  # one refresh per block
        assert not bool((out.ids == LAYOUT.mask_id).any())


def test_no_cache_keeps_nothing_and_needs_no_caching_backbone() -> None:
    calls: list[int] = []

    def model(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        calls.append(1)
        return torch.zeros(*ids.shape, LAYOUT.vocab_size)

    runner = CachedDenoiser(NoCache(), model)
    block = torch.ones(1, 4, dtype=torch.bool)
    logits, offset = runner(torch.zeros(1, 4, dtype=torch.long), None, None, block)
    assert offset == 0 and logits.shape == (1, 4, LAYOUT.vocab_size) and calls == [1]


def test_a_cache_asks_for_a_caching_backbone() -> None:
    def model(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros(*ids.shape, LAYOUT.vocab_size)

    ids = torch.tensor([[1, LAYOUT.mask_id]])
    with pytest.raises(TypeError, match="forward_cached"):
        MaskedDiffusionSampler(cache=PrefixCache())(model, ids, layout=LAYOUT)


def test_bad_cache_arguments() -> None:
    with pytest.raises(ValueError, match="refresh_every"):
        PrefixCache(refresh_every=-1)
    with pytest.raises(ValueError, match="refresh_every"):
        DualCache(refresh_every=-2)
    net = tiny()
    ids = torch.randint(0, 30, (1, 10))
    _, cache = net.forward_cached(ids)
    with pytest.raises(ValueError, match="window"):
        net.forward_cached(ids, cache=cache, window=(5, 3))
    with pytest.raises(ValueError, match="window"):
        net.forward_cached(ids, cache=cache)
    with pytest.raises(ValueError, match="cache covers"):
        net.forward_cached(ids[:, :8], cache=cache, window=(0, 4))


def test_presets_take_a_cache() -> None:
    assert fast_dllm_sampler(cache=DualCache()).cache == DualCache()
    assert fast_dllm_sampler().cache == NoCache()
    sampler = replace(omni_diffusion_sampler(16, block_length=8), cache=PrefixCache())
    net = tiny()
    ids, attention, target = problem()
    out = sampler(net, ids, layout=LAYOUT, attention_mask=attention, target_mask=target)
    assert out.ids.shape == ids.shape
