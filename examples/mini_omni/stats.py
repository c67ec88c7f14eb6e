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
