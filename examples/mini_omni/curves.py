"""Learning curves of a run: both models, measured while they train.

Two curves per model, at intervals of its optimiser steps (counted across the diffusion
model's stages):

* the **loss per task** on a fixed probe of training examples (the same rows, and for the
  diffusion model the same masks and times, at every point, so that the curve moves only
  because the weights do). The two models' losses are different quantities (masked-token
  cross-entropy against next-token cross-entropy) and are drawn side by side, not on one axis;
* the **quality per task** on held-out examples (a smaller set than the final evaluation's),
  so that "how much training does each model need" is read from one run.

Measuring runs under `torch.random.fork_rng` and in eval mode: the training itself (its
random draws, its weights) is the same with or without the curves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from omni_blocks.data import TaskBatch

#: The loss of a model on one task's probe batch.
LossFn = Callable[[L.LightningModule, TaskBatch], float]
#: Held-out quality per task of a model at this point of its training.
QualityFn = Callable[[L.LightningModule], dict[str, float]]


@dataclass
class Curves:
    """One model's learning curves.

    Attributes:
        loss: task -> `(step, loss on the probe)` points.
        quality: task -> `(step, held-out quality)` points.
        stage_ends: the steps at which a training stage ended (the diffusion model's).
        seconds: time spent measuring (included in the training time the run reports).
    """

    loss: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    quality: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    stage_ends: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "quality": self.quality,
            "stage_ends": self.stage_ends,
            "seconds": self.seconds,
        }


class LearningCurves(L.Callback):
    """Records a model's probe losses every `loss_every` steps and its held-out quality at
    the steps in `quality_at`, into `curves`.

    Args:
        curves: where the points go (shared by the callbacks of a model's stages).
        probe: task -> a fixed batch of training examples.
        loss_fn: a model's loss on one probe batch.
        quality_fn: a model's held-out quality per task.
        offset: optimiser steps taken before this stage (the diffusion model's earlier
            stages), so that steps count from the start of the model's training.
        loss_every: steps between two loss points (one also at the first step measured).
        quality_at: steps (counted from the start) at which quality is measured.
    """

    def __init__(
        self,
        curves: Curves,
        probe: dict[str, TaskBatch],
        loss_fn: LossFn,
        quality_fn: QualityFn,
        *,
        offset: int = 0,
        loss_every: int = 100,
        quality_at: tuple[int, ...] = (),
    ) -> None:
        self.curves, self.probe = curves, probe
        self.loss_fn, self.quality_fn = loss_fn, quality_fn
        self.offset, self.loss_every, self.quality_at = offset, loss_every, set(quality_at)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.offset == 0:
            self._measure(pl_module, 0)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._measure(pl_module, self.offset + trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.curves.stage_ends.append(self.offset + trainer.global_step)

    def _measure(self, module: L.LightningModule, step: int) -> None:
        want_loss = step % self.loss_every == 0
        want_quality = step in self.quality_at
        if not (want_loss or want_quality):
            return
        start, was_training = time.time(), module.training
        module.eval()
        with torch.random.fork_rng(), torch.no_grad():
            if want_loss:
                for task, batch in self.probe.items():
                    value = self.loss_fn(module, batch)
                    self.curves.loss.setdefault(task, []).append((step, value))
            if want_quality:
                for task, value in self.quality_fn(module).items():
                    self.curves.quality.setdefault(task, []).append((step, value))
        module.train(was_training)
        self.curves.seconds += time.time() - start


def plot_training_loss(curves: dict[str, Curves], path: Path) -> None:
    """Each model's probe loss per task against its training steps, side by side (the
    diffusion model's stage ends dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.6), squeeze=False)
    for ax, (model, c) in zip(axes[0], curves.items(), strict=True):
        for task, points in sorted(c.loss.items()):
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=task)
        for end in c.stage_ends[:-1]:
            ax.axvline(end, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{model}: loss on a fixed probe of training examples")
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss (nats)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quality_vs_steps(curves: dict[str, Curves], lower_better: set[str], path: Path) -> None:
    """Held-out quality per task against training steps, both models in each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for c in curves.values() for t in c.quality})
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.8 * len(tasks), 2.9), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for model, c in curves.items():
            if task in c.quality:
                steps, values = zip(*c.quality[task], strict=True)
                ax.plot(steps, values, marker="o", label=model)
        ax.set_title(task + (" (WER)" if task in lower_better else ""))
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out quality")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
