"""The `Backbone` protocol (the network that predicts clean tokens from noisy ones), and
`grow_rows` for growing its vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from omni_blocks.typing import Logits, SeqMask, TokenIds


@dataclass
class EmbeddingSlots:
    """Input embeddings that replace the token embeddings at some positions.

    The speech a model *hears* reaches it this way in Omni-Diffusion: encoder frames,
    projected to the backbone's width, written between `<|begin_of_audio|>` and
    `<|end_of_audio|>` where the ids hold placeholders. The positions are never masked and
    never predicted; the ids there are ignored.

    Attributes:
        positions: True at the positions whose embedding is given, `(batch, seq)`.
        values: the embeddings, one row per True position in row-major order,
            `(n, hidden)`; None for zero vectors (what Omni-Diffusion's guidance pads with).

    Raises:
        ValueError: `values` has another number of rows than `positions` has True entries,
            or is not 2-D.
    """

    positions: Bool[Tensor, "batch seq"]
    values: Float[Tensor, "n hidden"] | None

    def __post_init__(self) -> None:
        if self.positions.dtype != torch.bool:
            raise ValueError(f"slot positions must be a bool tensor; got {self.positions.dtype}")
        if self.values is None:
            return
        if self.values.ndim != 2 or self.values.shape[0] != int(self.positions.sum()):
            raise ValueError(
                f"the slots hold {int(self.positions.sum())} positions but {self.values.shape[0]} "
                f"embeddings (values of shape {tuple(self.values.shape)}); give one row per "
                "slot position"
            )

    def fill(
        self, embeddings: Float[Tensor, "batch seq hidden"]
    ) -> Float[Tensor, "batch seq hidden"]:
        """`embeddings` with the slot positions replaced by `values`.

        Raises:
            ValueError: the positions do not fit `embeddings`, or the values have another width.
        """
        if self.positions.shape != embeddings.shape[:2]:
            raise ValueError(
                f"slot positions of shape {tuple(self.positions.shape)} do not fit a sequence "
                f"of shape {tuple(embeddings.shape[:2])}"
            )
        where = self.positions.to(embeddings.device).unsqueeze(-1)
        if self.values is None:
            return embeddings.masked_fill(where, 0.0)
        if self.values.shape[-1] != embeddings.shape[-1]:
            raise ValueError(
                f"slot embeddings are {self.values.shape[-1]} wide but the backbone's are "
                f"{embeddings.shape[-1]}; project them to the backbone's hidden size"
            )
        return embeddings.masked_scatter(where, self.values.to(embeddings))

    @staticmethod
    def concat(
        parts: list[EmbeddingSlots | None], shapes: list[torch.Size]
    ) -> EmbeddingSlots | None:
        """The slots of several batches stacked along the batch (None where a part has none)."""
        if all(p is None for p in parts):
            return None
        given = [p.values for p in parts if p is not None and p.values is not None]
        device = next(p.positions.device for p in parts if p is not None)
        positions, values = [], []
        for part, shape in zip(parts, shapes, strict=True):
            if part is None:
                positions.append(torch.zeros(shape, dtype=torch.bool, device=device))
                continue
            positions.append(part.positions.to(device))
            if part.values is not None:
                values.append(part.values)
            elif given:  # zero slots beside slots with values: write the zeros out
                n = int(part.positions.sum())
                values.append(given[0].new_zeros(n, given[0].shape[-1]))
        return EmbeddingSlots(torch.cat(positions), torch.cat(values) if given else None)


@dataclass
class KeyValueCache:
    """The keys and values of every attention layer over a whole sequence.

    A sampler keeps them between steps so that a step recomputes only a *window* of the
    sequence (the block being decoded) and reads the rest from here: Fast-dLLM's prefix and
    dual caches (Wu et al., 2025). For a bidirectional model the cached entries are an
    approximation: they were computed when the tokens around them were still masked, which
    is why the sampler refreshes them once per block
    ([`omni_blocks.sampling.cache`][omni_blocks.sampling.cache]).

    Attributes:
        keys: one tensor per layer, `(batch, kv_heads, seq, head_dim)`, rotary applied.
        values: one tensor per layer, the same shape.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @property
    def seq_len(self) -> int:
        """Positions covered (0 for an empty cache)."""
        return int(self.keys[0].shape[-2]) if self.keys else 0


__all__ = ["Backbone", "CachingBackbone", "EmbeddingSlots", "KeyValueCache", "grow_rows"]


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

    def __call__(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
    ) -> Logits:
        """Logits for every position; `attention_mask` is False at padding to ignore; `slots`
        replace the token embeddings at their positions (speech features, ...)."""
        ...

    def resize_vocab(self, new_size: int) -> None:
        """Grow (or shrink) the embedding and output head to `new_size` rows.

        Existing rows stay bit-identical; new rows get a sensible initialisation (the mean of
        the existing rows).
        """
        ...


@runtime_checkable
class CachingBackbone(Protocol):
    """A backbone that can run a window of a sequence against cached keys and values.

    [`NativeTransformer`][omni_blocks.backbones.NativeTransformer] implements it; the caches
    of [`omni_blocks.sampling.cache`][omni_blocks.sampling.cache] need it.
    """

    def forward_cached(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
        *,
        cache: KeyValueCache | None = None,
        window: tuple[int, int] | None = None,
    ) -> tuple[Float[Tensor, "batch window vocab"], KeyValueCache]:
        """Without `cache`: the logits of every position and a fresh cache of the whole
        sequence (the same logits as `forward`). With `cache` and `window=(start, end)`:
        the logits of positions `start..end-1` only, computed from the current ids in the
        window and the cached keys and values elsewhere; the window's new keys and values
        are written into `cache`."""
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
