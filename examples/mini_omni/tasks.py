"""The eight tasks of the miniature: templates, and their train and test examples.

Examples are plain dicts of strings and local codes, as the task templates of
[`omni_blocks.data`][omni_blocks.data] take them. Every training example comes from the
training images and the training voices; every test example from the held-out images and
the held-out voices. Inpainting has no training examples: it is zero-shot (the model only
ever learnt text-to-image).

| task | input | target |
|---|---|---|
| `t2i` | "draw a seven" | image codes |
| `caption` | image | "a handwritten digit seven" |
| `vqa` | image + "is this digit even?" | "no" |
| `asr` | speech | its text |
| `tts` | "seven" | speech codes (a spoken digit word) |
| `s2i` | spoken "draw a seven" | image codes |
| `spoken_vqa` | image + spoken question | "yes" / "no" / a digit word |
| `inpainting` | image codes with the bottom half unknown | the full image codes |
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mini_omni.speech_synth import DIGIT_WORDS
from omni_blocks.data import (
    AsrTemplate,
    CaptionTemplate,
    ChatFormat,
    InpaintingTemplate,
    SpeechToImageTemplate,
    SpokenVqaTemplate,
    TaskTemplate,
    TextToImageTemplate,
    TtsTemplate,
    VqaTemplate,
)
from omni_blocks.data.speech_input import SpeechInput
from omni_blocks.speech import SpeechFrontEnd

from .corpus import QUESTIONS, Corpus, Utterance, answer, caption, draw_command
from .tokenizing import Tokenizers

Example = dict[str, Any]

# One short instruction per task (the model tells tasks apart by them and by the prompt's
# modalities); the recipe's text tokenizer is trained on them so each is a token or two.
INSTRUCTIONS: dict[str, str] = {
    "asr": "Transcribe.",
    "tts": "Say:",
    "caption": "Describe.",
    "vqa": "",
    "t2i": "",
    "s2i": "Draw.",  # the spoken command is the prompt; the text says which task it is
    "spoken_vqa": "",
    "inpainting": "",  # the same prompt as text-to-image: inpainting is zero-shot
}
CHAT = ChatFormat(user_start="<|im_start|>", user_end="<|im_end|>", assistant_start="")
"""ChatML markers around the user turn, without the role names: on 20 to 60-token sequences
the three tokens of `"user\n"` and `"assistant\n"` would cost a tenth of the compute."""

TASKS: tuple[str, ...] = (
    "t2i",
    "caption",
    "vqa",
    "asr",
    "tts",
    "s2i",
    "spoken_vqa",
    "inpainting",
)


def make_templates(
    tokenizers: Tokenizers, speech_input: SpeechInput | None = None
) -> dict[str, TaskTemplate]:
    """One template per task, all on the miniature's layout and text tokenizer; the tasks
    that hear speech take it as `speech_input` says (default: codes)."""
    layout, text = tokenizers.layout, tokenizers.text
    image_tokens = tokenizers.image.tokens_per_item
    i, kw = INSTRUCTIONS, {"chat": CHAT}
    hear: dict[str, Any] = {} if speech_input is None else {"speech_input": speech_input}
    images = {"image_tokens": image_tokens, **kw}
    return {
        "t2i": TextToImageTemplate(layout, text, i["t2i"], **images),
        "caption": CaptionTemplate(layout, text, i["caption"], **images),
        "vqa": VqaTemplate(layout, text, i["vqa"], **images),
        "asr": AsrTemplate(layout, text, i["asr"], **kw, **hear),
        "tts": TtsTemplate(layout, text, i["tts"], **kw),
        "s2i": SpeechToImageTemplate(layout, text, i["s2i"], **images, **hear),
        "spoken_vqa": SpokenVqaTemplate(layout, text, i["spoken_vqa"], **images, **hear),
        "inpainting": InpaintingTemplate(layout, text, i["inpainting"], **images),
    }


@dataclass
class TaskData:
    """Examples of every task, per split, and the target lengths used for generation."""

    train: dict[str, list[Example]] = field(default_factory=dict)
    test: dict[str, list[Example]] = field(default_factory=dict)
    target_lengths: dict[str, int] = field(default_factory=dict)


def _by_digit(utterances: Sequence[Utterance]) -> dict[int, list[Utterance]]:
    out: dict[int, list[Utterance]] = {d: [] for d in range(10)}
    for u in utterances:
        assert u.digit is not None
        out[u.digit].append(u)
    return out


def _by_text(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = {}
    for u in utterances:
        out.setdefault(u.text, []).append(u)
    return out


def _split_examples(
    corpus: Corpus,
    tokenizers: Tokenizers,
    split: str,
    rng: random.Random,
    pairings: int,
    front_end: SpeechFrontEnd | None = None,
) -> dict[str, list[Example]]:
    images, labels = corpus.images(split)
    image_codes = tokenizers.encode_images(images)
    speech = corpus.speech(split)
    speech_codes = dict(
        zip(map(id, speech), tokenizers.encode_speech([u.waveform for u in speech]), strict=True)
    )
    commands = _by_digit(corpus.speech(split, "command"))
    questions = _by_text(corpus.speech(split, "question"))

    rate = tokenizers.speech.sample_rate
    features = {} if front_end is None else {id(u): front_end(u.waveform, rate) for u in speech}

    def with_codes(u: Utterance) -> Tensor:
        return speech_codes[id(u)]

    def heard(u: Utterance) -> Example:
        """The speech a model hears: codes, and with a front end its feature frames."""
        out: Example = {"speech_codes": speech_codes[id(u)]}
        if features:
            out["speech_features"] = features[id(u)]
        return out

    out: dict[str, list[Example]] = {task: [] for task in TASKS}
    for n, (codes, label) in enumerate(zip(image_codes, labels.tolist(), strict=True)):
        base = {"id": f"{split}-img{n}", "image_codes": codes, "digit": label}
        out["t2i"].append({**base, "caption": draw_command(label)})
        out["caption"].append({**base, "caption": caption(label)})
        known = torch.zeros(codes.numel(), dtype=torch.bool)
        known[: codes.numel() // 2] = True  # the top half of the 4x4 code grid is known
        out["inpainting"].append({**base, "known_mask": known, "caption": draw_command(label)})
        for question in QUESTIONS:
            qa = {**base, "question": question, "answer": answer(question, label)}
            out["vqa"].append(qa)
            for spoken in rng.sample(
                questions[question], k=min(pairings, len(questions[question]))
            ):
                out["spoken_vqa"].append({**qa, **heard(spoken)})
        for spoken in rng.sample(commands[label], k=min(pairings, len(commands[label]))):
            out["s2i"].append({**base, **heard(spoken), "voice": spoken.voice})
    for u in speech:
        example = {
            "id": f"{split}-{u.voice}-{u.speed}-{u.text}",
            **heard(u),
            "text": u.text,
            "digit": -1 if u.digit is None else u.digit,
            "voice": u.voice,
        }
        out["asr"].append(example)
        if u.kind == "word":
            out["tts"].append(example)
    return out


def build_task_data(
    corpus: Corpus,
    tokenizers: Tokenizers,
    *,
    pairings: int = 2,
    seed: int = 0,
    front_end: SpeechFrontEnd | None = None,
) -> TaskData:
    """Every task's examples from the corpus (train: training images and voices); with a
    `front_end`, the heard speech (ASR, speech-to-image, spoken VQA) carries its feature
    frames (`speech_features`) beside its codes."""
    rng = random.Random(seed)
    data = TaskData(
        train=_split_examples(corpus, tokenizers, "train", rng, pairings, front_end),
        test=_split_examples(corpus, tokenizers, "test", rng, pairings, front_end),
    )
    data.train["inpainting"] = []  # zero-shot: never trained
    text_tokens = max(
        len(tokenizers.text.encode(s))  # type: ignore[arg-type]
        for s in [caption(d) for d in range(10)]
        + list(DIGIT_WORDS)
        + ["yes", "no"]
        + [u.text for u in corpus.utterances]
    )
    speech_tokens = max(len(e["speech_codes"]) for e in data.train["tts"])
    image_tokens = tokenizers.image.tokens_per_item
    # Room for the response, its end token and a few tail pads (the model learns to pad).
    data.target_lengths = {
        "t2i": image_tokens + 1,
        "s2i": image_tokens + 1,
        "inpainting": image_tokens + 1,
        "caption": text_tokens + 2,
        "vqa": text_tokens + 2,
        "spoken_vqa": text_tokens + 2,
        "asr": text_tokens + 2,
        "tts": speech_tokens + 2,
    }
    return data


def balanced_subset(examples: list[Example], n: int, seed: int = 0) -> list[Example]:
    """At most `n` examples, drawn round-robin over digits so every digit is represented."""
    if len(examples) <= n:
        return list(examples)
    rng = random.Random(seed)
    groups: dict[int, list[Example]] = {}
    for e in examples:
        groups.setdefault(int(e.get("digit", -1)), []).append(e)
    for g in groups.values():
        rng.shuffle(g)
    out: list[Example] = []
    while len(out) < n:
        for key in sorted(groups):
            if groups[key] and len(out) < n:
                out.append(groups[key].pop())
    return out
