"""From feature frames to the embeddings of a batch's speech slots."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.speech.encoders import SpeechEncoder
from omni_blocks.speech.projectors import Projector
from omni_blocks.typing import SeqMask

__all__ = ["SlotError", "select_slot_rows", "speech_slots"]


class SlotError(ValueError):
    """The encoder's outputs do not fit the slots the template reserved."""


def speech_slots(
    encoder: SpeechEncoder,
    projector: Projector,
    slot_mask: SeqMask,
    features: Sequence[Tensor],
) -> EmbeddingSlots:
    """Encode every slot's frames, project them, and lay them out over `slot_mask`.

    The frames of all slots are encoded in one padded batch (`encoder(features, lengths)`);
    each slot takes the valid outputs of its frames, in row-major order of `slot_mask`, which
    is the order `collate_sequences` lists `features` in.

    Raises:
        SlotError: a slot whose length is not what the encoder makes of its frames (the
            template's `SpeechFeatures` and the encoder disagree), or a count of feature
            tensors other than the slots'.
    """
    runs = _runs(slot_mask)
    if len(runs) != len(features):
        raise SlotError(
            f"the batch has {len(runs)} speech slots but {len(features)} feature tensors"
        )
    device = slot_mask.device
    lengths = torch.tensor([len(f) for f in features], device=device)
    padded = torch.nn.utils.rnn.pad_sequence([f.to(device) for f in features], batch_first=True)
    param = next(encoder.parameters(), None)
    if param is not None:
        padded = padded.to(param.dtype)
    encoded, out_lengths = encoder(padded, lengths)
    for i, (run, produced) in enumerate(zip(runs, out_lengths.tolist(), strict=True)):
        if run != produced:
            raise SlotError(
                f"slot {i} has {run} positions but the encoder makes {produced} outputs of its "
                f"{len(features[i])} frames; the template's SpeechFeatures(extra_positions, "
                "stride) must match the encoder"
            )
    keep = torch.arange(encoded.shape[1], device=device)[None] < out_lengths[:, None]
    values = projector(encoded[keep])
    return EmbeddingSlots(slot_mask, values)


def _runs(slot_mask: SeqMask) -> list[int]:
    """Lengths of the runs of True of `slot_mask`, row by row, left to right."""
    runs: list[int] = []
    for row in slot_mask.tolist():
        count = 0
        for flag in row:
            if flag:
                count += 1
            elif count:
                runs.append(count)
                count = 0
        if count:
            runs.append(count)
    return runs


def select_slot_rows(
    slot_mask: SeqMask, features: Sequence[Tensor], rows: Sequence[int]
) -> tuple[SeqMask, list[Tensor]]:
    """The slot mask and feature tensors of some rows of a batch (`features` lists every
    slot's frames row by row, as `collate_sequences` does)."""
    per_row = [len(_runs(slot_mask[r : r + 1])) for r in range(slot_mask.shape[0])]
    starts = [sum(per_row[:r]) for r in range(len(per_row))]
    chosen = [features[starts[r] + i] for r in rows for i in range(per_row[r])]
    return slot_mask[list(rows)], chosen
