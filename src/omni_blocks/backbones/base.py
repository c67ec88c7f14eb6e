"""The `Backbone` protocol: the network that predicts clean tokens from noisy ones."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["Backbone"]


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
