"""Optimiser and learning-rate schedule blocks for `OmniDiffusionModule`.

Both are small frozen dataclasses, chosen in a LightningCLI config by `class_path` like every
other block:

```yaml
model:
  init_args:
    optimizer:
      class_path: omni_blocks.optim.AdamWConfig
      init_args: {lr: 3.0e-4, weight_decay: 0.01}
    lr_schedule:
      class_path: omni_blocks.optim.WarmupCosine
      init_args: {warmup_steps: 100, min_lr_ratio: 0.1}
```

A schedule is a multiplier of the base learning rate per optimiser step
([`LRSchedule.factor`][omni_blocks.optim.LRSchedule.factor]); the module wraps it in a
`torch.optim.lr_scheduler.LambdaLR` stepped every optimiser step, so its state resumes with
the checkpoint. The number of steps of the run comes from the Trainer
(`trainer.estimated_stepping_batches`) unless the schedule fixes `total_steps`.

```python
from omni_blocks.optim import WarmupCosine

schedule = WarmupCosine(warmup_steps=10, min_lr_ratio=0.1)
assert schedule.factor(0, 100) == 0.0 and schedule.factor(10, 100) == 1.0
assert abs(schedule.factor(100, 100) - 0.1) < 1e-9
```
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "AdamWConfig",
    "ConstantLR",
    "LRSchedule",
    "OptimizerFactory",
    "WarmupCosine",
    "WarmupLinear",
    "decay_groups",
]


class OptimizerFactory(ABC):
    """Builds the optimiser of a model (the model's parameters are only known at fit time)."""

    @abstractmethod
    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimiser over `model`'s trainable parameters."""


class LRSchedule(ABC):
    """A multiplier of the base learning rate at each optimiser step."""

    @abstractmethod
    def factor(self, step: int, total_steps: int) -> float:
        """The multiplier at optimiser step `step` (0-based) of a run of `total_steps`."""


def _no_decay(module: nn.Module, name: str) -> bool:
    # Biases and normalisation gains are not decayed (as in Hugging Face's Trainer, which
    # Omni-Diffusion trains with). Decided by name and module type rather than by `ndim`,
    # because FSDP may flatten parameters into 1-D shards.
    return name.endswith("bias") or "norm" in type(module).__name__.lower()


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two parameter groups: decayed weights, and biases / norm gains without decay.

    Frozen parameters (`requires_grad=False`) are left out; a parameter shared by two modules
    (tied embeddings) appears once. Empty groups are dropped.
    """
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (plain if _no_decay(module, name) else decay).append(param)
    groups: list[dict[str, object]] = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimise")
    return groups


@dataclass(frozen=True)
class AdamWConfig(OptimizerFactory):
    """`torch.optim.AdamW` with decoupled weight decay on weights only.

    Args:
        lr: base learning rate (the schedule multiplies it).
        betas: Adam's moment decay rates.
        eps: Adam's denominator epsilon.
        weight_decay: decoupled weight decay of matrices and embeddings; biases and norm
            gains are never decayed.
        fused: use the fused CUDA / CPU kernel (`None`: PyTorch's default).

    Raises:
        ValueError: a non-positive `lr` or `eps`, a beta outside `[0, 1)`, or a negative
            `weight_decay`.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    fused: bool | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0 or not self.eps > 0:
            raise ValueError(f"lr and eps must be > 0; got lr={self.lr}, eps={self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1); got {self.betas}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay}")
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW over `model`'s trainable parameters (see `decay_groups`)."""
        return torch.optim.AdamW(
            decay_groups(model, self.weight_decay),  # type: ignore[arg-type]
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            fused=self.fused,
        )


def _check_warmup(warmup_steps: int, warmup_ratio: float) -> None:
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0; got {warmup_steps}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must lie in [0, 1); got {warmup_ratio}")
    if warmup_steps and warmup_ratio:
        raise ValueError(
            f"give warmup_steps ({warmup_steps}) or warmup_ratio ({warmup_ratio}), not both"
        )


def _warmup(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    return warmup_steps or math.ceil(warmup_ratio * total_steps)


@dataclass(frozen=True)
class ConstantLR(LRSchedule):
    """Linear warm-up from 0, then the base learning rate.

    Args:
        warmup_steps: steps of linear warm-up (`step / warmup_steps`).
        warmup_ratio: warm-up as a fraction of the run instead (Hugging Face's
            `warmup_ratio`).
    """

    warmup_steps: int = 0
    warmup_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_steps, self.warmup_ratio)

    def factor(self, step: int, total_steps: int) -> float:
        """`step / warmup` during warm-up, 1 after."""
        warmup = _warmup(total_steps, self.warmup_steps, self.warmup_ratio)
        return step / warmup if step < warmup else 1.0


@dataclass(frozen=True)
class _WarmupThenDecay(LRSchedule):
    """Shared fields and checks of the decaying schedules: linear warm-up, then `_decay`."""

    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        _check_warmup(self.warmup_steps, self.warmup_ratio)
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1]; got {self.min_lr_ratio}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1 or None; got {self.total_steps}")

    def factor(self, step: int, total_steps: int) -> float:
        """The multiplier at `step` (`total_steps` is ignored when the schedule fixes it)."""
        total = self.total_steps or total_steps
        warmup = _warmup(total, self.warmup_steps, self.warmup_ratio)
        if step < warmup:
            return step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * self._decay(progress)

    def _decay(self, progress: float) -> float:
        """From 1 at `progress = 0` to 0 at `progress = 1`."""
        raise NotImplementedError


@dataclass(frozen=True)
class WarmupCosine(_WarmupThenDecay):
    """Linear warm-up, then cosine decay to `min_lr_ratio` at the last step.

    The shape of Hugging Face's `get_cosine_schedule_with_warmup` (half a cosine period),
    with a floor: `min + (1 - min) * (1 + cos(pi * progress)) / 2`.

    Args:
        warmup_steps: steps of linear warm-up.
        warmup_ratio: warm-up as a fraction of the run instead.
        min_lr_ratio: the multiplier reached at the end of the run.
        total_steps: the length of the decay; `None` uses the Trainer's estimate.

    Raises:
        ValueError: bad warm-up values, `min_lr_ratio` outside `[0, 1]`, or
            `total_steps < 1`.
    """

    def _decay(self, progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class WarmupLinear(_WarmupThenDecay):
    """Linear warm-up, then linear decay to `min_lr_ratio` at the last step.

    Args:
        warmup_steps: steps of linear warm-up.
        warmup_ratio: warm-up as a fraction of the run instead.
        min_lr_ratio: the multiplier reached at the end of the run.
        total_steps: the length of the decay; `None` uses the Trainer's estimate.
    """

    def _decay(self, progress: float) -> float:
        return 1.0 - progress
