"""Packing: several examples per row, so that the backbone runs on tokens, not padding.

A batch of `collate_sequences` holds one example per row, padded to the longest; a batch of
short captions beside one long image costs as much as a batch of long images. Packing lays
the real tokens of the examples end to end in fewer rows for the backbone's forward pass
only:

```
padded (4 rows x 8)        packed (2 rows x 8), segment ids
a a a a a a . .            a a a a a a c c      1 1 1 1 1 1 2 2
b b b b b . . .     ->     b b b b b d d .      1 1 1 1 1 2 2 0
c c . . . . . .
d d . . . . . .
```

The backbone keeps attention inside each example (block-diagonal) and restarts positions at
0 with every example (`segment_ids`, see
[`NativeTransformer.forward`][omni_blocks.backbones.NativeTransformer.forward]), so each
example gets the logits it would get alone; the logits are put back in the padded layout,
where the time draw, the masking and the loss per example are exactly those of unpacked
training. Upstream Omni-Diffusion packs conversations the same way (its data collator
concatenates examples to a length budget).

Packing is chosen in the module's configuration (`packing:`); `NoPacking` (the default)
keeps one example per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.typing import SeqMask, TokenIds

__all__ = ["GreedyPacking", "NoPacking", "PackedRows", "Packing"]


@dataclass
class PackedRows:
    """Where every real token of a padded batch sits in the packed rows.

    Attributes:
        segment_ids: `(rows, length)`: the example each packed position holds (numbered 1,
            2, ... within its row; 0 at padding).
        source: `(rows, length)`: the flat index `row * seq + column` of the padded batch
            each packed position comes from; -1 at padding.
        batch_shape: `(batch, seq)` of the padded batch.
    """

    segment_ids: Int[Tensor, "rows length"]
    source: Int[Tensor, "rows length"]
    batch_shape: tuple[int, int]

    @property
    def rows(self) -> int:
        """Packed rows."""
        return int(self.source.shape[0])

    def pack(self, ids: TokenIds, pad_id: int = 0) -> Int[Tensor, "rows length"]:
        """The ids of the padded batch in the packed layout (`pad_id` at padding)."""
        flat = ids.reshape(-1)
        taken = flat[self.source.clamp(min=0)]
        return taken.masked_fill(self.source < 0, pad_id)

    def unpack(self, values: Tensor) -> Tensor:
        """`(rows, length, ...)` values of the packed rows back in the padded layout
        `(batch, seq, ...)`, zeros at padding (differentiable)."""
        batch, seq = self.batch_shape
        flat = values.reshape(-1, *values.shape[2:])
        # a gather from the packed rows plus one zero row for the padding: one copy of the
        # output, instead of filling it with zeros and scattering into it
        padded = torch.cat([flat, flat.new_zeros(1, *values.shape[2:])])
        out = padded.index_select(0, self._inverse())
        return out.reshape(batch, seq, *values.shape[2:])

    def _inverse(self) -> Int[Tensor, " positions"]:
        """For every position of the padded batch, its packed position (the extra zero row
        after the packed ones for padding)."""
        batch, seq = self.batch_shape
        source = self.source.reshape(-1)
        real = (source >= 0).nonzero().squeeze(-1)
        inverse = torch.full((batch * seq,), source.numel(), dtype=torch.long, device=source.device)
        inverse[source[real]] = real
        return inverse


class Packing(ABC):
    """The interface of a packing policy: where each example of a batch goes."""

    @abstractmethod
    def plan(self, attention_mask: SeqMask) -> PackedRows | None:
        """Packed rows for a padded batch whose real tokens `attention_mask` flags (each
        row one example, left- or right-padded); None to run the batch as it is."""


@dataclass(frozen=True)
class NoPacking(Packing):
    """One example per row, padded (the default)."""

    def plan(self, attention_mask: SeqMask) -> PackedRows | None:
        return None


@dataclass(frozen=True)
class GreedyPacking(Packing):
    """First-fit decreasing: longest example first, each into the first row with room.

    Rows are `max(length, longest example)` positions long; a batch that would not get
    fewer rows is run unpacked (packing would only add the block-diagonal mask).

    Args:
        length: the packed row length (None: the batch's longest example, so that no row
            is longer than the padded batch).

    Raises:
        ValueError: `length < 1`.
    """

    length: int | None = None

    def __post_init__(self) -> None:
        if self.length is not None and self.length < 1:
            raise ValueError(f"length must be >= 1 or None; got {self.length}")

    def plan(self, attention_mask: SeqMask) -> PackedRows | None:
        if attention_mask.ndim != 2 or attention_mask.dtype != torch.bool:
            raise ValueError(
                "attention_mask must be a 2-d bool tensor (batch, seq); got "
                f"{tuple(attention_mask.shape)} {attention_mask.dtype}"
            )
        batch, seq = attention_mask.shape
        lengths = attention_mask.sum(-1).tolist()
        capacity = max([self.length or 0, *lengths])
        # first-fit decreasing (a few hundred examples at most: plain Python is fine)
        rows: list[list[int]] = []
        free: list[int] = []
        for example in sorted(range(batch), key=lambda i: -lengths[i]):
            if lengths[example] == 0:
                continue
            for r, room in enumerate(free):
                if room >= lengths[example]:
                    rows[r].append(example)
                    free[r] -= lengths[example]
                    break
            else:
                rows.append([example])
                free.append(capacity - lengths[example])
        if len(rows) >= batch or capacity == 0:
            return None
        device = attention_mask.device
        flat = torch.arange(batch * seq, device=device).view(batch, seq)
        source = torch.full((len(rows), capacity), -1, dtype=torch.long, device=device)
        segments = torch.zeros_like(source)
        for r, examples in enumerate(rows):
            at = 0
            for number, example in enumerate(examples, start=1):
                index = flat[example][attention_mask[example]]
                source[r, at : at + len(index)] = index
                segments[r, at : at + len(index)] = number
                at += len(index)
        return PackedRows(segments, source, (batch, seq))
