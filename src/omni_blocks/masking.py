"""Mask strategies: how clean training sequences are corrupted into `x_t`.

A strategy receives clean ids, the target region that may be masked (prompt tokens never are),
per-row diffusion times and a `torch.Generator`, and returns the corrupted ids plus the mask
of corrupted positions. The schedule decides *how many* tokens are masked at time `t`; the
strategy decides *which*.

Strategies (each a small frozen dataclass implementing
[`MaskStrategy`][omni_blocks.masking.MaskStrategy]):

- [`UniformMasking`][omni_blocks.masking.UniformMasking]: each target token i.i.d. with
  `mask_prob(t)` (MDLM, LLaDA SFT, Dream);
- [`FullSequenceMasking`][omni_blocks.masking.FullSequenceMasking]: every token, prompt
  included (LLaDA / MDLM pre-training);
- [`AttenuatedTailPadMasking`][omni_blocks.masking.AttenuatedTailPadMasking]: like uniform,
  pad tokens with `ratio * mask_prob(t)` (Omni-Diffusion);
- [`SpanMasking`][omni_blocks.masking.SpanMasking]: contiguous spans with the same expected
  ratio (inpainting-style training);
- [`PerTokenTimeMasking`][omni_blocks.masking.PerTokenTimeMasking]: Omni-Diffusion's own
  rule, draw for draw: a time per *token*, pads attenuated.

Every random draw goes through the `generator` argument (drawn on the generator's device), so
the same seeded generator gives the same mask.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from omni_blocks.schedules import NoiseSchedule, check_times
from omni_blocks.typing import SeqFloat, SeqMask, Times, TokenIds
from omni_blocks.vocab import VocabLayout

__all__ = [
    "AttenuatedTailPadMasking",
    "Corruption",
    "FullSequenceMasking",
    "MaskStrategy",
    "PerTokenTimeMasking",
    "SpanMasking",
    "UniformMasking",
    "apply_mask",
    "check_corruption_inputs",
]


@dataclass
class Corruption:
    """The output of a mask strategy.

    Attributes:
        noisy_ids: `x_t`: the clean ids with `mask_id` written at masked positions.
        mask: True where a token was replaced by `[MASK]` (the positions the loss scores).
        loss_weight: optional per-position weight of the loss (for example attenuated
            tail-pad weights); `None` means weight 1 on every masked position.
    """

    noisy_ids: TokenIds
    mask: SeqMask
    loss_weight: SeqFloat | None = None


class MaskStrategy(ABC):
    """The interface every mask strategy implements."""

    @abstractmethod
    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        """Corrupt `ids` at times `t`; only positions where `target_mask` is True may change."""


# ---------------------------------------------------------------------------------- helpers


def check_corruption_inputs(ids: Tensor, target_mask: Tensor, t: Tensor) -> None:
    """Raise a clear error unless `ids`, `target_mask` and `t` fit together.

    Raises:
        TypeError: `ids` is not an integer tensor, or `target_mask` is not a bool tensor.
        ValueError: `ids` is not 2-D (batch, seq), `target_mask` has another shape than `ids`,
            `t` is not one time per row, or a time lies outside `[0, 1]`.
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor of token ids, got dtype {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"ids must have shape (batch, seq); got shape {tuple(ids.shape)}")
    if target_mask.dtype != torch.bool:
        raise TypeError(
            "target_mask must be a bool tensor (True where a token may be masked), got dtype "
            f"{target_mask.dtype}; convert with `target_mask.bool()` or `labels != -100`"
        )
    if target_mask.shape != ids.shape:
        raise ValueError(
            f"target_mask has shape {tuple(target_mask.shape)} but ids have shape "
            f"{tuple(ids.shape)}"
        )
    if t.shape != (ids.shape[0],):
        raise ValueError(
            f"t must hold one time per row, shape ({ids.shape[0]},); got shape {tuple(t.shape)}"
        )
    check_times(t)


def apply_mask(ids: TokenIds, mask: SeqMask, mask_id: int) -> TokenIds:
    """`x_t`: `ids` with `mask_id` written where `mask` is True."""
    return torch.where(mask, torch.full_like(ids, mask_id), ids)


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Uniform draws in `[0, 1)`, drawn on the generator's device and moved to `device`."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _row_mask_prob(schedule: NoiseSchedule, t: Times, ids: TokenIds) -> Float[Tensor, " batch"]:
    p = schedule.mask_prob(t.to(device=ids.device, dtype=torch.float32))
    if bool(((p < 0) | (p > 1) | p.isnan()).any()):
        raise ValueError(
            f"{type(schedule).__name__}.mask_prob returned values outside [0, 1]: {p.tolist()}"
        )
    return p


def _bernoulli(probs: SeqFloat, generator: torch.Generator | None) -> SeqMask:
    """True with probability `probs` at each position (`probs = 1` always, `0` never)."""
    return _uniform(tuple(probs.shape), generator, probs.device) < probs


