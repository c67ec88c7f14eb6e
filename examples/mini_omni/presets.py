"""Sizes of a run: `tiny` (the test, about a minute), `mini` (the default, <= 12 minutes on two
CPU cores) and `full-mini` (longer, for better numbers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """How big a run is.

    Attributes:
        hidden_size: residual width of the backbone (both models).
        num_layers: transformer blocks.
        num_heads: attention heads.
        batch_size: sequences per optimiser step.
        stage_steps: optimiser steps of the three diffusion stages.
        ar_steps: optimiser steps of the autoregressive baseline, on the final stage's
            mixture (the diffusion model's total: the same compute and data).
        lr: peak learning rate (AdamW, warm-up then cosine decay, in every stage).
        eval_examples: test examples per task.
        sweep_examples: test examples per task in the sampling-steps sweep.
        sweep_steps: sampling step counts of the sweep.
        pairings: spoken prompts paired with each training image (speech-to-image, spoken
            VQA).
        curve_every: steps between two points of the per-task loss curves.
        probe_examples: training examples per task in the loss curves' fixed probe.
        curve_examples: held-out examples per task at each point of the quality curves.
        curve_fractions: the points of the quality curves, as fractions of the budget.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    batch_size: int
    stage_steps: tuple[int, int, int]
    ar_steps: int
    lr: float
    eval_examples: int
    sweep_examples: int
    sweep_steps: tuple[int, ...]
    pairings: int = 2
    curve_every: int = 100
    probe_examples: int = 48
    curve_examples: int = 40
    curve_fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0)

    @property
    def diffusion_steps(self) -> int:
        """Optimiser steps of the diffusion model over all stages."""
        return sum(self.stage_steps)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        batch_size=8,
        stage_steps=(4, 4, 4),
        ar_steps=12,
        lr=2e-3,
        eval_examples=6,
        sweep_examples=4,
        sweep_steps=(2,),
        pairings=1,
        curve_every=4,
        probe_examples=4,
        curve_examples=4,
        curve_fractions=(0.5, 1.0),
    ),
    "mini": Preset(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        batch_size=32,
        stage_steps=(700, 600, 1300),
        ar_steps=2600,
        lr=2e-3,
        eval_examples=100,
        sweep_examples=60,
        sweep_steps=(1, 2, 4, 8),
    ),
    "full-mini": Preset(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        batch_size=32,
        stage_steps=(2000, 2000, 3000),
        ar_steps=7000,
        lr=2e-3,
        eval_examples=300,
        sweep_examples=200,
        sweep_steps=(1, 2, 4, 8, 16),
        pairings=4,
    ),
}
