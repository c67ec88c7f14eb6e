"""The `Backbone` protocol (the network that predicts clean tokens from noisy ones), and
`grow_rows` for growing its vocabulary."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["Backbone", "grow_rows"]


@runtime_checkable
class Backbone(Protocol):
    """A bidirectional network from token ids to logits over the unified vocabulary.

    Implementations are `torch.nn.Module`s. The logits at position `i` always predict the
    token at position `i`: backbones that read predictions shifted by one (Dream, inherited
    from its autoregressive initialisation) realign them inside `forward`, so samplers and
    losses never shift.
    """

    @property
    def vocab_size(self) -> int:
        """Number of rows of the output head (may exceed the layout's `vocab_size`)."""
        ...

    def __call__(self, input_ids: TokenIds, attention_mask: SeqMask | None = None) -> Logits:
        """Logits for every position; `attention_mask` is False at padding to ignore."""
        ...

    def resize_vocab(self, new_size: int) -> None:
        """Grow (or shrink) the embedding and output head to `new_size` rows.

        Existing rows stay bit-identical; new rows get a sensible initialisation (the mean of
        the existing rows).
        """
        ...


@torch.no_grad()
def grow_rows(weight: Float[Tensor, "rows dim"], new_rows: int) -> Float[Tensor, "new_rows dim"]:
    """`weight` with `new_rows` rows: old rows copied bit for bit, new rows = their mean.

    The mean of the existing rows is the usual initialisation for new vocabulary entries
    (it keeps the new tokens' logits near the average logit instead of random), computed in
    float32 and cast back. Shrinking keeps the first `new_rows` rows.

    Raises:
        ValueError: `new_rows < 1`.
    """
    if new_rows < 1:
        raise ValueError(f"new_rows must be positive, got {new_rows}")
    old_rows = weight.shape[0]
    if new_rows <= old_rows:
        return weight[:new_rows].clone()
    out = torch.empty(new_rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
    out[:old_rows] = weight
    out[old_rows:] = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return out