# ---------------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class UniformMasking(MaskStrategy):
    """Mask each target token independently with probability `schedule.mask_prob(t)`.

    `x_t^i = MASK` with probability `1 - alpha(t_b)` for every position `i` of row `b` where
    `target_mask` is True; prompt tokens (`target_mask` False) are never touched. This is the
    forward process of MDLM and of LLaDA's / Dream's supervised fine-tuning (response tokens
    only). The number of masked tokens is binomial, not fixed: MaskGIT instead masks exactly
    `ceil(gamma * n)`; with the long sequences here the two agree to a few tokens.
    """

    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        check_corruption_inputs(ids, target_mask, t)
        p = _row_mask_prob(schedule, t, ids)
        mask = _bernoulli(p[:, None].expand(ids.shape), generator) & target_mask
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask)


@dataclass(frozen=True)
class FullSequenceMasking(MaskStrategy):
    """Mask every token of the sequence with probability `schedule.mask_prob(t)`.

    Unconditional pre-training (LLaDA's pre-training, MDLM): the whole sequence is modelled, so
    the `target_mask` region is **ignored** (it is still checked for shape and dtype). This is the
    one strategy that widens the region; use [`UniformMasking`][omni_blocks.masking.UniformMasking]
    when a prompt must stay clean.
    """

    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        check_corruption_inputs(ids, target_mask, t)
        p = _row_mask_prob(schedule, t, ids)
        mask = _bernoulli(p[:, None].expand(ids.shape), generator)
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask)


@dataclass(frozen=True)
class AttenuatedTailPadMasking(MaskStrategy):
    """Omni-Diffusion's masking: pad tokens are masked with an attenuated probability.

    Omni-Diffusion trains on variable-length responses followed by pad tokens (Dream's
    `<|endoftext|>`, which is both pad and eos: `layout.pad_id`). Were pads masked as often as
    content, the many easy pad targets would dominate the loss and the model would learn to
    emit pads. So, for a row with time `t` and a target position `i`:

        P(x_t^i = MASK) = r * mask_prob(t)   if x_0^i == pad_id
                        =     mask_prob(t)   otherwise

    with `r = pad_mask_ratio` (paper: 0.6). Positions outside `target_mask` are never masked.
    A masked pad position is scored with weight `pad_loss_weight` (paper: 1, i.e. no
    reweighting; `Corruption.loss_weight` is `None` then).

    What upstream does (`preprocess` and `forward_process` in
    `omni_diffusion/data/dataset_qwen2.py` of VITA-MLLM/Omni-Diffusion):

    - each response gets `n ~ U{1, ..., 16}` `<|endoftext|>` (151643) tokens appended, labelled
      as targets (`update_labels_and_inputs(..., max_n=16)`); appending them is the
      collator's job here, not this strategy's;
    - every target position draws its *own* time `t_i ~ U[0, 1)`,
      `p_i = (1 - eps) t_i + eps` with `eps = 1e-3`, and is masked when `u_i <= p_i`;
      a target equal to 151643 is masked when `u_i <= 0.6 p_i`
      (`special_mask_ratio=0.6, special_token_id=eos_id`; the first public commit passed the
      mask id there, which made the attenuation a no-op);
    - the loss is the plain mean cross-entropy over masked targets (Hugging Face's loss with
      `labels = -100` on unmasked positions): no `1/t` weight, pads weighted like content.

    Where omni_blocks differs, and why: upstream draws one time *per token*, so every token
    is masked with the same marginal probability `E[p_i] = 0.5005` (pads: 0.3003) and the
    model never trains on almost-clean or almost-fully-masked rows, which the sampler's first
    and last steps visit. Here the time is drawn *per row* (by a
    [`TimeDistribution`][omni_blocks.schedules.TimeDistribution]) as in MDLM, LLaDA and Dream, which
    keeps the ELBO weight meaningful; the attenuation rule itself (ratio 0.6 on every target_mask
    pad-id token, wherever it sits) is upstream's. Note that scaling the mask probability by a
    constant leaves the ELBO weight `-d/dt log(mask_prob)` unchanged, so pad tokens need no
    weight of their own under the ELBO normalisation.

    Args:
        pad_mask_ratio: `r` in `[0, 1]`: 1 masks pads like any token (uniform masking),
            0 never masks them.
        pad_loss_weight: loss weight (>= 0) of a masked pad position; other masked positions
            have weight 1.
    """

    pad_mask_ratio: float = 0.6
    pad_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.pad_mask_ratio <= 1.0:
            raise ValueError(f"pad_mask_ratio must lie in [0, 1]; got {self.pad_mask_ratio}")
        if not (self.pad_loss_weight >= 0.0 and math.isfinite(self.pad_loss_weight)):
            raise ValueError(f"pad_loss_weight must be finite and >= 0; got {self.pad_loss_weight}")

    def mask_probs(
        self, ids: TokenIds, target_mask: SeqMask, t: Times, *, schedule: NoiseSchedule, pad_id: int
    ) -> SeqFloat:
        """The probability that each position is masked (0 outside `target_mask`)."""
        check_corruption_inputs(ids, target_mask, t)
        p = _row_mask_prob(schedule, t, ids)[:, None].expand(ids.shape)
        probs = torch.where(ids == pad_id, self.pad_mask_ratio * p, p)
        return torch.where(target_mask, probs, torch.zeros_like(probs))

    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        probs = self.mask_probs(ids, target_mask, t, schedule=schedule, pad_id=layout.pad_id)
        mask = _bernoulli(probs, generator) & target_mask
        weight = None
        if self.pad_loss_weight != 1.0:
            is_pad = ids == layout.pad_id
            weight = torch.where(
                is_pad,
                torch.full(ids.shape, self.pad_loss_weight, device=ids.device),
                torch.ones(ids.shape, device=ids.device),
            )
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask, weight)


