"""Speech heard as features: slots in the sequence, the encoder's embeddings in the backbone,
never masked nor predicted; generation and the key/value cache carry them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from omni_blocks.backbones import EmbeddingSlots, NativeTransformer
from omni_blocks.data import AsrTemplate, SpeechToImageTemplate, collate_sequences
from omni_blocks.data.speech_input import SpeechCodes, SpeechFeatures
from omni_blocks.masking import FullSequenceMasking
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.sampling import DualCache, MaskedDiffusionSampler, SchedulePlanner
from omni_blocks.speech import ConvSpeechEncoder, LinearProjector, ResamplerProjector, SlotError
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def text() -> TextTokenizer:
    return TextTokenizer.train_bpe(WORDS * 4, vocab_size=300, min_frequency=1)


def layout_of(text: TextTokenizer) -> VocabLayout:
    return VocabLayout(text.codebook_size, 16, 16, special_ids=text.special_ids)


def examples(n: int = 4) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {"text": WORDS[i], "speech_features": torch.randn(5 + 3 * i, 12, generator=gen),
         "image_codes": torch.randint(0, 16, (4,), generator=gen)}
        for i in range(n)
    ]  # fmt: skip


def module_for(layout: VocabLayout, **kwargs: Any) -> OmniDiffusionModule:
    torch.manual_seed(0)
    backbone = NativeTransformer(layout.vocab_size, 32, 64, 2, 4, shift_logits=True)
    encoder = ConvSpeechEncoder(feature_size=12, output_size=16, stride=2, num_layers=1)
    return OmniDiffusionModule(
        backbone, layout, speech_encoder=encoder, speech_projector=LinearProjector(16, 32),
        **kwargs,
    )  # fmt: skip


def test_a_feature_slot_sits_between_the_speech_markers(text: TextTokenizer) -> None:
    layout = layout_of(text)
    asr = AsrTemplate(layout, text, speech_input=SpeechFeatures(extra_positions=0, stride=2))
    seq = asr.build(examples()[1])
    assert seq.slots is not None and len(seq.features) == 1
    run = seq.ids[seq.slots]
    assert len(run) == 4  # ceil(8 frames / 2)
    start = int(seq.slots.nonzero()[0])
    assert int(seq.ids[start - 1]) == layout.begin_id(Modality.SPEECH)
    assert int(seq.ids[start + 4]) == layout.end_id(Modality.SPEECH)
    assert not bool((seq.slots & seq.target_mask).any())
    codes = AsrTemplate(layout, text, speech_input=SpeechCodes()).build(
        {"text": "one", "speech_codes": torch.tensor([1, 2, 3])}
    )
    assert codes.slots is None and codes.features == ()


def test_slot_embeddings_are_what_the_backbone_would_read_from_its_table() -> None:
    torch.manual_seed(0)
    net = NativeTransformer(40, 16, 32, 2, 2).eval()
    ids = torch.randint(0, 30, (2, 9))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 4:6] = True
    values = torch.randn(int(mask.sum()), 16)
    with torch.no_grad():
        through_slots = net(ids, slots=EmbeddingSlots(mask, values))
        # the same embeddings fed directly: write them into unused rows of the table
        direct = ids.clone()
        direct[mask] = torch.arange(30, 30 + len(values))
        net.model.embed_tokens.weight[30 : 30 + len(values)] = values
        fed = net(direct)
    torch.testing.assert_close(through_slots, fed)


def test_training_never_masks_nor_scores_a_slot(text: TextTokenizer) -> None:
    layout = layout_of(text)
    asr = AsrTemplate(layout, text, speech_input=SpeechFeatures(extra_positions=0, stride=2))
    batch = collate_sequences([asr.build(e) for e in examples()], layout)
    module = module_for(layout, mask_strategy=FullSequenceMasking())  # masks the prompt too
    for seed in range(5):
        out = module.step(batch, torch.Generator().manual_seed(seed))
        assert not bool((out.corruption.mask & batch["slot_mask"]).any())
        assert bool(out.corruption.mask[~batch["slot_mask"]].any())
    out.loss.backward()
    encoder_grads = [p.grad for p in module.speech_encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(bool(g.abs().sum() > 0) for g in encoder_grads)  # trained


def test_generation_and_the_cache_carry_the_slots(text: TextTokenizer) -> None:
    layout = layout_of(text)
    s2i = SpeechToImageTemplate(
        layout, text, image_tokens=4, speech_input=SpeechFeatures(extra_positions=0, stride=2)
    )
    sampler = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=4))
    module = module_for(layout, sampler=sampler).eval()
    plain = module.generate(s2i, examples(), generator=torch.Generator().manual_seed(0))
    module.sampler = replace(sampler, cache=DualCache(refresh_every=1))
    cached = module.generate(s2i, examples(), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(plain, cached, strict=True))
    # the slots matter: other frames, other images
    other = [{**e, "speech_features": e["speech_features"] * 3 + 1} for e in examples()]
    module.sampler = sampler
    assert any(
        not torch.equal(a, b) for a, b in zip(plain, module.generate(s2i, other), strict=True)
    )


def test_mismatched_slots_and_features_are_named(text: TextTokenizer) -> None:
    layout = layout_of(text)
    wrong = AsrTemplate(layout, text, speech_input=SpeechFeatures(extra_positions=4, stride=1))
    batch = collate_sequences([wrong.build(e) for e in examples(2)], layout)
    module = module_for(layout)
    with pytest.raises(SlotError, match="encoder makes"):
        module.step(batch, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="width 16"):
        ResamplerProjector(16, 32)(torch.zeros(3, 12))
    with pytest.raises(ValueError, match="frames of 12 features"):
        module.speech_encoder(torch.zeros(1, 5, 7), torch.tensor([5]))
    with pytest.raises(ValueError, match="go together"):
        OmniDiffusionModule(NativeTransformer(layout.vocab_size, 32, 64, 1, 2), layout,
                            speech_encoder=ConvSpeechEncoder(12, 16))  # fmt: skip
    plain = OmniDiffusionModule(NativeTransformer(layout.vocab_size, 32, 64, 1, 2), layout)
    with pytest.raises(ValueError, match="no speech_encoder"):
        plain.step(batch, torch.Generator().manual_seed(0))


def test_a_saved_module_keeps_its_speech_path_and_feature_templates(
    text: TextTokenizer, tmp_path: Any
) -> None:
    from omni_blocks.data.processor import TaskProcessor

    layout = layout_of(text)
    asr = AsrTemplate(layout, text, speech_input=SpeechFeatures(extra_positions=0, stride=2))
    sampler = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=3))
    module = module_for(layout, sampler=sampler).eval()
    module.save_pretrained(tmp_path / "m", processor=TaskProcessor({"asr": asr}))
    again = OmniDiffusionModule.from_pretrained(tmp_path / "m").eval()
    assert again.processor is not None
    assert again.processor.templates["asr"].speech_input == asr.speech_input
    for a, b in zip(module.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    first = module.generate(
        asr, examples(), target_length=4, generator=torch.Generator().manual_seed(1)
    )
    second = again.generate(
        again.processor.templates["asr"], examples(), target_length=4,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert first == second
