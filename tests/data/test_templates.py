"""Task templates, collation and example checks (`omni_blocks.data`)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omni_blocks import Modality, VocabError, VocabLayout
from omni_blocks.data import (
    AsrTemplate,
    CaptionTemplate,
    ChatFormat,
    DataError,
    InpaintingTemplate,
    SpeechToImageTemplate,
    SpokenVqaTemplate,
    TaskSequence,
    TaskTemplate,
    TextToImageTemplate,
    TtsTemplate,
    VqaTemplate,
    build_all,
    collate_sequences,
    render_sequence,
    segment,
    tokenize_example,
    tokenize_examples,
)
from omni_blocks.tokenizers import MelVQSpeechTokenizer, PatchVQTokenizer, TextTokenizer

IMAGE_TOKENS = 4
TEXTS = [
    "a handwritten digit three",
    "what digit is this",
    "the digit is seven",
    "three",
    "say the number",
] * 10


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def layout(tok: TextTokenizer) -> VocabLayout:
    return VocabLayout(
        text_size=tok.codebook_size,
        speech_size=32,
        image_size=16,
        special_ids=tok.special_ids,
    )


def example() -> dict[str, Any]:
    return {
        "id": "ex7",
        "text": "the digit is seven",
        "caption": "a handwritten digit three",
        "question": "what digit is this",
        "answer": "three",
        "image_codes": torch.tensor([3, 0, 15, 7]),
        "speech_codes": torch.tensor([5, 9, 9, 31, 0, 2]),
        "known_mask": torch.tensor([True, False, False, True]),
    }


TEMPLATES: list[type[TaskTemplate]] = [
    AsrTemplate,
    TtsTemplate,
    CaptionTemplate,
    VqaTemplate,
    TextToImageTemplate,
    SpeechToImageTemplate,
    SpokenVqaTemplate,
    InpaintingTemplate,
]
# what parse(build(example).target_ids) must give back
EXPECTED: dict[str, Any] = {
    "asr": "the digit is seven",
    "tts": torch.tensor([5, 9, 9, 31, 0, 2]),
    "caption": "a handwritten digit three",
    "vqa": "three",
    "t2i": torch.tensor([3, 0, 15, 7]),
    "s2i": torch.tensor([3, 0, 15, 7]),
    "spoken_vqa": "three",
    "inpainting": torch.tensor([3, 0, 15, 7]),
}


def make(cls: type[TaskTemplate], tok: TextTokenizer, layout: VocabLayout, **kw: Any) -> Any:
    if cls in (AsrTemplate, TtsTemplate):
        return cls(layout, tok, **kw)
    return cls(layout, tok, image_tokens=IMAGE_TOKENS, **kw)  # type: ignore[call-arg]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return bool(a == b)


@pytest.fixture(params=TEMPLATES, ids=lambda c: c.__name__)
def template(request: pytest.FixtureRequest, tok: TextTokenizer, layout: VocabLayout) -> Any:
    return make(request.param, tok, layout)


# ---------------------------------------------------------------------------- per template
def test_build_target_region_and_round_trip(template: Any, layout: VocabLayout) -> None:
    seq = template.build(example())
    assert seq.task == template.name and seq.target_modality is template.target_modality
    start = seq.target_start
    assert 0 < start < len(seq) and seq.is_target_suffix()
    assert not seq.target_mask[:start].any()  # the prompt is never target_mask
    assert seq.ids[0] == layout.bos_id
    assert seq.ids[-1] == layout.end_id(template.target_modality)
    assert not (seq.ids == layout.mask_id).any()
    # the target holds only the target modality's ids, then its end token
    content = seq.target_ids[:-1]
    assert layout.is_modality(content, template.target_modality).all()
    if template.target_modality is not Modality.TEXT:
        assert seq.ids[start - 1] == layout.begin_id(template.target_modality)
    got = template.parse(seq.target_ids)
    assert same(got, EXPECTED[template.name]), got
    # tail pads after the end token do not change the parse
    padded = torch.cat([seq.target_ids, torch.full((5,), layout.pad_id)])
    assert same(template.parse(padded), EXPECTED[template.name])


def test_prompt_masks_exactly_the_target_region(template: Any, layout: VocabLayout) -> None:
    ex = example()
    full = template.build(ex)
    n = len(full.target_ids)
    prompt = template.prompt(ex, n)
    assert torch.equal(prompt.target_mask, full.target_mask)
    assert torch.equal(prompt.prompt_ids, full.prompt_ids)
    is_mask = prompt.ids == layout.mask_id
    assert not is_mask[: prompt.target_start].any()  # nothing to write in the prompt
    if template.target_modality is Modality.IMAGE:
        # an image's length is known: its end token is given, only (unknown) codes are masks
        known = torch.zeros(IMAGE_TOKENS, dtype=torch.bool)
        if template.name == "inpainting":
            known = ex["known_mask"]
        assert torch.equal(is_mask[prompt.target_mask], torch.cat([~known, torch.tensor([False])]))
        assert prompt.ids[-1] == layout.end_id(Modality.IMAGE)
    else:
        assert torch.equal(is_mask, prompt.target_mask)
    # a sampler writes the mask positions: writing the true target there gives `build`
    written = torch.where(is_mask, full.ids, prompt.ids)
    assert torch.equal(written, full.ids)


def test_prompt_ignores_target_fields_and_takes_any_length(template: Any) -> None:
    ex = example()
    target_key = {
        "asr": "text",
        "tts": "speech_codes",
        "caption": "caption",
        "vqa": "answer",
        "spoken_vqa": "answer",
        "t2i": "image_codes",
        "s2i": "image_codes",
    }
    if template.name in target_key:
        del ex[target_key[template.name]]
    length = IMAGE_TOKENS + 7
    seq = template.prompt(ex, length)
    assert len(seq.target_ids) == length and int(seq.target_mask.sum()) == length
    if template.target_modality is Modality.IMAGE:
        assert len(template.prompt(ex).target_ids) == IMAGE_TOKENS + 1  # the default
    else:
        with pytest.raises(DataError, match="needs target_length"):
            template.prompt(ex)


def test_inputs_appear_as_wrapped_segments(template: Any, layout: VocabLayout) -> None:
    ex = example()
    prompt = template.prompt(ex, 8).prompt_ids.tolist()
    for key, modality in (("image_codes", Modality.IMAGE), ("speech_codes", Modality.SPEECH)):
        wrapped = segment(ex[key], modality, layout).tolist()
        present = any(prompt[i : i + len(wrapped)] == wrapped for i in range(len(prompt)))
        assert present == (modality in template.input_modalities), (key, template.name)


# ---------------------------------------------------------------------------- formatting
def test_render_and_chat_format(tok: TextTokenizer, layout: VocabLayout) -> None:
    caption = CaptionTemplate(layout, tok, image_tokens=IMAGE_TOKENS)
    text = render_sequence(caption.build(example()), layout, tok)
    assert text == (
        "[bos]<|im_start|>user\n[begin_image]<img 3><img 0><img 15><img 7>[end_image]"
        "Describe the image.<|im_end|>\n<|im_start|>assistant\n | a handwritten digit three"
        "[eos/pad]"
    )
    bare = TtsTemplate(layout, tok, instruction="", chat=ChatFormat("", "", "", bos=False))
    text = render_sequence(bare.prompt(example(), 3), layout, tok)
    assert text == "the digit is seven[begin_speech] | [mask][mask][mask]"


def test_segment_wraps_and_offsets(layout: VocabLayout) -> None:
    ids = segment(torch.tensor([0, 15]), Modality.IMAGE, layout)
    off = layout.offset(Modality.IMAGE)
    assert ids.tolist() == [
        layout.begin_id(Modality.IMAGE),
        off,
        off + 15,
        layout.end_id(Modality.IMAGE),
    ]
    with pytest.raises(VocabError):
        segment(torch.tensor([16]), Modality.IMAGE, layout)


def test_layout_must_fit_task(tok: TextTokenizer) -> None:
    no_speech = VocabLayout(text_size=tok.codebook_size, speech_size=0, image_size=16)
    with pytest.raises(VocabError, match="speech codebook"):
        AsrTemplate(no_speech, tok)
    CaptionTemplate(no_speech, tok, image_tokens=4)  # needs no speech
    small = VocabLayout(text_size=100, speech_size=4, image_size=4)
    with pytest.raises(VocabError, match="text_size=300"):
        CaptionTemplate(small, tok)


def test_parse_rejects_unfilled_target(tok: TextTokenizer, layout: VocabLayout) -> None:
    for template in (make(AsrTemplate, tok, layout), make(TextToImageTemplate, tok, layout)):
        with pytest.raises(VocabError):
            template.parse(template.prompt(example(), 6).target_ids)


# ---------------------------------------------------------------------------- bad data
BAD: list[tuple[type[TaskTemplate], dict[str, Any], str]] = [
    (CaptionTemplate, {"image_codes": torch.tensor([1, 2, 3])}, "has 3 image codes, expected 4"),
    (VqaTemplate, {"image_codes": torch.arange(8).reshape(2, 4)}, "has 8 image codes"),
    (TextToImageTemplate, {"image_codes": torch.tensor([1, 2, 3, 16])}, "outside the image"),
    (CaptionTemplate, {"image_codes": torch.tensor([0.5, 1, 2, 3])}, "integer image codes"),
    (CaptionTemplate, {"caption": ""}, "'caption' is empty"),
    (AsrTemplate, {"text": "   "}, "'text' is empty"),
    (TtsTemplate, {"text": 3}, "'text' must be a string"),
    (VqaTemplate, {"question": "what is <|mask|> here"}, "special token"),
    (AsrTemplate, {"speech_codes": torch.tensor([], dtype=torch.long)}, "'speech_codes' is empty"),
    (TtsTemplate, {"speech_codes": torch.tensor([1, 32])}, "outside the speech codebook"),
    (SpokenVqaTemplate, {"speech_codes": torch.tensor([-1])}, "outside the speech codebook"),
    (SpeechToImageTemplate, {"speech_codes": torch.zeros(2, 3, dtype=torch.long)}, "1-D"),
    (SpokenVqaTemplate, {"answer": None}, "'answer' must be a string"),
]


@pytest.mark.parametrize(("cls", "change", "message"), BAD)
def test_bad_examples_raise_naming_the_example(
    cls: type[TaskTemplate],
    change: dict[str, Any],
    message: str,
    tok: TextTokenizer,
    layout: VocabLayout,
) -> None:
    template = make(cls, tok, layout)
    ex = {**example(), **change}
    with pytest.raises(DataError, match=message) as info:
        template.build(ex, index=12)
    assert "id='ex7' (index 12)" in str(info.value)


def test_missing_key_and_max_length(tok: TextTokenizer, layout: VocabLayout) -> None:
    ex = example()
    del ex["image_codes"], ex["id"]
    with pytest.raises(DataError, match=r"example at index 3|index 3.*needs 'image_codes'"):
        CaptionTemplate(layout, tok, image_tokens=4).build(ex, index=3)
    template = make(AsrTemplate, tok, layout, max_length=20)
    with pytest.raises(DataError, match=r"id='ex7'.*more than max_length=20"):
        template.build(example())
    with pytest.raises(DataError, match="more than max_length=20"):
        template.prompt(example(), 30)
    examples = [example(), {**example(), "id": None, "text": ""}]
    with pytest.raises(DataError, match=r"index 1\): 'text' is empty|index 1: 'text' is empty"):
        build_all(make(AsrTemplate, tok, layout), examples)


def test_inpainting_known_mask_checks(tok: TextTokenizer, layout: VocabLayout) -> None:
    template = make(InpaintingTemplate, tok, layout)
    ex = example()
    with pytest.raises(DataError, match="known_mask' has 3 entries"):
        template.prompt({**ex, "known_mask": torch.tensor([True, False, True])})
    with pytest.raises(DataError, match="bool tensor"):
        template.prompt({**ex, "known_mask": torch.ones(4)})
    with pytest.raises(DataError, match="target_length >= image_tokens"):
        template.prompt(ex, 3)
    del ex["caption"]  # the caption is optional for inpainting
    assert template.build(ex).task == "inpainting"


# ---------------------------------------------------------------------------- raw data
@pytest.fixture(scope="module")
def image_tokenizer() -> PatchVQTokenizer:
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    vq = PatchVQTokenizer(image_size=8, channels=1, patch_size=4, codebook_size=16)
    vq.fit(images, num_iters=5)
    return vq


@pytest.fixture(scope="module")
def speech_tokenizer() -> MelVQSpeechTokenizer:
    waves = torch.randn(4, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    speech = MelVQSpeechTokenizer(codebook_size=8, n_mels=16, griffin_lim_iters=0)
    speech.fit(waves, num_iters=3)
    return speech


def test_tokenize_example_gives_codes_templates_accept(
    image_tokenizer: PatchVQTokenizer,
    speech_tokenizer: MelVQSpeechTokenizer,
    tok: TextTokenizer,
    layout: VocabLayout,
) -> None:
    raw = {
        "id": "r1",
        "image": torch.rand(1, 8, 8),
        "audio": torch.randn(3200) * 0.1,
        "sample_rate": 16_000,
        "answer": "three",
    }
    out = tokenize_example(raw, image_tokenizer=image_tokenizer, speech_tokenizer=speech_tokenizer)
    assert set(out) == {"id", "image_codes", "speech_codes", "answer"}
    assert out["image_codes"].shape == (IMAGE_TOKENS,)
    assert out["speech_codes"].shape == (speech_tokenizer.num_tokens(3200),)
    seq = make(SpokenVqaTemplate, tok, layout).build(out)
    assert seq.target_modality is Modality.TEXT
    batch = tokenize_examples(
        [raw, raw], image_tokenizer=image_tokenizer, speech_tokenizer=speech_tokenizer
    )
    assert torch.equal(batch[1]["image_codes"], out["image_codes"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": torch.rand(1, 16, 16)}, r"shape \(1, 16, 16\).*8x8 pixels"),
        ({"image": torch.rand(3, 8, 8)}, r"\(channels, height, width\) = \(1, 8, 8\)"),
        ({"image": torch.full((1, 8, 8), 2.0)}, "image tokenizer rejected"),
        ({"sample_rate": 22_050}, "22050 Hz, but the speech tokenizer needs 16000 Hz"),
        ({"sample_rate": None}, "'sample_rate' must be an int"),
        ({"audio": torch.randn(2, 3200)}, r"mono \(time,\) waveform"),
        ({"audio": torch.zeros(0)}, "'audio' is empty"),
    ],
)
def test_tokenize_example_errors_name_the_example(
    change: dict[str, Any],
    message: str,
    image_tokenizer: PatchVQTokenizer,
    speech_tokenizer: MelVQSpeechTokenizer,
) -> None:
    raw = {
        "id": "r1",
        "image": torch.rand(1, 8, 8),
        "audio": torch.randn(3200) * 0.1,
        "sample_rate": 16_000,
        **change,
    }
    examples = [{"image": torch.rand(1, 8, 8)}, raw]
    with pytest.raises(DataError, match=message) as info:
        tokenize_examples(
            examples, image_tokenizer=image_tokenizer, speech_tokenizer=speech_tokenizer
        )
    assert "id='r1' (index 1)" in str(info.value)
    with pytest.raises(DataError, match="no speech_tokenizer"):
        tokenize_example({"audio": raw["audio"]}, image_tokenizer=image_tokenizer)


# ---------------------------------------------------------------------------- collation
def seqs(tok: TextTokenizer, layout: VocabLayout) -> list[TaskSequence]:
    ex = example()
    return [
        make(AsrTemplate, tok, layout).build(ex),
        make(TextToImageTemplate, tok, layout).build(ex),
        make(CaptionTemplate, tok, layout).prompt(ex, 3),
    ]


def test_collate_pads_target_tails(tok: TextTokenizer, layout: VocabLayout) -> None:
    items = seqs(tok, layout)
    batch = collate_sequences(items, layout)
    width = max(len(s) for s in items)
    assert batch["input_ids"].shape == batch["target_mask"].shape == (3, width)
    assert batch["input_ids"].dtype == torch.long and batch["target_mask"].dtype == torch.bool
    assert batch["attention_mask"].all()
    assert batch["task"] == ["asr", "t2i", "caption"]
    for row, seq in enumerate(items):
        n = len(seq)
        assert torch.equal(batch["input_ids"][row, :n], seq.ids)
        assert torch.equal(batch["target_mask"][row, :n], seq.target_mask)
        assert (batch["input_ids"][row, n:] == layout.pad_id).all()
        assert batch["target_mask"][row, n:].all()  # tail pads are targets


def test_collate_extra_tail_pads_and_multiple(tok: TextTokenizer, layout: VocabLayout) -> None:
    items = seqs(tok, layout)
    longest = max(len(s) for s in items)
    batch = collate_sequences(items, layout, extra_tail_pad=2, pad_to_multiple_of=16)
    width = batch["input_ids"].shape[1]
    assert width % 16 == 0 and width >= longest + 2
    # ranged extra pads, not targets beyond them: upstream's U{1..16} then ignored padding
    counts = []
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        batch = collate_sequences(
            items, layout, extra_tail_pad=(1, 16), pad_targets=False, generator=gen
        )
        for row, seq in enumerate(items):
            extra = int(batch["target_mask"][row].sum()) - int(seq.target_mask.sum())
            assert int(batch["attention_mask"][row].sum()) == len(seq) + extra
            assert (batch["input_ids"][row, len(seq) :] == layout.pad_id).all()
            counts.append(extra)
    assert min(counts) == 1 and max(counts) == 16
    again = collate_sequences(
        items,
        layout,
        extra_tail_pad=(1, 16),
        pad_targets=False,
        generator=torch.Generator().manual_seed(39),
    )
    assert torch.equal(again["target_mask"], batch["target_mask"])  # seeded: reproducible


def test_collate_max_length_and_errors(tok: TextTokenizer, layout: VocabLayout) -> None:
    items = seqs(tok, layout)
    longest = max(len(s) for s in items)
    batch = collate_sequences(items, layout, extra_tail_pad=10, max_length=longest + 1)
    assert batch["input_ids"].shape[1] == longest + 1  # pads dropped, tokens kept
    with pytest.raises(DataError, match=r"sequence 0 \(task 'asr'\) has \d+ tokens"):
        collate_sequences(items, layout, max_length=len(items[0]) - 1)
    with pytest.raises(DataError, match="empty batch"):
        collate_sequences([], layout)
    middle = TaskSequence(
        torch.arange(4), torch.tensor([False, True, False, False]), "x", Modality.TEXT
    )
    with pytest.raises(DataError, match="target last"):
        collate_sequences([middle], layout)
    with pytest.raises(ValueError, match="extra_tail_pad"):
        collate_sequences(items, layout, extra_tail_pad=(3, 1))
