"""Metrics of every task, computed on generated outputs.

Text outputs are compared with the references by the library's metrics (word error rate for
ASR, exact match for captions and answers, both on normalised text); generated images and
speech are scored by the judges of `judges.py`, which were fitted on real data only. An
image output with fewer codes than an image, or an empty speech output, counts as wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from omni_blocks.data import TaskTemplate
from omni_blocks.metrics import AnswerAccuracy, JudgeScore, WordErrorRate

from .judges import DigitJudge, SpokenWordJudge
from .tasks import Example
from .tokenizing import Tokenizers


@dataclass
class Generation:
    """What a model generated for a list of examples.

    Attributes:
        outputs: parsed outputs (text strings, or local codes), one per example.
        nfe: forward passes of the network per example (mean over the examples).
        seconds: wall time of the generation.
        trajectories: optionally, per example, the step at which each target position was
            unmasked (diffusion only).
    """

    outputs: list[Any]
    nfe: float
    seconds: float
    trajectories: list[Tensor] | None = None


GenerateFn = Callable[[str, TaskTemplate, list[Example], int], Generation]
"""`(task, template, examples, target_length) -> Generation`: a model under evaluation."""


@dataclass
class TaskResult:
    """One task's score and how it was measured."""

    task: str
    metric: str
    value: float
    n: int
    nfe: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)
    generation: Generation | None = None
    scores: list[float] = field(default_factory=list)
    """Per example: 1/0 (accuracies), or word errors (ASR; `weights` holds the words)."""
    weights: list[float] = field(default_factory=list)
    """Per example, for a ratio metric (ASR: reference words); empty otherwise."""


def image_codes(output: Any, tokens: int) -> Tensor | None:
    """The first `tokens` codes of a generated image, or `None` if it holds fewer.

    An image has a fixed size, so codes written past it (where the end token belongs) are
    ignored; an image cut short by an early end token is invalid.
    """
    codes = torch.as_tensor(output, dtype=torch.long).flatten()
    return codes[:tokens] if codes.numel() >= tokens else None


def as_images(outputs: Sequence[Any], tokenizers: Tokenizers) -> tuple[Tensor, Tensor]:
    """Decoded images `(n, 1, 8, 8)` and a validity flag per output.

    An invalid output (too few codes) is drawn with its codes padded with code 0 (the blank
    background), and judged wrong.
    """
    tokens = tokenizers.image.tokens_per_item
    rows, valid = [], []
    for output in outputs:
        codes = image_codes(output, tokens)
        valid.append(codes is not None)
        if codes is None:
            codes = torch.zeros(tokens, dtype=torch.long)
            partial = torch.as_tensor(output, dtype=torch.long).flatten()
            codes[: partial.numel()] = partial
        rows.append(codes)
    return tokenizers.image.decode(torch.stack(rows)), torch.tensor(valid)


def speech_waveforms(outputs: Sequence[Any], tokenizers: Tokenizers) -> list[Tensor | None]:
    """Griffin-Lim waveforms of generated speech codes (`None` for an empty output)."""
    out: list[Tensor | None] = []
    for codes in outputs:
        codes = torch.as_tensor(codes, dtype=torch.long).flatten()
        if codes.numel() == 0:
            out.append(None)
            continue
        wave = tokenizers.speech.decode(codes)
        assert isinstance(wave, Tensor)
        out.append(wave)
    return out


@dataclass
class ImageJudgeScore:
    """A [`Judge`][omni_blocks.metrics.Judge]: 1 when the digit judge sees the asked digit.

    Outputs are image codes; they are decoded by the image tokenizer and classified by the
    digit judge (trained on real images). An invalid output scores 0.
    """

    judge: DigitJudge
    tokenizers: Tokenizers

    def score(self, outputs: Sequence[Any], examples: Sequence[Example]) -> Tensor:
        images, valid = as_images(outputs, self.tokenizers)
        digits = torch.tensor([int(e["digit"]) for e in examples])
        return ((self.judge.predict(images) == digits) & valid).float()


