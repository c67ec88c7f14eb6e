"""The miniature corpus: real digit images and real synthesised speech, cached on disk.

- images: the 1,797 handwritten 8x8 digits of `sklearn.datasets.load_digits` (scanned by
  UCI from 43 writers), split into train and test once (stratified, fixed seed);
- speech: espeak-ng utterances of the digit words ("seven"), drawing commands ("draw a
  seven") and the three questions, in the training voices and speeds for train and in the
  held-out voices (`TEST_VOICES`, never heard in training) for test;
- text: captions ("a handwritten digit seven"), questions and their answers.

Everything is built once and cached in `workdir/corpus.pt` (a few MB), so reruns start at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mini_omni.speech_synth import (
    DIGIT_WORDS,
    TEST_VOICES,
    TRAIN_VOICES,
    synthesize_speech,
)

SAMPLE_RATE = 16_000
QUESTIONS: tuple[str, ...] = (
    "what digit is this?",
    "is this digit even?",
    "is this digit bigger than four?",
)
"""The visual questions, written and spoken; `answer(question, digit)` answers them."""


def caption(digit: int) -> str:
    """The caption of a digit image: `"a handwritten digit seven"`."""
    return f"a handwritten digit {DIGIT_WORDS[digit]}"


def draw_command(digit: int) -> str:
    """The text-to-image (and, spoken, speech-to-image) prompt: `"draw a seven"`."""
    article = "an" if DIGIT_WORDS[digit] == "eight" else "a"
    return f"draw {article} {DIGIT_WORDS[digit]}"


def answer(question: str, digit: int) -> str:
    """The answer to one of `QUESTIONS` about an image of `digit`."""
    if question == QUESTIONS[0]:
        return DIGIT_WORDS[digit]
    if question == QUESTIONS[1]:
        return "yes" if digit % 2 == 0 else "no"
    if question == QUESTIONS[2]:
        return "yes" if digit > 4 else "no"
    raise ValueError(f"unknown question {question!r}; known: {QUESTIONS}")


def all_texts() -> list[str]:
    """Every text string of the corpus (to train the text tokenizer on)."""
    texts = [caption(d) for d in range(10)] + [draw_command(d) for d in range(10)]
    texts += list(DIGIT_WORDS) + list(QUESTIONS) + ["yes", "no"]
    return texts


@dataclass
class Utterance:
    """One synthesised utterance.

    Attributes:
        text: what is said.
        kind: `"word"` (a digit word), `"command"` (`draw_command`) or `"question"`.
        digit: the digit a word or command is about (`None` for questions).
        voice: espeak-ng voice.
        speed: words per minute.
        split: `"train"` (training voices) or `"test"` (held-out voices).
        waveform: mono float32 at `SAMPLE_RATE`.
    """

    text: str
    kind: str
    digit: int | None
    voice: str
    speed: int
    split: str
    waveform: Tensor


@dataclass
class Corpus:
    """Digit images (pixels in `[0, 1]`, shape `(n, 1, 8, 8)`) and utterances."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    utterances: list[Utterance] = field(default_factory=list)

    def speech(
        self, split: str, kind: str | None = None, digit: int | None = None
    ) -> list[Utterance]:
        """Utterances of a split, optionally of one kind and about one digit."""
        return [
            u
            for u in self.utterances
            if u.split == split
            and (kind is None or u.kind == kind)
            and (digit is None or u.digit == digit)
        ]

    def images(self, split: str) -> tuple[Tensor, Tensor]:
        """`(images, labels)` of a split."""
        if split == "train":
            return self.train_images, self.train_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def summary(self) -> dict[str, int]:
        """Counts of each part, for the report."""
        out = {
            "train images": len(self.train_labels),
            "test images": len(self.test_labels),
        }
        for split in ("train", "test"):
            out[f"{split} utterances"] = len(self.speech(split))
        return out

    # ------------------------------------------------------------------ files
    def save(self, path: Path) -> None:
        """Write the corpus to one `torch.save` file."""
        utterances = [
            {
                "text": u.text,
                "kind": u.kind,
                "digit": -1 if u.digit is None else u.digit,
                "voice": u.voice,
                "speed": u.speed,
                "split": u.split,
                "waveform": u.waveform,
            }
            for u in self.utterances
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "train_images": self.train_images,
                "train_labels": self.train_labels,
                "test_images": self.test_images,
                "test_labels": self.test_labels,
                "utterances": utterances,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> Corpus:
        """Read a corpus written by `save`."""
        data = torch.load(path, weights_only=True)
        utterances = [
            Utterance(**{**u, "digit": None if u["digit"] < 0 else int(u["digit"])})
            for u in data.pop("utterances")
        ]
        return cls(**data, utterances=utterances)


def _digit_images(test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32) / 16.0  # 0..16 grey levels
    labels = np.asarray(digits.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )

    def as_tensor(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x).unsqueeze(1).contiguous()

    return (
        as_tensor(x_train),
        torch.from_numpy(y_train),
        as_tensor(x_test),
        torch.from_numpy(y_test),
    )


def _scripts() -> list[tuple[str, str, int | None]]:
    """`(text, kind, digit)` of every utterance type."""
    out: list[tuple[str, str, int | None]] = [(w, "word", d) for d, w in enumerate(DIGIT_WORDS)]
    out += [(draw_command(d), "command", d) for d in range(10)]
    out += [(q, "question", None) for q in QUESTIONS]
    return out


def build_corpus(
    *,
    train_speeds: Sequence[int] = (120, 160, 200),
    test_speeds: Sequence[int] = (140, 180),
    train_voices: Sequence[str] = TRAIN_VOICES,
    test_voices: Sequence[str] = TEST_VOICES,
    test_fraction: float = 0.25,
    seed: int = 0,
    progress: bool = True,
) -> Corpus:
    """Load the digits and synthesise every utterance (about 1 s for the defaults)."""
    train_x, train_y, test_x, test_y = _digit_images(test_fraction, seed)
    plan = [
        (text, kind, digit, voice, speed, split)
        for split, voices, speeds in (
            ("train", train_voices, train_speeds),
            ("test", test_voices, test_speeds),
        )
        for voice in voices
        for speed in speeds
        for text, kind, digit in _scripts()
    ]
    utterances = [
        Utterance(
            text=text,
            kind=kind,
            digit=digit,
            voice=voice,
            speed=speed,
            split=split,
            waveform=synthesize_speech(text, voice=voice, speed=speed, sample_rate=SAMPLE_RATE),
        )
        for text, kind, digit, voice, speed, split in tqdm(
            plan, desc="espeak-ng", disable=not progress, leave=False
        )
    ]
    return Corpus(train_x, train_y, test_x, test_y, utterances)


def load_or_build_corpus(workdir: Path, *, progress: bool = True, **kwargs: object) -> Corpus:
    """The cached corpus of `workdir` (built and saved on first use)."""
    path = workdir / "corpus.pt"
    if path.exists():
        return Corpus.load(path)
    corpus = build_corpus(progress=progress, **kwargs)  # type: ignore[arg-type]
    corpus.save(path)
    return corpus