@dataclass(frozen=True)
class SpanMasking(MaskStrategy):
    """Mask contiguous spans of the target region, `mask_prob(t)` of it on average.

    For inpainting-style training: the model learns to fill gaps between known tokens (a
    missing stretch of speech, a band of image tokens), which is what zero-shot inpainting asks
    at sampling time. Along each row, masked and clean runs alternate as a two-state Markov
    chain started in its stationary law:

    - a masked run ends after each token with probability `1 / m` (mean length
      `m = mean_span_length`);
    - a clean run ends with probability `q = p / (m (1 - p))`, `p = mask_prob(t)`;

    so every position is masked with probability exactly `p` (the stationary probability
    `q / (q + 1/m)`). When `p > m / (m + 1)` the clean runs are already one token long
    (`q = 1`) and masked runs grow instead (mean `p / (1 - p)`). The chain runs over all
    positions and is then restricted to `target_mask`, so spans never cover prompt tokens and a
    span cut by a prompt token continues on its other side.

    Image tokens are laid out row by row, so spans are horizontal bands of an image.

    Args:
        mean_span_length: mean length `m >= 1` of a masked span (1 gives i.i.d. masking).
    """

    mean_span_length: float = 8.0

    def __post_init__(self) -> None:
        if not (self.mean_span_length >= 1.0 and math.isfinite(self.mean_span_length)):
            raise ValueError(
                f"mean_span_length must be finite and >= 1; got {self.mean_span_length}"
            )

    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        check_corruption_inputs(ids, target_mask, t)
        p = _row_mask_prob(schedule, t, ids)  # float32: also runs on MPS (no float64)
        batch, seq = ids.shape
        m = self.mean_span_length
        # End probabilities of clean (q) and masked (r) runs; see the class docstring.
        q = (p / (m * (1.0 - p))).clamp(max=1.0)
        r = torch.where(p < m / (m + 1.0), torch.full_like(p, 1.0 / m), (1.0 - p) / p)
        q, r = q.clamp(min=1e-12, max=1.0), r.clamp(min=1e-12, max=1.0)

        first_masked = _uniform((batch,), generator, ids.device) < p
        # seq alternating runs always cover the row (each run is >= 1 token long).
        run_masked = first_masked[:, None] ^ (torch.arange(seq, device=ids.device) % 2 == 1)
        end_prob = torch.where(run_masked, r[:, None], q[:, None])
        u = 1.0 - _uniform((batch, seq), generator, ids.device)  # in (0, 1]
        # Geometric run lengths on {1, 2, ...} by inversion: 1 + floor(log u / log(1 - prob)).
        lengths = 1.0 + torch.floor(torch.log(u) / torch.log1p(-end_prob).clamp(max=-1e-30))
        lengths = lengths.clamp(min=1.0, max=float(seq)).long()
        ends = torch.cumsum(lengths, dim=1)
        positions = torch.arange(seq, device=ids.device).expand(batch, seq).contiguous()
        run = torch.searchsorted(ends, positions, right=True)
        mask = torch.gather(run_masked, 1, run)
        # Exact edge cases: nothing at p = 0, everything at p = 1.
        mask = torch.where((p == 0)[:, None], torch.zeros_like(mask), mask)
        mask = torch.where((p == 1)[:, None], torch.ones_like(mask), mask) & target_mask
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask)


