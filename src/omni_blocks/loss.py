"""The masked-diffusion loss: cross-entropy on masked positions only.

One function, [`masked_diffusion_loss`][omni_blocks.loss.masked_diffusion_loss], with the
normalisation as a plain config value (`"token"`, `"sequence"` or `"elbo"`).
"""

from __future__ import annotations

import typing
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from torchmetrics import MeanMetric

from omni_blocks.masking import Corruption
from omni_blocks.schedules import NoiseSchedule
from omni_blocks.typing import Logits, SeqMask, Times, TokenIds

__all__ = ["Normalization", "TaskMeans", "masked_diffusion_loss", "masked_token_nll", "task_losses"]

Normalization = Literal["token", "sequence", "elbo"]
"""How the summed cross-entropy of the masked positions is normalised (see the loss)."""

NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


def masked_token_nll(
    logits: Logits, targets: TokenIds, mask: SeqMask
) -> Float[Tensor, "batch seq"]:
    """`-log p(x_0^i | x_t)` at masked positions, 0 elsewhere (float32).

    Only the masked rows of `logits` are gathered and upcast, so memory grows with the number
    of masked tokens rather than with `batch * seq * vocab`.
    """
    nll = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    picked = logits[mask].float()
    nll = nll.index_put((mask,), F.cross_entropy(picked, targets[mask], reduction="none"))
    return nll


def masked_diffusion_loss(
    logits: Logits,
    targets: TokenIds,
    corruption: Corruption,
    *,
    normalization: Normalization = "token",
    t: Times | None = None,
    schedule: NoiseSchedule | None = None,
    target_mask: SeqMask | None = None,
) -> Float[Tensor, ""]:
    r"""Cross-entropy of the clean tokens at the masked positions, normalised as asked.

    The objective of masked diffusion (Omni-Diffusion eq. 1; MDLM; LLaDA):

    $$
    \mathcal{L} = -\mathbb{E}_{t,\,x_t}\Big[\sum_i \mathbf{1}[x_t^i = \texttt{MASK}]
        \log p_\theta(x_0^i \mid x_t)\Big]
    $$

    With `nll_bi = -log p(x_0^i | x_t)` of row `b`, `m_bi = corruption.mask` and
    `c_bi = corruption.loss_weight` (1 when `None`), the normalisations are:

    - `"token"`: `sum_bi c m nll / sum_bi c m`, the weighted mean over every masked token of
      the batch. This is what Omni-Diffusion trains with (Hugging Face's mean cross-entropy
      over labels that are not `-100`, i.e. the masked targets); long rows count more.
    - `"sequence"`: the same mean within each row, then the mean over rows that have a masked
      token; each sequence counts once whatever its length.
    - `"elbo"`: `sum_b w(t_b) sum_i c m nll / N` with the ELBO weight
      `w(t) = schedule.elbo_weight(t) = -alpha'(t) / (1 - alpha(t))` and `N` the number of
      target positions (`target_mask.sum()`; `batch * seq` when `target_mask` is `None`). With
      the default weights this is MDLM's continuous-time bound (eq. 10) per token, so its
      exponential bounds the perplexity; with a linear schedule it is LLaDA's / Dream's
      `sum CE / t / N`. Rows without a masked token contribute 0 (even where `w(t)` is
      infinite at `t = 0`).

    Logits are aligned: position `i` predicts token `i` (a Dream backbone wrapper shifts its
    logits before they reach this function).

    Args:
        logits: `(batch, seq, vocab)` scores of the denoiser on `corruption.noisy_ids`.
        targets: `(batch, seq)` clean ids `x_0`.
        corruption: the mask strategy's output (mask and optional per-position weights).
        normalization: `"token"`, `"sequence"` or `"elbo"`.
        t: `(batch,)` diffusion times; required for `"elbo"`.
        schedule: the noise schedule that produced the mask; required for `"elbo"`.
        target_mask: the target region (what could be masked); sets `N` for `"elbo"`.

    Returns:
        A scalar float32 tensor (0, still attached to `logits`, when nothing is masked).

    Raises:
        ValueError: unknown normalisation, mismatched shapes, a target id outside the
            vocabulary at a masked position, missing `t` / `schedule` for `"elbo"`,
            times outside `[0, 1]`, or negative / non-finite loss weights.
        TypeError: a mask is not boolean, or `targets` is not an integer tensor.
    """
    _check_inputs(logits, targets, corruption, normalization, t, schedule, target_mask)
    mask = corruption.mask
    nll = masked_token_nll(logits, targets, mask)
    weight = mask.float()
    if corruption.loss_weight is not None:
        weight = weight * corruption.loss_weight.float()
    weighted = nll * weight
    # keeps the result attached to the graph (zero gradient) when nothing is masked
    zero = logits.sum().float() * 0.0

    if normalization == "token":
        total = weight.sum()
        return zero + (weighted.sum() / total if bool(total > 0) else weighted.sum())
    if normalization == "sequence":
        row_total = weight.sum(dim=1)
        has = row_total > 0
        if not bool(has.any()):
            return zero + weighted.sum()
        row_mean = weighted.sum(dim=1)[has] / row_total[has]
        return zero + row_mean.mean()
    # elbo (t and schedule were checked above; the test narrows their types)
    if t is None or schedule is None:
        raise ValueError("normalization='elbo' needs `t` and `schedule`")
    w = schedule.elbo_weight(t.to(device=logits.device, dtype=torch.float32))
    row_sum = weighted.sum(dim=1)
    row_loss = torch.where(weight.sum(dim=1) > 0, w * row_sum, torch.zeros_like(row_sum))
    n = float(target_mask.sum()) if target_mask is not None else float(targets.numel())
    return zero + row_loss.sum() / max(n, 1.0)


