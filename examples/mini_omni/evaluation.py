"""Metrics of every task, computed on generated outputs.

Text outputs are compared with the references (word error rate for ASR, exact match for
captions and answers); generated images and speech are scored by the judges of
`judges.py`, which were fitted on real data only. An image output that does not hold
exactly one image's worth of codes, or an empty speech output, counts as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from omni_blocks.data import TaskTemplate

from .judges import DigitJudge, SpokenWordJudge
from .tokenizing import Tokenizers

Example = dict[str, Any]


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


def normalise(text: str) -> str:
    """Lower case, punctuation removed, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words (after `normalise`)."""
    errors = sum(
        edit_distance(normalise(r).split(), normalise(h).split())
        for r, h in zip(refs, hyps, strict=True)
    )
    words = sum(len(normalise(r).split()) for r in refs)
    return errors / max(words, 1)


def exact_match(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Fraction of outputs equal to their reference (after `normalise`)."""
    hits = [normalise(r) == normalise(h) for r, h in zip(refs, hyps, strict=True)]
    return sum(hits) / max(len(hits), 1)


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


def image_accuracy(
    outputs: Sequence[Any], digits: Sequence[int], tokenizers: Tokenizers, judge: DigitJudge
) -> tuple[float, Tensor, Tensor]:
    """Judge accuracy of generated images, with the judged digit (-1 when invalid)."""
    images, valid = as_images(outputs, tokenizers)
    judged = torch.where(valid, judge.predict(images), torch.full_like(valid, -1, dtype=torch.long))
    accuracy = float((judged == torch.tensor(list(digits))).float().mean())
    return accuracy, judged, images


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


def speech_accuracy(
    outputs: Sequence[Any], digits: Sequence[int], tokenizers: Tokenizers, judge: SpokenWordJudge
) -> tuple[float, list[Tensor | None]]:
    """Intelligibility: how often the speech judge hears the intended digit word."""
    waves = speech_waveforms(outputs, tokenizers)
    present = [w for w in waves if w is not None]
    judged = judge.predict(present).tolist() if present else []
    hits, k = 0, 0
    for wave, digit in zip(waves, digits, strict=True):
        if wave is not None:
            hits += int(judged[k] == digit)
            k += 1
    return hits / max(len(digits), 1), waves


def score_task(
    task: str,
    examples: list[Example],
    generation: Generation,
    *,
    tokenizers: Tokenizers,
    digit_judge: DigitJudge,
    word_judge: SpokenWordJudge,
) -> TaskResult:
    """The metric of `task` on `generation` (outputs aligned with `examples`)."""
    outputs = generation.outputs
    common = {"n": len(examples), "nfe": generation.nfe, "seconds": generation.seconds}
    if task == "asr":
        wer = word_error_rate([e["text"] for e in examples], outputs)
        return TaskResult(task, "WER (lower is better)", wer, **common, generation=generation)
    if task in ("caption", "vqa", "spoken_vqa"):
        key = "caption" if task == "caption" else "answer"
        acc = exact_match([e[key] for e in examples], outputs)
        return TaskResult(task, "exact match", acc, **common, generation=generation)
    digits = [int(e["digit"]) for e in examples]
    if task == "tts":
        acc, _ = speech_accuracy(outputs, digits, tokenizers, word_judge)
        return TaskResult(
            task, "intelligibility (speech judge)", acc, **common, generation=generation
        )
    if task in ("t2i", "s2i", "inpainting"):
        acc, judged, _ = image_accuracy(outputs, digits, tokenizers, digit_judge)
        valid = float((judged >= 0).float().mean())
        return TaskResult(
            task,
            "digit judge accuracy",
            acc,
            **common,
            extra={"valid": valid},
            generation=generation,
        )
    raise ValueError(f"unknown task {task!r}")


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
