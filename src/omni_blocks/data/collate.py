"""Batching [`TaskSequence`][omni_blocks.data.sequence.TaskSequence]s with tail padding.

The rule (Omni-Diffusion's, made explicit): every sequence ends with its target region, and
the target continues with pad tokens (`layout.pad_id`, Dream's `<|endoftext|>`) up to the
row length. Those pads are *targets*: the loss covers them, so the model learns that
positions after the response are pad, which is how variable-length generation stops (at
sampling time the target region is longer than the response and the model fills the rest
with pads).

For row `b` with `n_b` tokens:

1. `extra_tail_pad` pads are appended to the target first: a fixed count, or a count drawn
   uniformly from `[low, high]` per row (upstream: `U{1..16}` eos tokens per example, so
   every response, even the longest in a batch, is followed by at least one pad). With
   `tail_pads_if_no_eos`, a sequence that already holds the eos / pad id gets none
   (upstream's `update_labels_and_inputs`: a response that ends itself is not extended);
2. every row is then padded to the batch's longest row, rounded up to `pad_to_multiple_of`.
   With `pad_targets=True` (the default) these pads are targets and attended, like the
   extra ones; with `pad_targets=False` they are neither (`target_mask` and `attention_mask`
   False), as upstream's collator does for its alignment padding.

`attention_mask` is True on every real token and on every target pad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
from torch import Tensor
from typing_extensions import NotRequired

from omni_blocks.data.sequence import DataError, TaskSequence
from omni_blocks.vocab import VocabLayout

__all__ = ["BATCH_KEYS", "BatchError", "TaskBatch", "check_batch", "collate_sequences"]

BATCH_KEYS = ("input_ids", "target_mask", "attention_mask")
"""The tensors every training batch holds (plus the `task` names)."""


class BatchError(ValueError):
    """A batch a model cannot train on; the message names the bad key or row."""


class TaskBatch(TypedDict):
    """A collated batch (a plain dict at run time).

    Attributes:
        input_ids: global ids, int64 `(batch, seq)`.
        target_mask: bool `(batch, seq)`, True on the target region and its tail pads.
        attention_mask: bool `(batch, seq)`, True on real tokens and target pads.
        task: the task name of each row.
        target_modality: the modality of each row's target (`"text"`, `"image"`,
            `"speech"`).
        slot_mask: bool `(batch, seq)`, True at speech slots (only when some row has one).
        speech_features: every slot's feature frames, row by row (only with `slot_mask`).
    """

    input_ids: Tensor
    target_mask: Tensor
    attention_mask: Tensor
    task: list[str]
    target_modality: list[str]
    slot_mask: NotRequired[Tensor]
    speech_features: NotRequired[list[Tensor]]


def collate_sequences(
    seqs: Sequence[TaskSequence],
    layout: VocabLayout,
    *,
    pad_to_multiple_of: int | None = None,
    extra_tail_pad: int | tuple[int, int] = 0,
    pad_targets: bool = True,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    tail_pads_if_no_eos: bool = False,
) -> TaskBatch:
    """Stack sequences into a batch, padding each target's tail with `layout.pad_id`.

    Args:
        seqs: the sequences; each must end with its (non-empty) target region.
        layout: gives `pad_id`.
        pad_to_multiple_of: round the row length up to a multiple of this (tensor cores
            like multiples of 8). None: the longest row's length.
        extra_tail_pad: pads appended to each target before rows are aligned: an int, or an
            inclusive range `(low, high)` drawn per row with `generator` (Omni-Diffusion:
            `(1, 16)`).
        pad_targets: whether the alignment pads are targets (see the module docstring).
        max_length: the longest row allowed: pads beyond it are dropped (never real tokens);
            a sequence that is itself longer raises `DataError`.
        generator: random source for a ranged `extra_tail_pad`.
        tail_pads_if_no_eos: append `extra_tail_pad` only to sequences that hold no
            `layout.eos_id` yet (Omni-Diffusion's rule).

    Returns:
        `input_ids` (int64, `(batch, seq)`), `target_mask` (bool: target region incl. tail
        pads), `attention_mask` (bool), `task` (list of task names), `target_modality`
        (list of the targets' modality names).

    Raises:
        DataError: an empty batch, a sequence whose target is not one block at its end, or
            one longer than `max_length`.
        ValueError: a bad `extra_tail_pad` or `pad_to_multiple_of`.
    """
    if not seqs:
        raise DataError("collate_sequences got an empty batch")
    low, high = _tail_range(extra_tail_pad)
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be positive or None, got {pad_to_multiple_of}")
    for i, seq in enumerate(seqs):
        if not seq.is_target_suffix():
            raise DataError(
                f"sequence {i} (task {seq.task!r}) has no target block at its end; collation "
                "pads the tail of the target, so templates must put the target last"
            )
        if max_length is not None and len(seq) > max_length:
            raise DataError(
                f"sequence {i} (task {seq.task!r}) has {len(seq)} tokens, more than "
                f"max_length={max_length}"
            )
    if high > low:
        extra = torch.randint(low, high + 1, (len(seqs),), generator=generator).tolist()
    else:
        extra = [low] * len(seqs)
    if tail_pads_if_no_eos:
        extra = [
            0 if bool((s.ids == layout.eos_id).any()) else e
            for s, e in zip(seqs, extra, strict=True)
        ]
    lengths = [len(s) + e for s, e in zip(seqs, extra, strict=True)]
    width = max(lengths)
    if pad_to_multiple_of is not None:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    if max_length is not None:
        width = min(width, max_length)
        lengths = [min(n, max_length) for n in lengths]

    batch = len(seqs)
    input_ids = torch.full((batch, width), layout.pad_id, dtype=torch.long)
    target_mask = torch.zeros((batch, width), dtype=torch.bool)
    attention_mask = torch.zeros((batch, width), dtype=torch.bool)
    for row, (seq, length) in enumerate(zip(seqs, lengths, strict=True)):
        n = len(seq)
        input_ids[row, :n] = seq.ids
        target_mask[row, :n] = seq.target_mask
        # target tail pads: the extra ones always, the alignment ones when pad_targets
        end = width if pad_targets else length
        target_mask[row, n:end] = True
        attention_mask[row, :end] = True
    batch_out = TaskBatch(
        input_ids=input_ids,
        target_mask=target_mask,
        attention_mask=attention_mask,
        task=[seq.task for seq in seqs],
        target_modality=[seq.target_modality.value for seq in seqs],
    )
    if any(seq.slots is not None for seq in seqs):
        # speech heard as features: where the slots are, and the frames that fill them
        slot_mask = torch.zeros((batch, width), dtype=torch.bool)
        for row, seq in enumerate(seqs):
            if seq.slots is not None:
                slot_mask[row, : len(seq)] = seq.slots
        batch_out["slot_mask"] = slot_mask
        batch_out["speech_features"] = [f for seq in seqs for f in seq.features]
    return batch_out


def _tail_range(extra_tail_pad: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(extra_tail_pad, int):
        low = high = extra_tail_pad
    else:
        if len(extra_tail_pad) != 2:
            raise ValueError(f"extra_tail_pad must be an int or (low, high), got {extra_tail_pad}")
        low, high = int(extra_tail_pad[0]), int(extra_tail_pad[1])
    if low < 0 or high < low:
        raise ValueError(
            f"extra_tail_pad must be >= 0, or (low, high) with 0 <= low <= high; got "
            f"{extra_tail_pad}"
        )
    return low, high


def check_batch(
    batch: Mapping[str, Any], layout: VocabLayout, *, max_positions: int | None = None
) -> None:
    """Raise a clear error unless `batch` is what `collate_sequences` produces.

    Args:
        batch: the batch.
        layout: the vocabulary its ids must lie in.
        max_positions: the backbone's longest sequence (`max_position_embeddings`), if any.

    Raises:
        BatchError: a missing key, wrong dtypes or shapes, an id outside the layout's
            vocabulary, or rows longer than `max_positions` (the message names the tasks of
            the offending rows).
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise BatchError(
            f"the batch lacks {missing}; expected keys {list(BATCH_KEYS)} (+ 'task') as "
            f"produced by omni_blocks.data.collate_sequences; got {sorted(batch)}"
        )
    ids, target, attention = (batch[k] for k in BATCH_KEYS)
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        raise BatchError(
            f"batch['input_ids'] must be an int64 tensor (batch, seq); got {_describe(ids)}"
        )
    for name, value in (("target_mask", target), ("attention_mask", attention)):
        if not isinstance(value, Tensor) or value.dtype != torch.bool:
            raise BatchError(f"batch[{name!r}] must be a bool tensor; got {_describe(value)}")
        if value.shape != ids.shape:
            raise BatchError(
                f"batch[{name!r}] has shape {tuple(value.shape)} but input_ids {tuple(ids.shape)}"
            )
    tasks = batch.get("task")
    if tasks is not None and len(tasks) != ids.shape[0]:
        raise BatchError(f"batch['task'] names {len(tasks)} rows; the batch has {ids.shape[0]}")
    if max_positions is not None and ids.shape[1] > max_positions:
        rows = attention.sum(dim=1) > max_positions
        raise BatchError(
            f"rows of {int(attention.sum(dim=1).max())} tokens (tasks {_tasks_of(tasks, rows)}) "
            f"exceed the backbone's max_position_embeddings={max_positions}; filter or truncate "
            "the data (collate_sequences(max_length=...))"
        )
    if ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= layout.vocab_size:
            bad = ((ids < 0) | (ids >= layout.vocab_size)).any(dim=1)
            raise BatchError(
                f"input_ids in [{low}, {high}] fall outside the layout's vocabulary "
                f"[0, {layout.vocab_size}) (tasks {_tasks_of(tasks, bad)}); the data and the "
                "module use different layouts"
            )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _tasks_of(tasks: Any, rows: Tensor) -> list[str]:
    """The distinct task names of the rows flagged in `rows`."""
    if not tasks:
        return []
    return sorted({str(tasks[i]) for i in rows.nonzero().flatten().tolist()})