def _check_inputs(
    logits: Tensor,
    targets: Tensor,
    corruption: Corruption,
    normalization: str,
    t: Tensor | None,
    schedule: NoiseSchedule | None,
    target_mask: Tensor | None,
) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}")
    if logits.dim() != 3:
        raise ValueError(
            f"logits must have shape (batch, seq, vocab); got shape {tuple(logits.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor of ids, got dtype {targets.dtype}")
    shape = tuple(logits.shape[:2])
    named = {"targets": targets, "corruption.mask": corruption.mask}
    if corruption.loss_weight is not None:
        named["corruption.loss_weight"] = corruption.loss_weight
    if target_mask is not None:
        named["target_mask"] = target_mask
    for name, tensor in named.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but logits are {tuple(logits.shape)}; "
                f"expected {shape}"
            )
    for name in ("corruption.mask", "target_mask"):
        if name in named and named[name].dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, got dtype {named[name].dtype}")
    vocab = logits.shape[-1]
    scored = targets[corruption.mask]
    if scored.numel() and (bool((scored < 0).any()) or bool((scored >= vocab).any())):
        bad = scored[(scored < 0) | (scored >= vocab)]
        raise ValueError(
            f"target id {int(bad[0])} at a masked position is outside the logits' vocabulary "
            f"[0, {vocab})"
        )
    if corruption.loss_weight is not None:
        lw = corruption.loss_weight
        if not bool(torch.isfinite(lw).all()) or bool((lw < 0).any()):
            raise ValueError("corruption.loss_weight must be finite and >= 0 everywhere")
    if normalization == "elbo" and (t is None or schedule is None):
        raise ValueError(
            "normalization='elbo' needs the times `t` and the `schedule` that produced the mask"
        )
    # the values of t are checked by the schedule that reads them
    if t is not None and tuple(t.shape) != shape[:1]:
        raise ValueError(f"t must hold one time per row, shape ({shape[0]},); got {tuple(t.shape)}")


def task_losses(
    logits: Logits,
    targets: TokenIds,
    corruption: Corruption,
    tasks: Sequence[str],
    **kwargs: Any,
) -> dict[str, tuple[Float[Tensor, ""], int]]:
    """The loss of each task's rows on their own, and the number of rows.

    `kwargs` are those of [`masked_diffusion_loss`][omni_blocks.loss.masked_diffusion_loss]
    (`normalization`, `t`, `schedule`, `target_mask`); per-row ones are sliced with the rows.

    Raises:
        ValueError: `tasks` does not name every row.
    """
    if len(tasks) != targets.shape[0]:
        raise ValueError(f"tasks names {len(tasks)} rows; the batch has {targets.shape[0]}")
    out: dict[str, tuple[Tensor, int]] = {}
    for task in sorted(set(tasks)):
        rows = torch.tensor([name == task for name in tasks], device=targets.device)
        weight = corruption.loss_weight
        part = Corruption(
            corruption.noisy_ids[rows],
            corruption.mask[rows],
            None if weight is None else weight[rows],
        )
        sliced = {
            k: v[rows] if k in ("t", "target_mask") and v is not None else v
            for k, v in kwargs.items()
        }
        loss = masked_diffusion_loss(logits[rows], targets[rows], part, **sliced)
        out[task] = (loss, int(rows.sum()))
    return out


class TaskMeans(nn.Module):
    """A torchmetrics `MeanMetric` per task: the per-task losses of an evaluation epoch.

    Every process must synchronise the same metrics in the same order, so `compute` first
    learns the task names the other processes saw (a custom task may have reached only some
    of them); the built-in tasks exist from the start.

    Args:
        tasks: the task names known in advance.
    """

    def __init__(self, tasks: Sequence[str] = ()) -> None:
        super().__init__()
        self.means = nn.ModuleDict({task: MeanMetric() for task in tasks})

    def update(self, losses: Mapping[str, tuple[Tensor, int]]) -> None:
        """Add each task's loss, weighted by its number of rows (`task_losses`' output)."""
        for task, (loss, rows) in losses.items():
            self._metric(task, loss.device).update(loss.detach(), weight=rows)

    def compute(self) -> dict[str, float]:
        """Each task's mean loss over every process, then reset; tasks without rows are left
        out."""
        names = [sorted(self.means)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            names = [[] for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(names, sorted(self.means))
        metrics = [typing.cast(MeanMetric, m) for m in self.means.values()]
        device = metrics[0].device if metrics else torch.device("cpu")
        out: dict[str, float] = {}
        for task in sorted({name for part in names for name in part}):
            metric = self._metric(task, device)
            with warnings.catch_warnings():  # a task without rows computes NaN: left out
                warnings.simplefilter("ignore")
                value = metric.compute()
            if bool(torch.isfinite(value)):
                out[task] = float(value)
            metric.reset()
        return out

    def _metric(self, task: str, device: torch.device) -> MeanMetric:
        if task not in self.means:
            self.means[task] = MeanMetric().to(device)
        return typing.cast(MeanMetric, self.means[task])
