"""The `ModalityTokenizer` protocol: raw data <-> local codes of one modality.

Adapters produce *local* codes in `[0, codebook_size)`; `VocabLayout` turns them into
global ids. Adapters never know about offsets.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from omni_blocks.vocab import Modality

__all__ = ["ModalityTokenizer"]


@runtime_checkable
class ModalityTokenizer(Protocol):
    """The interface every tokenizer adapter implements."""

    @property
    def modality(self) -> Modality:
        """The modality this tokenizer handles."""
        ...

    @property
    def codebook_size(self) -> int:
        """Number of distinct local codes."""
        ...

    def encode(self, batch: Any) -> Any:
        """Raw data (a batch) -> local codes (a tensor, or a list of tensors when lengths vary)."""
        ...

    def decode(self, codes: Any) -> Any:
        """Local codes -> raw data."""
        ...
