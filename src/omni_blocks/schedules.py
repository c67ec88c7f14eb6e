"""Noise schedules of masked (absorbing-state) diffusion, and distributions of diffusion time.

A schedule gives `alpha(t)`, the probability that a token is still clean at time
`t in [0, 1]` (alpha(0) = 1: clean data; alpha(1) = 0: all `[MASK]`). Everything else follows,
and the base class [`NoiseSchedule`][omni_blocks.schedules.NoiseSchedule] writes it once:

- mask probability: `mask_prob(t) = 1 - alpha(t)`;
- ELBO weight of the continuous-time bound (MDLM, eq. 10):
  `w(t) = -alpha'(t) / (1 - alpha(t))`, so that
  `L = E_t [ w(t) * sum_i 1[x_t^i = MASK] * -log p(x_0^i | x_t) ]`.

A concrete schedule is a small frozen dataclass that implements `_alpha(t)` and
`_alpha_derivative(t)` (and, where a closed form is more accurate, `_mask_prob(t)` and
`_elbo_weight(t)`). The public methods check the times once, at the boundary: they accept a
float tensor of any shape, or a plain number, with values in `[0, 1]`.
`elbo_weight(0)` is `inf` for every schedule with `alpha(0) = 1` (nothing is masked at
`t = 0`); time distributions keep `t >= eps` for that reason.

A [`TimeDistribution`][omni_blocks.schedules.TimeDistribution] draws one time per row of a
batch: [`UniformTime`][omni_blocks.schedules.UniformTime] (LLaDA / Dream) or the stratified
[`AntitheticTime`][omni_blocks.schedules.AntitheticTime] (MDLM), both with an `eps` floor.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from omni_blocks.typing import Times

__all__ = [
    "AntitheticTime",
    "CosineSchedule",
    "FullMaskShareTime",
    "GeometricSchedule",
    "LinearSchedule",
    "LogLinearSchedule",
    "MaskGITPowerSchedule",
    "NoiseSchedule",
    "PolynomialSchedule",
    "TimeDistribution",
    "TimeLike",
    "UniformTime",
    "as_times",
    "check_times",
]

TimeLike = Float[Tensor, "*shape"]
"""Diffusion times of any shape (a float tensor with values in `[0, 1]`)."""


def check_times(t: Tensor) -> None:
    """Raise a clear `ValueError` unless `t` is a float tensor with values in `[0, 1]`."""
    if not isinstance(t, Tensor):
        raise ValueError(f"diffusion times must be a float tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"diffusion times must be a float tensor, got dtype {t.dtype}")
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any()) or bool(t.isnan().any())):
        raise ValueError(
            f"diffusion times must lie in [0, 1]; got min {float(t.min())}, max {float(t.max())}"
        )


def as_times(t: Tensor | float) -> Tensor:
    """`t` as a checked float tensor: a plain number becomes a 0-d float32 tensor.

    Raises:
        ValueError: not a number or float tensor, or a value outside `[0, 1]` (or NaN).
    """
    if isinstance(t, bool):
        raise ValueError("diffusion times must be numbers in [0, 1], got a bool")
    if isinstance(t, int | float):
        t = torch.tensor(float(t), dtype=torch.float32)
    check_times(t)
    return t


def _check_param(name: str, value: float, low: float, high: float, *, open_low: bool) -> None:
    ok = (value > low if open_low else value >= low) and value <= high
    if not ok or math.isnan(value):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}]; got {value}")


class NoiseSchedule(ABC):
    """A noise schedule: `alpha(t)` and the quantities derived from it.

    Subclasses implement `_alpha` and `_alpha_derivative` on checked float tensors; the base
    class derives `mask_prob(t) = 1 - alpha(t)` and the ELBO weight
    `w(t) = -alpha'(t) / mask_prob(t)`. Override `_mask_prob` or `_elbo_weight` when a closed
    form is more accurate than the generic expression (it cancels badly near `t = 0`).
    """

    # ------------------------------------------------------------------ the public maths
    def alpha(self, t: TimeLike | float) -> TimeLike:
        """Probability that a token is still clean at time `t`."""
        return self._alpha(as_times(t))

    def alpha_derivative(self, t: TimeLike | float) -> TimeLike:
        """`d alpha / d t` at time `t` (non-positive)."""
        return self._alpha_derivative(as_times(t))

    def mask_prob(self, t: TimeLike | float) -> TimeLike:
        """Probability that a token is masked at time `t`: `1 - alpha(t)`."""
        return self._mask_prob(as_times(t))

    def elbo_weight(self, t: TimeLike | float) -> TimeLike:
        """Weight of the masked cross-entropy in the ELBO: `-alpha'(t) / (1 - alpha(t))`."""
        return self._elbo_weight(as_times(t))

    # ------------------------------------------------------------------ what subclasses write
    @abstractmethod
    def _alpha(self, t: TimeLike) -> TimeLike:
        """`alpha(t)` on a checked float tensor."""

    @abstractmethod
    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        """`alpha'(t)` on a checked float tensor."""

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return 1.0 - self._alpha(t)

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return -self._alpha_derivative(t) / self._mask_prob(t)


# ---------------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class LinearSchedule(NoiseSchedule):
    """`alpha(t) = 1 - t`: the mask probability equals the time (MDLM / LLaDA / Dream).

    The ELBO weight is `1 / t`, which is the `1/t` factor of LLaDA's and Dream's loss.
    MaskGIT calls it the "linear" schedule.
    """

    def _alpha(self, t: TimeLike) -> TimeLike:
        return 1.0 - t

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -torch.ones_like(t)

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        # t itself, not 1 - (1 - t), which is not t in floating point: Dream's and
        # Omni-Diffusion's samplers count tokens with s / t on these very values
        return t.clone()

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return 1.0 / t


@dataclass(frozen=True)
class CosineSchedule(NoiseSchedule):
    """`alpha(t) = 1 - sin(pi t / 2)`: MaskGIT's cosine schedule (MD4's "cosine").

    MaskGIT masks a fraction `gamma(r) = cos(pi r / 2)` of the tokens at progress `r`
    (`r = 0`: all masked). With diffusion time `t = 1 - r` that is
    `mask_prob(t) = cos(pi (1 - t) / 2) = sin(pi t / 2)`. Compared with the linear schedule it
    masks more tokens early, so sampling unmasks few tokens in its first steps.

    - `alpha'(t) = -(pi / 2) cos(pi t / 2)`;
    - ELBO weight `w(t) = (pi / 2) / tan(pi t / 2)` (about `1 / t` near 0, 0 at `t = 1`).
    """

    def _alpha(self, t: TimeLike) -> TimeLike:
        return 1.0 - self._mask_prob(t)

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -(math.pi / 2) * torch.cos(t * (math.pi / 2))

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return torch.sin(t * (math.pi / 2))

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        # cos(pi/2) is 6e-17, not 0: write the exact zero of the weight at t = 1.
        weight = (math.pi / 2) / torch.tan(t * (math.pi / 2))
        return torch.where(t == 1, torch.zeros_like(t), weight)


@dataclass(frozen=True)
class PolynomialSchedule(NoiseSchedule):
    """`alpha(t) = 1 - t^w` with `w = exponent > 0` (MD4's polynomial schedule).

    `w = 1` is the linear schedule; `w > 1` keeps tokens clean longer (few masks at small
    `t`), `w < 1` masks quickly.

    - `alpha'(t) = -w t^(w - 1)`;
    - ELBO weight `w(t) = w / t`.

    Args:
        exponent: the power `w` (> 0).
    """

    exponent: float = 2.0

    def __post_init__(self) -> None:
        _check_param("exponent", self.exponent, 0.0, math.inf, open_low=True)

    def _alpha(self, t: TimeLike) -> TimeLike:
        return 1.0 - self._mask_prob(t)

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -self.exponent * t ** (self.exponent - 1.0)

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return t**self.exponent

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return self.exponent / t


@dataclass(frozen=True)
class MaskGITPowerSchedule(NoiseSchedule):
    """`alpha(t) = (1 - t)^k`: MaskGIT's "square" (`k = 2`), "cubic" (3) and "sqrt" (0.5).

    MaskGIT masks `gamma(r) = 1 - r^k` of the tokens at progress `r`; with `t = 1 - r`,
    `mask_prob(t) = 1 - (1 - t)^k`. Unlike
    [`PolynomialSchedule`][omni_blocks.schedules.PolynomialSchedule] (which bends the other
    way), `k > 1` masks many tokens early.

    - `alpha'(t) = -k (1 - t)^(k - 1)` (infinite at `t = 1` when `k < 1`);
    - ELBO weight `w(t) = k (1 - t)^(k - 1) / (1 - (1 - t)^k)`.

    Args:
        exponent: the power `k` (> 0).
    """

    exponent: float = 2.0

    def __post_init__(self) -> None:
        _check_param("exponent", self.exponent, 0.0, math.inf, open_low=True)

    def _alpha(self, t: TimeLike) -> TimeLike:
        return (1.0 - t) ** self.exponent

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -self.exponent * (1.0 - t) ** (self.exponent - 1.0)

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        # 1 - (1 - t)^k without cancellation for small t
        return -torch.expm1(self.exponent * torch.log1p(-t))


@dataclass(frozen=True)
class LogLinearSchedule(NoiseSchedule):
    """MDLM's log-linear schedule: total noise `sigma(t) = -log(1 - (1 - eps) t)`.

    With `alpha(t) = exp(-sigma(t))` this is `alpha(t) = 1 - (1 - eps) t`: linear, but the
    last token stays clean with probability `eps` at `t = 1` (so `sigma(1)` is finite).
    Mirrors `LogLinearNoise` of MDLM's `noise_schedule.py`.

    - `alpha'(t) = -(1 - eps)`;
    - ELBO weight `w(t) = 1 / t` (MDLM's `dsigma / expm1(sigma)`).

    Args:
        eps: probability that a token is still clean at `t = 1` (in `[0, 1)`; MDLM: 1e-3).
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_param("eps", self.eps, 0.0, 1.0, open_low=False)
        if self.eps == 1.0:
            raise ValueError("eps must be < 1 (with eps = 1 no token is ever masked)")

    def sigma(self, t: TimeLike | float) -> TimeLike:
        """Total noise `sigma(t) = -log(1 - (1 - eps) t)`, so that `alpha = exp(-sigma)`."""
        return -torch.log1p(-(1.0 - self.eps) * as_times(t))

    def _alpha(self, t: TimeLike) -> TimeLike:
        return 1.0 - (1.0 - self.eps) * t

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return torch.full_like(t, -(1.0 - self.eps))

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return (1.0 - self.eps) * t

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return 1.0 / t


@dataclass(frozen=True)
class GeometricSchedule(NoiseSchedule):
    """Geometric total noise `sigma(t) = sigma_min^(1 - t) * sigma_max^t` (SEDD / MDLM).

    `alpha(t) = exp(-sigma(t))`, so `alpha(0) = exp(-sigma_min)` (just below 1) and
    `alpha(1) = exp(-sigma_max)` (about 2e-9 for the default 20). Mirrors `GeometricNoise` of
    MDLM's `noise_schedule.py`; MDLM's class defaults (`sigma_min=1e-3, sigma_max=1`) stop at
    `alpha(1) = 0.37`, which suits uniform-state diffusion but not the absorbing state, so the
    defaults here are SEDD's absorbing-state ones (`1e-4`, `20`).

    - `sigma'(t) = sigma(t) * log(sigma_max / sigma_min)`, `alpha'(t) = -sigma'(t) alpha(t)`;
    - ELBO weight `w(t) = sigma'(t) / (exp(sigma(t)) - 1)`.

    Args:
        sigma_min: total noise at `t = 0` (> 0).
        sigma_max: total noise at `t = 1` (> sigma_min).
    """

    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def __post_init__(self) -> None:
        _check_param("sigma_min", self.sigma_min, 0.0, math.inf, open_low=True)
        if not self.sigma_max > self.sigma_min or math.isinf(self.sigma_max):
            raise ValueError(
                f"sigma_max must be finite and > sigma_min = {self.sigma_min}; got {self.sigma_max}"
            )

    def sigma(self, t: TimeLike | float) -> TimeLike:
        """Total noise `sigma(t)`, so that `alpha = exp(-sigma)`."""
        return self._sigma(as_times(t))

    def _sigma(self, t: TimeLike) -> TimeLike:
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(log_min + t * (log_max - log_min))

    def _sigma_rate(self, t: TimeLike) -> TimeLike:
        return self._sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def _alpha(self, t: TimeLike) -> TimeLike:
        return torch.exp(-self._sigma(t))

    def _alpha_derivative(self, t: TimeLike) -> TimeLike:
        return -self._sigma_rate(t) * self._alpha(t)

    def _mask_prob(self, t: TimeLike) -> TimeLike:
        return -torch.expm1(-self._sigma(t))

    def _elbo_weight(self, t: TimeLike) -> TimeLike:
        return self._sigma_rate(t) / torch.expm1(self._sigma(t))


# ---------------------------------------------------------------------------- time distributions


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")


def _rand(n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """`n` uniform draws in `[0, 1)` from `generator`, moved to `device`.

    Drawing on the generator's own device keeps "same generator -> same times" true whatever
    `device` is asked for.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} "
            "(seed one with torch.Generator().manual_seed(seed))"
        )
    draw_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=draw_device).to(device)


class TimeDistribution(ABC):
    """The distribution of training times: one diffusion time per row of a batch."""

    eps: float
    """The floor of the drawn times (keeps `elbo_weight(t)` finite)."""

    def sample(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Times:
        """Draw `batch_size` diffusion times in `[eps, 1)` (one per row), float32 on `device`.

        Raises:
            ValueError: `batch_size` is not a positive int.
            TypeError: `generator` is not a `torch.Generator`.
        """
        _check_batch_size(batch_size)
        return self._sample(batch_size, generator, device)

    @abstractmethod
    def _sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> Times:
        """`n` times for a checked batch size."""


def _check_eps(eps: float) -> None:
    _check_param("eps", eps, 0.0, 1.0, open_low=False)
    if eps == 1.0:
        raise ValueError("eps must be < 1")


@dataclass(frozen=True)
class UniformTime(TimeDistribution):
    """`t = eps + (1 - eps) u` with `u ~ U[0, 1)` i.i.d. per row (LLaDA / Dream / MDLM).

    LLaDA and Dream write the same thing as `p_mask = (1 - eps) t + eps` with a linear schedule;
    Omni-Diffusion's data pipeline uses `eps = 1e-3` too (but draws a time per *token*, see
    `omni_blocks.masking`).

    Args:
        eps: the floor of `t` (in `[0, 1)`): keeps `elbo_weight(t)` finite.
    """

    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> Times:
        u = _rand(n, generator, device)
        return self.eps + (1.0 - self.eps) * u


@dataclass(frozen=True)
class AntitheticTime(TimeDistribution):
    """MDLM's low-discrepancy ("antithetic") sampling: one time per stratum of `[0, 1)`.

    Row `i` of `n` draws `u_i = (i + v_i) / n` with `v_i ~ U[0, 1)`, so the batch covers
    `[0, 1)` evenly (one draw in each `[i/n, (i+1)/n)`), then `t_i = eps + (1 - eps) u_i`.
    Each `t_i` is still uniform on `[eps, 1)` when the row order is random, so the loss
    stays unbiased; its variance across batches drops. Mirrors `_sample_t` of MDLM's
    `diffusion.py` with `antithetic_sampling=True` (MDLM writes `(v / n + i / n) % 1`).

    Args:
        eps: the floor of `t` (in `[0, 1)`).
        shuffle: permute the strata over the rows (MDLM does not: row `i` gets stratum `i`).
            Shuffle when the order of rows in a batch carries meaning (length-bucketed or
            task-sorted batches), so that `t` is not correlated with it.
    """

    eps: float = 1e-3
    shuffle: bool = False

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> Times:
        v = _rand(n, generator, device)
        strata = torch.arange(n, device=v.device, dtype=v.dtype)
        if self.shuffle:
            draw_device = generator.device if generator is not None else v.device
            order = torch.randperm(n, generator=generator, device=draw_device)
            strata = strata[order.to(v.device)]
        u = ((strata + v) / n).clamp(max=1.0 - 1e-7)
        return self.eps + (1.0 - self.eps) * u


@dataclass(frozen=True)
class FullMaskShareTime(TimeDistribution):
    """Uniform times, with a share of rows at the fully masked end (`t -> 1`).

    With probability `share` a row's time is `1 - 1e-6` (every target token masked under a
    linear schedule: the model must predict the whole target from the prompt alone, which
    is what one-shot and early sampling steps ask of it); otherwise `t` is uniform on
    `[eps, 1)`. The loss stays a proper weighting of the masked-token objective (it
    oversamples `t ~ 1`); with `share = 0` it is `UniformTime`. Made for small models that
    learn to ignore the prompt when nearly every training row shows them most of the answer.

    Args:
        share: the probability of a fully masked row, in `[0, 1]`.
        eps: the floor of the uniform times.

    Raises:
        ValueError: `share` outside `[0, 1]` or a bad `eps`.
    """

    share: float = 0.25
    eps: float = 1e-3

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        _check_param("share", self.share, 0.0, 1.0, open_low=False)

    def _sample(
        self, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> Times:
        u = _rand(n, generator, device)
        full = _rand(n, generator, device) < self.share
        t = self.eps + (1.0 - self.eps) * u
        return torch.where(full, torch.full_like(t, 1.0 - 1e-6), t)
