"""Noise schedules of masked (absorbing-state) diffusion, and samplers of diffusion time.

A schedule gives `alpha(t)`, the probability that a token is still clean at time
`t in [0, 1]` (alpha(0) = 1: clean data; alpha(1) = 0: all `[MASK]`). Everything else follows:

- mask probability: `mask_prob(t) = 1 - alpha(t)`;
- ELBO weight of the continuous-time bound (MDLM, eq. 10):
  `w(t) = -alpha'(t) / (1 - alpha(t))`, so that
  `L = E_t [ w(t) * sum_i 1[x_t^i = MASK] * -log p(x_0^i | x_t) ]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["LinearSchedule", "NoiseSchedule", "check_times"]

TimeLike = Float[Tensor, "*shape"]


def check_times(t: Tensor) -> None:
    """Raise a clear `ValueError` unless `t` is a float tensor with values in `[0, 1]`."""
    if not t.dtype.is_floating_point:
        raise ValueError(f"diffusion times must be a float tensor, got dtype {t.dtype}")
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
        raise ValueError(
            f"diffusion times must lie in [0, 1]; got min {float(t.min())}, max {float(t.max())}"
        )


@runtime_checkable
class NoiseSchedule(Protocol):
    """The interface every noise schedule implements (times are float tensors in [0, 1])."""

    def alpha(self, t: TimeLike) -> TimeLike:
        """Probability that a token is still clean at time `t`."""
        ...

    def alpha_derivative(self, t: TimeLike) -> TimeLike:
        """`d alpha / d t` at time `t` (non-positive)."""
        ...

    def mask_prob(self, t: TimeLike) -> TimeLike:
        """Probability that a token is masked at time `t`: `1 - alpha(t)`."""
        ...

    def elbo_weight(self, t: TimeLike) -> TimeLike:
        """Weight of the masked cross-entropy in the ELBO: `-alpha'(t) / (1 - alpha(t))`."""
        ...


@dataclass(frozen=True)
class LinearSchedule:
    """`alpha(t) = 1 - t`: the mask probability equals the time (MDLM / LLaDA / Dream).

    The ELBO weight is `1 / t`, which is the `1/t` factor of LLaDA's and Dream's loss.
    """

    def alpha(self, t: TimeLike) -> TimeLike:
        check_times(t)
        return 1.0 - t

    def alpha_derivative(self, t: TimeLike) -> TimeLike:
        check_times(t)
        return -torch.ones_like(t)

    def mask_prob(self, t: TimeLike) -> TimeLike:
        return 1.0 - self.alpha(t)

    def elbo_weight(self, t: TimeLike) -> TimeLike:
        return -self.alpha_derivative(t) / self.mask_prob(t)