@dataclass
class SpeechJudgeScore:
    """A [`Judge`][omni_blocks.metrics.Judge]: 1 when the speech judge hears the asked word.

    Outputs are speech codes, turned into waveforms by the speech tokenizer (Griffin-Lim)
    and classified by the spoken-word judge (trained on real espeak-ng audio). An empty
    output scores 0.
    """

    judge: SpokenWordJudge
    tokenizers: Tokenizers

    def score(self, outputs: Sequence[Any], examples: Sequence[Example]) -> Tensor:
        waves = speech_waveforms(outputs, self.tokenizers)
        present = [i for i, w in enumerate(waves) if w is not None]
        scores = torch.zeros(len(outputs))
        if present:
            heard = self.judge.predict([waves[i] for i in present])
            for k, i in enumerate(present):
                scores[i] = float(int(heard[k]) == int(examples[i]["digit"]))
        return scores


METRIC_NAMES = {
    "asr": "WER (lower is better)",
    "caption": "exact match",
    "vqa": "exact match",
    "spoken_vqa": "exact match",
    "tts": "intelligibility (speech judge)",
    "t2i": "digit judge accuracy",
    "s2i": "digit judge accuracy",
    "inpainting": "digit judge accuracy",
}


def score_task(
    task: str,
    examples: list[Example],
    generation: Generation,
    *,
    tokenizers: Tokenizers,
    digit_judge: DigitJudge,
    word_judge: SpokenWordJudge,
) -> TaskResult:
    """The metric of `task` on `generation` (outputs aligned with `examples`).

    Text tasks use the library's torchmetrics (word error rate, answer accuracy on
    normalised text); image and speech tasks a `JudgeScore` with the judges above.
    """
    outputs = generation.outputs
    metric: Metric
    scores: list[float] = []
    weights: list[float] = []
    if task == "asr":
        metric = WordErrorRate()
        metric.update([str(o) for o in outputs], [e["text"] for e in examples])
        for o, e in zip(outputs, examples, strict=True):  # per example, for intervals
            one = WordErrorRate()
            one.update([str(o)], [e["text"]])
            words = float(len(str(e["text"]).split()))
            scores.append(float(one.compute()) * words)
            weights.append(words)
    elif task in ("caption", "vqa", "spoken_vqa"):
        key = "caption" if task == "caption" else "answer"
        metric = AnswerAccuracy()
        metric.update([str(o) for o in outputs], [e[key] for e in examples])
        for o, e in zip(outputs, examples, strict=True):
            one = AnswerAccuracy()
            one.update([str(o)], [e[key]])
            scores.append(float(one.compute()))
    elif task == "tts":
        judge = SpeechJudgeScore(word_judge, tokenizers)
        metric = JudgeScore(judge)
        metric.update(outputs, examples)
        scores = judge.score(outputs, examples).tolist()
    elif task in ("t2i", "s2i", "inpainting"):
        image_judge = ImageJudgeScore(digit_judge, tokenizers)
        metric = JudgeScore(image_judge)
        metric.update(outputs, examples)
        scores = image_judge.score(outputs, examples).tolist()
    else:
        raise ValueError(f"unknown task {task!r}; known: {sorted(METRIC_NAMES)}")
    extra = {}
    if task in ("t2i", "s2i", "inpainting"):
        tokens = tokenizers.image.tokens_per_item
        valid = [image_codes(o, tokens) is not None for o in outputs]
        extra["valid"] = sum(valid) / max(len(valid), 1)
    return TaskResult(
        task,
        METRIC_NAMES[task],
        float(metric.compute()),
        n=len(examples),
        nfe=generation.nfe,
        seconds=generation.seconds,
        extra=extra,
        generation=generation,
        scores=scores,
        weights=weights,
    )


def t2i_s2i_agreement(
    t2i_outputs: Sequence[Any],
    s2i_outputs: Sequence[Any],
    tokenizers: Tokenizers,
    judge: DigitJudge,
) -> dict[str, float]:
    """How alike the images from a text prompt and from its spoken version are (paired).

    Returns the fraction of pairs the judge reads as the same digit, and the fraction of
    image codes that are identical.
    """
    a, valid_a = as_images(t2i_outputs, tokenizers)
    b, valid_b = as_images(s2i_outputs, tokenizers)
    same_digit = (judge.predict(a) == judge.predict(b)) & valid_a & valid_b
    tokens = tokenizers.image.tokens_per_item
    same_codes = []
    for x, y in zip(t2i_outputs, s2i_outputs, strict=True):
        cx, cy = image_codes(x, tokens), image_codes(y, tokens)
        same = 0.0 if cx is None or cy is None else float((cx == cy).float().mean())
        same_codes.append(same)
    return {
        "same digit": float(same_digit.float().mean()),
        "same codes": sum(same_codes) / max(len(same_codes), 1),
    }
