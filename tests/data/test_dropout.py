"""Prompt dropout (`omni_blocks.data.dropout`) and the templates' unconditional prompts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omni_blocks.data import (
    AsrTemplate,
    OmniDataModule,
    PromptDropout,
    SpeechToImageTemplate,
    TemplateDataset,
    TextToImageTemplate,
    collate_sequences,
)
from omni_blocks.data.messages import ChatImageTemplate
from omni_blocks.sampling import PromptSwapGuidance
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

TEXTS = ["draw a three", "the digit is seven", "draw.", "say the number"] * 10


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def layout(tok: TextTokenizer) -> VocabLayout:
    return VocabLayout(
        tok.codebook_size, speech_size=32, image_size=16, special_ids=tok.special_ids
    )


def examples(n: int) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "id": f"ex{i}",
            "caption": "draw a three",
            "text": "the digit is seven",
            "image_codes": torch.randint(0, 16, (4,), generator=gen),
            "speech_codes": torch.randint(0, 32, (5,), generator=gen),
        }
        for i in range(n)
    ]


def test_unconditional_prompt_is_the_prompt_without_its_user_turn(
    tok: TextTokenizer, layout: VocabLayout
) -> None:
    for template in (
        TextToImageTemplate(layout, tok, "Draw.", image_tokens=4),
        SpeechToImageTemplate(layout, tok, "Draw.", image_tokens=4),
        AsrTemplate(layout, tok, "Transcribe."),
    ):
        seq = template.build(examples(1)[0])
        prompt = seq.ids[~seq.target_mask].tolist()
        empty = template.unconditional_prompt().tolist()
        head = 1 + len(tok.encode(template.chat.user_start))  # bos, then "user" opening
        assert empty[:head] == prompt[:head]
        assert empty[head:] == prompt[len(prompt) - (len(empty) - head) :]
        assert len(empty) < len(prompt)
        if template.target_modality is Modality.IMAGE:
            assert empty[-1] == layout.begin_id(Modality.IMAGE)


def test_chat_unconditional_prompt_is_upstreams_speech_to_image_prompt() -> None:
    layout, text = VocabLayout.omni_diffusion(), TextTokenizer.qwen2()
    template = ChatImageTemplate(
        layout, text, system="Please generate an image based on the input audio."
    )
    expected = text.encode(PromptSwapGuidance.SPEECH_TO_IMAGE_UNCONDITIONAL)
    assert template.unconditional_prompt().tolist() == list(expected)


def test_dropped_rows_are_the_unconditional_prompt_then_the_same_target(
    tok: TextTokenizer, layout: VocabLayout
) -> None:
    s2i = SpeechToImageTemplate(layout, tok, "Draw.", image_tokens=4)
    asr = AsrTemplate(layout, tok, "Transcribe.")
    data = [*TemplateDataset(examples(5), s2i), *TemplateDataset(examples(5), asr)]
    always = PromptDropout.from_templates({"s2i": s2i}, rate=1.0)(data)
    never = PromptDropout.from_templates({"s2i": s2i}, rate=0.0)(data)
    empty = s2i.unconditional_prompt()
    for seq, dropped, kept in zip(data, always, never, strict=True):
        assert kept is seq
        assert torch.equal(dropped.ids[dropped.target_mask], seq.ids[seq.target_mask])
        assert dropped.task == seq.task and dropped.target_modality == seq.target_modality
        if seq.task == "s2i":
            assert torch.equal(dropped.ids[~dropped.target_mask], empty)
        else:  # ASR is not listed: never dropped
            assert dropped is seq
    batch = collate_sequences(always, layout)
    assert batch["input_ids"].shape[0] == len(data)


def test_the_share_dropped_is_the_rate_and_draws_follow_the_generator(
    tok: TextTokenizer, layout: VocabLayout
) -> None:
    t2i = TextToImageTemplate(layout, tok, image_tokens=4)
    seq = t2i.build(examples(1)[0])
    dropout = PromptDropout.from_templates({"t2i": t2i}, rate=0.3)

    def drops(seed: int) -> list[bool]:
        out = dropout([seq] * 4000, torch.Generator().manual_seed(seed))
        return [row is not seq for row in out]

    assert drops(1) == drops(1) and drops(1) != drops(2)
    # 4,000 Bernoulli(0.3) draws: standard deviation 0.0072, so +-0.03 is over 4 of them
    assert abs(sum(drops(1)) / 4000 - 0.3) < 0.03


def test_the_data_module_drops_training_rows_only(tok: TextTokenizer, layout: VocabLayout) -> None:
    t2i = TextToImageTemplate(layout, tok, image_tokens=4)
    dataset = TemplateDataset(examples(64), t2i)
    dropout = PromptDropout.from_templates({"t2i": t2i}, rate=0.5)
    module = OmniDataModule(layout, dataset, val=list(dataset), batch_size=64,
                            prompt_dropout=dropout)  # fmt: skip
    plain = OmniDataModule(layout, dataset, val=list(dataset), batch_size=64)
    train, reference = next(iter(module.train_dataloader())), next(iter(plain.train_dataloader()))
    empty = t2i.unconditional_prompt()
    starts = [torch.equal(row[: len(empty)], empty) for row in train["input_ids"]]
    assert 10 < sum(starts) < 54  # about half of 64 rows

    def targets(batch: Any) -> torch.Tensor:  # the target tokens, tail pads aside
        ids = batch["input_ids"][batch["target_mask"]]
        return ids[ids != layout.pad_id].sort().values

    assert torch.equal(targets(train), targets(reference))  # the same rows, the same targets
    val = next(iter(module.val_dataloader()))
    assert torch.equal(val["input_ids"], next(iter(plain.val_dataloader()))["input_ids"])


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="rate"):
        PromptDropout({"t2i": [1, 2]}, rate=1.5)
    with pytest.raises(ValueError, match="empty"):
        PromptDropout({"t2i": []}, rate=0.1)