@dataclass(frozen=True)
class PerTokenTimeMasking(MaskStrategy):
    """Omni-Diffusion's training rule exactly: every target token draws its own time.

    Upstream (`forward_process` in `omni_diffusion/data/dataset_qwen2.py`), for each row and
    the span from its first to its last target position: `t_i ~ U[0, 1)` per position,
    `p_i = (1 - eps) t_i + eps`, `u_i ~ U[0, 1)`; a position is masked when `u_i <= p_i`,
    or, when it holds the pad / end token (`<|endoftext|>`), when
    `u_i <= pad_mask_ratio * p_i`. Every token is therefore masked with the same marginal
    probability, `E[p_i] = 0.5005` (pads: `0.3003` with the paper's 0.6): the model trains on
    half-masked rows, never on almost clean or almost fully masked ones. The row's time `t`
    the module draws is not used, and the loss should be `normalization="token"` (upstream's
    mean cross-entropy over the masked targets).

    The draws follow upstream's order, one row at a time: one unused uniform (upstream's
    per-sample `p_mask`), then the `n` times, then the `n` uniforms of the row's span. A
    generator in the state of `torch.manual_seed(s)` therefore masks exactly the positions
    upstream's code masks after `torch.manual_seed(s)` (checked against fixtures of
    upstream's code, `tests/test_upstream.py`).

    Args:
        pad_mask_ratio: `special_mask_ratio` of upstream (0.6).
        eps: upstream's floor of the per-token mask probability (1e-3).

    Raises:
        ValueError: `pad_mask_ratio` outside `[0, 1]` or `eps` outside `[0, 1)`.
    """

    pad_mask_ratio: float = 0.6
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 <= self.pad_mask_ratio <= 1.0:
            raise ValueError(f"pad_mask_ratio must lie in [0, 1]; got {self.pad_mask_ratio}")
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"eps must lie in [0, 1); got {self.eps}")

    def __call__(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        t: Times,
        *,
        schedule: NoiseSchedule,
        layout: VocabLayout,
        generator: torch.Generator | None = None,
    ) -> Corruption:
        check_corruption_inputs(ids, target_mask, t)
        draw_device = generator.device if generator is not None else ids.device
        if draw_device.type == "cpu":
            return self._all_rows_at_once(ids, target_mask, layout, generator)
        return self._row_by_row(ids, target_mask, layout, generator)

    def _hits(self, times: Tensor, u: Tensor, pad: Tensor) -> Tensor:
        """Upstream's rule, one place for both paths: a token is masked when its uniform
        falls under its time (floored at `eps`), a pad under the time x `pad_mask_ratio`."""
        threshold = (1 - self.eps) * times + self.eps
        return torch.where(pad, u <= threshold * self.pad_mask_ratio, u <= threshold)

    def _row_by_row(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        layout: VocabLayout,
        generator: torch.Generator | None,
    ) -> Corruption:
        """Upstream's loop, one row's draws after another (any generator device)."""
        mask = torch.zeros_like(target_mask)
        columns = torch.arange(ids.shape[1], device=ids.device)
        for row in range(ids.shape[0]):
            where = columns[target_mask[row]]
            _uniform((1,), generator, ids.device)  # upstream's per-sample p_mask, unused
            if where.numel() == 0:
                continue
            start, end = int(where[0]), int(where[-1]) + 1
            times = _uniform((end - start,), generator, ids.device)
            u = _uniform((end - start,), generator, ids.device)
            mask[row, start:end] = self._hits(times, u, ids[row, start:end] == layout.pad_id)
        mask &= target_mask
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask)

    def _all_rows_at_once(
        self,
        ids: TokenIds,
        target_mask: SeqMask,
        layout: VocabLayout,
        generator: torch.Generator | None,
    ) -> Corruption:
        """The same draws in one call: a CPU generator gives one long `rand` the numbers of
        the per-row calls in sequence, so the rows' spans are cut out of it (a batch of 32 x 60:
        0.24 ms against 1.6 ms for `_row_by_row`)."""
        seq = target_mask.shape[1]
        columns = torch.arange(seq, device=ids.device)
        has = target_mask.any(dim=1)
        first = torch.where(has, torch.where(target_mask, columns, seq).min(dim=1).values, 0)
        last = torch.where(has, torch.where(target_mask, columns, -1).max(dim=1).values, -1)
        span = (last - first + 1).clamp(min=0)
        # per row: 1 unused draw, then `span` times, then `span` uniforms
        sizes = 1 + 2 * span
        draws = _uniform((int(sizes.sum()),), generator, ids.device)
        starts = torch.cumsum(sizes, 0) - sizes
        offset = columns[None, :] - first[:, None]  # position inside the row's span
        inside = (offset >= 0) & (offset < span[:, None])
        index = (starts[:, None] + 1 + offset).clamp(min=0, max=max(len(draws) - 1, 0))
        times = draws[index]
        u = draws[(index + span[:, None]).clamp(max=max(len(draws) - 1, 0))]
        mask = self._hits(times, u, ids == layout.pad_id) & inside & target_mask
        return Corruption(apply_mask(ids, mask, layout.mask_id), mask)
