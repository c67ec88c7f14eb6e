"""Evaluation of generated outputs: torchmetrics for text, a `Judge` hook for images and speech.

- [`WordErrorRate`][omni_blocks.metrics.WordErrorRate] and
  [`CharErrorRate`][omni_blocks.metrics.CharErrorRate] for ASR: torchmetrics' metrics on
  normalised text (lower case, no punctuation; LibriSpeech-style scoring);
- [`AnswerAccuracy`][omni_blocks.metrics.AnswerAccuracy] for captioning and (spoken) VQA:
  the fraction of outputs equal to the reference after normalisation (or containing it);
- [`Judge`][omni_blocks.metrics.Judge]: anything that scores generated images or speech
  (a classifier of the generated digit, an ASR model listening to TTS output, CLIP, ...),
  averaged by [`JudgeScore`][omni_blocks.metrics.JudgeScore];
- [`bootstrap_interval`][omni_blocks.metrics.bootstrap_interval]: a confidence interval for
  a figure computed from per-example scores (`scipy.stats.bootstrap`);
- [`evaluate`][omni_blocks.metrics.evaluate] runs `module.generate` over examples and
  updates a metric; [`GenerationEval`][omni_blocks.metrics.GenerationEval] does it at the
  end of every validation epoch of a `Trainer` and logs `val/<task>/<metric>`.

Every metric is a `torchmetrics.Metric`, so under DDP each process scores its share of the
examples and `compute()` reduces across processes.

```python
from omni_blocks.metrics import AnswerAccuracy, WordErrorRate

wer = WordErrorRate()
wer.update(["The cat sat."], ["the cat sat on the mat"])
assert abs(float(wer.compute()) - 0.5) < 1e-6      # 3 deletions / 6 words
acc = AnswerAccuracy()
acc.update(["Seven!", "two"], ["seven", "three"])
assert float(acc.compute()) == 0.5
```
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
import torchmetrics
from jaxtyping import Float
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import text as tm_text

from omni_blocks._optional import require
from omni_blocks.data.templates import (
    TaskTemplate,
)
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.sampling.base import Sampler

__all__ = [
    "AnswerAccuracy",
    "CharErrorRate",
    "GenerationEval",
    "Interval",
    "Judge",
    "JudgeScore",
    "WordErrorRate",
    "bootstrap_interval",
    "default_metric",
    "evaluate",
    "normalize_text",
    "reference_key",
]

_PUNCTUATION = re.compile(r"[^\w\s']|(?<!\w)'|'(?!\w)")


@dataclass(frozen=True)
class Interval:
    """A figure and its confidence interval.

    Attributes:
        value: the statistic on the sample itself.
        low: the interval's lower end.
        high: the interval's upper end.
        confidence: the interval's confidence level.
        n: the sample size.
    """

    value: float
    low: float
    high: float
    confidence: float
    n: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_interval(
    values: Sequence[float | int] | Tensor,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """The mean of per-example scores with a bootstrap confidence interval.

    `scipy.stats.bootstrap` with the bias-corrected and accelerated (BCa) interval (Efron,
    1987), seeded: the same scores give the same interval. For a proportion (accuracy, 0/1
    scores) of every example right or every one wrong, the interval is the single point.

    Args:
        values: one score per example (0/1 for accuracy, a WER per utterance, ...).
        confidence: the confidence level.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling.
        method: `"BCa"`, `"percentile"` or `"basic"` (scipy's names).

    Raises:
        ValueError: no values, non-finite values, or a confidence outside (0, 1).
        ImportError: scipy is not installed (the message names the `stats` extra).
    """
    data = torch.as_tensor(values, dtype=torch.float64).flatten()
    if data.numel() == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("bootstrap_interval got NaN or infinite values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    mean = float(data.mean())
    if data.numel() == 1 or bool((data == data[0]).all()):
        return Interval(mean, mean, mean, confidence, int(data.numel()))
    stats = require("scipy.stats", "confidence intervals")
    result = stats.bootstrap(
        (data.numpy(),),
        lambda x, axis: x.mean(axis=axis),
        confidence_level=confidence,
        n_resamples=n_resamples,
        method=method,
        rng=seed,
    )
    low, high = (float(x) for x in result.confidence_interval)
    return Interval(mean, low, high, confidence, int(data.numel()))


def normalize_text(text: str) -> str:
    """Lower case, NFKC, punctuation removed (apostrophes inside words kept), single spaces.

    The usual normalisation before scoring ASR on LibriSpeech-style references, where the
    references are upper-case without punctuation.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(text.split())


def _strings(values: str | Sequence[str], name: str) -> list[str]:
    items = [values] if isinstance(values, str) else list(values)
    bad = [type(v).__name__ for v in items if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name} must be strings; got {bad[0]} (parse outputs to text first)")
    return items


def _transcript_pairs(
    preds: str | Sequence[str], target: str | Sequence[str], normalize: bool
) -> tuple[list[str], list[str]]:
    """Predictions and references as equally long lists, normalised when asked."""
    p, t = _strings(preds, "preds"), _strings(target, "target")
    if len(p) != len(t):
        raise ValueError(f"{len(p)} predictions but {len(t)} references")
    if normalize:
        p, t = [normalize_text(s) for s in p], [normalize_text(s) for s in t]
    return p, t


class _NormalizedTranscripts:
    """`normalize` and an `update` that checks and normalises transcripts, for a torchmetrics
    text metric listed after this class among the bases."""

    def __init__(self, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize

    def update(self, preds: str | Sequence[str], target: str | Sequence[str]) -> None:
        """Add transcripts `preds` against references `target`."""
        super().update(*_transcript_pairs(preds, target, self.normalize))  # type: ignore[misc]


class WordErrorRate(_NormalizedTranscripts, tm_text.WordErrorRate):
    """torchmetrics' word error rate on normalised text (see `normalize_text`).

    Args:
        normalize: normalise predictions and references before scoring.
    """


class CharErrorRate(_NormalizedTranscripts, tm_text.CharErrorRate):
    """torchmetrics' character error rate on normalised text (see `normalize_text`).

    Args:
        normalize: normalise predictions and references before scoring.
    """


class AnswerAccuracy(torchmetrics.Metric):
    """Fraction of outputs that match their reference after `normalize_text`.

    Args:
        contains: count an output as correct when the reference appears in it as whole
            words (lenient VQA scoring: "it is seven" answers "seven") instead of requiring
            equality.
    """

    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, contains: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contains = contains
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def _match(self, pred: str, ref: str) -> bool:
        p, r = normalize_text(pred), normalize_text(ref)
        if not self.contains:
            return p == r
        return f" {r} " in f" {p} " if r else not p

    def update(self, preds: str | Sequence[str], target: str | Sequence[str]) -> None:
        """Add outputs `preds` against references `target`."""
        p, t = _strings(preds, "preds"), _strings(target, "target")
        if len(p) != len(t):
            raise ValueError(f"{len(p)} predictions but {len(t)} references")
        self.correct += sum(self._match(a, b) for a, b in zip(p, t, strict=True))
        self.total += len(p)

    def compute(self) -> Tensor:
        """The accuracy (NaN before any update)."""
        return self.correct / self.total if self.total > 0 else torch.tensor(float("nan"))


@runtime_checkable
class Judge(Protocol):
    """Scores generated outputs that no string metric can: images, speech.

    A judge receives the parsed outputs (local codes, or whatever a decoder made of them)
    and the examples they were generated from, and returns one score per output, higher is
    better (for instance 1.0 when a digit classifier recognises the requested digit in a
    generated image, or `1 - WER` of an ASR model listening to generated speech).
    """

    def score(
        self, outputs: Sequence[Any], examples: Sequence[Mapping[str, Any]]
    ) -> Float[Tensor, " n"]:
        """One score per output."""
        ...


class JudgeScore(torchmetrics.Metric):
    """The mean of a [`Judge`][omni_blocks.metrics.Judge]'s scores.

    Args:
        judge: the scorer.
    """

    higher_is_better = True
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, judge: Judge, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(judge, Judge):
            raise TypeError(f"judge must implement Judge.score; got {type(judge).__name__}")
        self.judge = judge
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outputs: Sequence[Any], examples: Sequence[Mapping[str, Any]]) -> None:
        """Score `outputs` (generated from `examples`) with the judge."""
        if len(outputs) != len(examples):
            raise ValueError(f"{len(outputs)} outputs but {len(examples)} examples")
        scores = torch.as_tensor(self.judge.score(outputs, examples), dtype=torch.float64)
        if scores.shape != (len(outputs),):
            raise ValueError(
                f"{type(self.judge).__name__}.score returned shape {tuple(scores.shape)}; "
                f"expected one score per output ({len(outputs)},)"
            )
        self.total += scores.sum().to(self.total.device)
        self.count += len(outputs)

    def compute(self) -> Tensor:
        """The mean score (NaN before any update)."""
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


# ---------------------------------------------------------------------------------- tasks


def reference_key(template: TaskTemplate) -> str | None:
    """The example key holding a text task's reference (`None` for image / speech tasks):
    the template's own `reference_key`."""
    return template.reference_key


def default_metric(template: TaskTemplate) -> torchmetrics.Metric:
    """WER for ASR, answer accuracy for captioning and (spoken) VQA.

    Raises:
        ValueError: image and speech tasks, which need a `JudgeScore` with a judge.
    """
    if template.reference_key is not None:
        return WordErrorRate() if template.text_metric == "wer" else AnswerAccuracy()
    raise ValueError(
        f"{type(template).__name__} generates {template.target_modality.value}; score it with "
        "JudgeScore(judge) and a Judge that understands that modality"
    )


def _shard(n: int, rank: int, world: int) -> list[int]:
    return list(range(rank, n, world))


def evaluate(
    module: OmniDiffusionModule,
    template: TaskTemplate,
    examples: Sequence[Mapping[str, Any]],
    metric: torchmetrics.Metric | None = None,
    *,
    target_length: int | None = None,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    progress: bool = False,
) -> float:
    """Generate an output for every example and score it.

    Under DDP (an initialised process group) each process generates its share of the
    examples and the metric reduces across processes.

    Args:
        module: the model (its `sampler` generates, unless `sampler` is given).
        template: the task's template.
        examples: examples with the task's input keys and its reference (`text` for ASR,
            `caption`, `answer`); a `JudgeScore` receives the examples themselves.
        metric: the metric (default: `default_metric(template)`); it is reset first.
        target_length: positions to generate per example (see `TaskTemplate.prompt`).
        batch_size: examples per sampler call.
        generator: makes sampling deterministic.
        sampler: use this sampler instead of the module's.
        progress: show a tqdm bar over batches.

    Returns:
        `metric.compute()` as a float.

    Raises:
        KeyError: an example lacks the reference key (the message names its index).
    """
    metric = default_metric(template) if metric is None else metric
    metric.reset()
    metric.to(module.device)
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = [examples[i] for i in _shard(len(examples), rank, world)]
    outputs = (
        module.generate(
            template,
            mine,
            target_length=target_length,
            batch_size=batch_size,
            generator=generator,
            sampler=sampler,
            progress=progress,
        )
        if mine
        else []
    )
    if isinstance(metric, JudgeScore):
        if mine:
            metric.update(outputs, mine)
    else:
        key = reference_key(template)
        if key is None:
            raise ValueError(
                f"{type(template).__name__} has no text reference; use JudgeScore(judge)"
            )
        missing = [i for i, ex in enumerate(mine) if key not in ex]
        if missing:
            raise KeyError(f"example {missing[0] * world + rank} has no reference {key!r}")
        if mine:
            metric.update([str(o) for o in outputs], [str(ex[key]) for ex in mine])
    return float(metric.compute())


class GenerationEval(Callback):
    """Generate and score a fixed set of examples at the end of validation epochs.

    Logs `val/<task>/<name>` (for example `val/asr/wer`), which checkpoints can monitor.
    Generation draws are seeded, so the score moves only when the model does.

    Args:
        template: the task's template.
        examples: the examples to generate from (with references).
        metric: the metric (default: `default_metric(template)`).
        name: the metric's name in the log (default: the metric class name, lower case).
        target_length: positions to generate per example.
        batch_size: examples per sampler call.
        every_n_epochs: evaluate every this many validation epochs.
        seed: seed of the sampler's generator.
        sampler: use this sampler instead of the module's.
    """

    def __init__(
        self,
        template: TaskTemplate,
        examples: Sequence[Mapping[str, Any]],
        metric: torchmetrics.Metric | None = None,
        *,
        name: str | None = None,
        target_length: int | None = None,
        batch_size: int = 16,
        every_n_epochs: int = 1,
        seed: int = 0,
        sampler: Sampler | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1; got {every_n_epochs}")
        self.template = template
        self.examples = list(examples)
        self.metric = default_metric(template) if metric is None else metric
        self.name = name or type(self.metric).__name__.lower()
        self.target_length = target_length
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.sampler = sampler
        self._epochs = 0

    @property
    def key(self) -> str:
        """The logged name, `val/<task>/<name>`."""
        return f"val/{self.template.name}/{self.name}"

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate (every `every_n_epochs`) and log the score."""
        if trainer.sanity_checking:
            return
        self._epochs += 1
        if (self._epochs - 1) % self.every_n_epochs:
            return
        if not isinstance(pl_module, OmniDiffusionModule):
            raise TypeError(f"GenerationEval needs an OmniDiffusionModule, got {type(pl_module)}")
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        value = evaluate(
            pl_module,
            self.template,
            self.examples,
            self.metric,
            target_length=self.target_length,
            batch_size=self.batch_size,
            generator=generator,
            sampler=self.sampler,
        )
        # already reduced across processes by the metric
        pl_module.log(self.key, value, sync_dist=False)
