"""95% bootstrap intervals over examples for every figure of the report.

Accuracies and judge scores: the mean of per-example 0/1 scores with the library's
[`bootstrap_interval`][omni_blocks.metrics.bootstrap_interval] (BCa). Word error rate is a
ratio (errors over reference words, summed over examples): its interval resamples examples
and recomputes the ratio (percentile bootstrap, 2,000 resamples, seeded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from omni_blocks.metrics import bootstrap_interval

from .evaluation import TaskResult


@dataclass(frozen=True)
class CI:
    """A figure and its 95% interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.2f}, {self.high:.2f}]"

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def interval(result: TaskResult, *, seed: int = 0) -> CI:
    """The task's figure with its 95% bootstrap interval over the examples."""
    if not result.scores:
        return CI(result.value, result.value, result.value, result.n)
    if result.weights:  # a ratio: word errors over words
        errors = np.asarray(result.scores, dtype=float)
        words = np.asarray(result.weights, dtype=float)
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(errors), size=(2_000, len(errors)))
        ratios = errors[picks].sum(1) / np.maximum(words[picks].sum(1), 1.0)
        low, high = np.percentile(ratios, [2.5, 97.5])
        return CI(result.value, float(low), float(high), len(errors))
    ci = bootstrap_interval(result.scores, seed=seed)
    return CI(result.value, ci.low, ci.high, ci.n)


def paired_difference(a: TaskResult, b: TaskResult, *, seed: int = 0) -> CI:
    """`a - b` on the same examples, with a 95% paired bootstrap interval (percentile, 2,000
    resamples of the examples, both models resampled together; WER: the difference of the
    two ratios)."""
    if len(a.scores) != len(b.scores) or not a.scores:
        raise ValueError(f"{a.task}: the two results are not on the same examples")
    sa, sb = np.asarray(a.scores, dtype=float), np.asarray(b.scores, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(sa), size=(2_000, len(sa)))
    if a.weights:  # ratios: errors over words, of the same references
        words = np.maximum(np.asarray(a.weights, dtype=float)[picks].sum(1), 1.0)
        diffs = (sa[picks].sum(1) - sb[picks].sum(1)) / words
    else:
        diffs = sa[picks].mean(1) - sb[picks].mean(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return CI(a.value - b.value, float(low), float(high), len(sa))
