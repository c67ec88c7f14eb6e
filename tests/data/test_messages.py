"""Upstream's chat samples (messages + audios + images) rendered id for id as upstream's own
data code does (golden fixture `tests/fixtures/chat/chat.json`), and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from omni_blocks.data import collate_sequences
from omni_blocks.data.messages import (
    ChatImageTemplate,
    ChatSpeechTemplate,
    ChatTextTemplate,
    MessagesTemplate,
    encode_media,
)
from omni_blocks.data.sequence import DataError
from omni_blocks.data.speech_input import SpeechCodes
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

FIXTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "chat" / "chat.json").read_text()
)
ROWS = FIXTURE["rows"]
MEDIA = FIXTURE["media"]
TEMPLATES: dict[str, type[MessagesTemplate]] = {
    "asr": ChatTextTemplate, "vqa": ChatTextTemplate, "tts": ChatSpeechTemplate,
    "t2i": ChatImageTemplate, "s2i": ChatImageTemplate, "svqa": ChatSpeechTemplate,
}  # fmt: skip


@pytest.fixture(scope="module")
def released() -> tuple[VocabLayout, TextTokenizer]:
    return VocabLayout.omni_diffusion(), TextTokenizer.qwen2()


def encoded(sample: dict[str, Any], root: Path) -> dict[str, Any]:
    """The sample with its media encoded as upstream's stand-in processors gave them."""
    for name in [*sample.get("audios", []), *sample.get("images", [])]:
        (root / name).touch()
    gen = torch.Generator().manual_seed(0)
    return encode_media(
        sample,
        root=root,
        heard=lambda p: torch.randn(MEDIA["audio_frames"][p.name], 560, generator=gen),
        said=lambda p: torch.tensor(MEDIA["audio_codes"][p.name]),
        image_in=lambda p: torch.tensor(MEDIA["image_codes"][p.name][0]),
        image_out=lambda p: torch.tensor(MEDIA["image_codes"][p.name][1]),
    )


@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r['sample']['task']}-{i}" for i, r in enumerate(ROWS)]
)
def test_chat_samples_render_as_upstreams_data_code(
    row: dict[str, Any], released: tuple[VocabLayout, TextTokenizer], tmp_path: Path
) -> None:
    layout, text = released
    sample = row["sample"]
    template = TEMPLATES[sample["task"]](layout, text, system=sample.get("default_system"))
    seq = template.build(encoded(sample, tmp_path))
    assert seq.ids.tolist() == row["input_ids"]
    assert seq.target_mask.tolist() == [label != -100 for label in row["labels"]]
    slots = [] if seq.slots is None else seq.slots.nonzero().flatten().tolist()
    assert slots == row["slots"]
    assert [len(f) for f in seq.features] == [
        MEDIA["audio_frames"][n] for n in sample.get("audios", []) if n in MEDIA["audio_frames"]
    ]


def test_a_prompt_stops_at_the_assistant_turn_and_parse_reads_the_response(
    released: tuple[VocabLayout, TextTokenizer], tmp_path: Path
) -> None:
    layout, text = released
    row = next(r for r in ROWS if r["sample"]["task"] == "t2i")
    template = ChatImageTemplate(layout, text, image_tokens=8)
    sample = encoded(row["sample"], tmp_path)
    seq = template.prompt(sample)
    prompt_len = row["labels"].index(next(x for x in row["labels"] if x != -100))
    assert seq.ids[:prompt_len].tolist() == row["input_ids"][:prompt_len]
    assert int(seq.target_mask.sum()) == 8 + 4
    response = torch.tensor(row["input_ids"][prompt_len:])
    assert template.parse(response).tolist() == MEDIA["image_codes"]["apple.png"][1]
    batch = collate_sequences([template.build(sample)], layout)
    assert batch["input_ids"].shape[0] == 1


def test_chat_samples_with_speech_as_codes(
    released: tuple[VocabLayout, TextTokenizer],
) -> None:
    layout, text = released
    template = ChatTextTemplate(layout, text, speech_input=SpeechCodes())
    seq = template.build(
        {"messages": [{"role": "user", "content": "<|audio|>"},
                      {"role": "assistant", "content": "hi"}],
         "audios": [[1, 2, 3]]}
    )  # fmt: skip
    assert seq.slots is None
    begin = layout.begin_id(Modality.SPEECH)
    start = seq.ids.tolist().index(begin)
    assert (
        seq.ids[start + 1 : start + 4].tolist()
        == layout.to_global(torch.tensor([1, 2, 3]), Modality.SPEECH).tolist()
    )


BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": []}, "non-empty 'messages'"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role in"),
    ({"messages": [{"role": "user", "content": 3}]}, "string content"),
    ({"messages": [{"role": "user", "content": "<|audio|>"},
                   {"role": "assistant", "content": "a"}], "audios": []}, "1 <|audio|>"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": "a"}], "images": [[1]]}, "0 <|image|>"),
    ({"messages": [{"role": "user", "content": "x"}]}, "last message must be the assistant"),
    ({"messages": [{"role": "user", "content": "<|image|>"},
                   {"role": "assistant", "content": "a"}], "images": ["x.png"]}, "is a path"),
    ({"messages": [{"role": "user", "content": "<|audio|>"},
                   {"role": "assistant", "content": "a"}], "audios": [[1, 2]]}, "float tensor"),
]  # fmt: skip


@pytest.mark.parametrize("sample,message", BAD)
def test_bad_chat_samples_are_named(
    sample: dict[str, Any], message: str, released: tuple[VocabLayout, TextTokenizer]
) -> None:
    layout, text = released
    with pytest.raises(DataError, match=message.replace("|", r"\|")):
        ChatTextTemplate(layout, text).build(sample, index=3)


def test_encode_media_names_a_missing_encoder_or_file(tmp_path: Path) -> None:
    sample = {"messages": [{"role": "assistant", "content": "<|audio|>"}], "audios": ["a.wav"]}
    with pytest.raises(DataError, match="no file"):
        encode_media(sample, root=tmp_path, said=lambda p: torch.zeros(1))
    (tmp_path / "a.wav").touch()
    with pytest.raises(DataError, match="assistant turn; no encoder"):
        encode_media(sample, root=tmp_path, heard=lambda p: torch.zeros(1))
