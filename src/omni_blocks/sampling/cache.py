"""Key/value caches for the sampler: Fast-dLLM's prefix cache and dual cache.

A masked-diffusion sampler runs the whole sequence through the model at every step, although
a step only changes a few positions of the current block. Fast-dLLM (Wu et al., 2025,
"Fast-dLLM: Training-free Acceleration of Diffusion LLM by Enabling KV Cache and Parallel
Decoding") keeps every layer's keys and values and recomputes only a *window*:

| cache | recomputed at a step | read from the cache |
|---|---|---|
| `NoCache` | everything | - |
| `PrefixCache` | the current block and all after it | the prompt, finished blocks |
| `DualCache` | the current block | everything else, the masked suffix too |

Both caches are refreshed once per block: at a refresh the whole sequence is run (its
logits serve that step) and its keys and values are kept; the next steps of the block run
only the window against them. In a bidirectional model the cached entries are stale: the
prompt's keys were computed while the block was still masked. Fast-dLLM shows the
difference to be small in practice; the benchmark `benchmarks/kv_cache.py` measures it
here. With `refresh_every=1` the cache is rebuilt at
every step, which is exactly the uncached sampler.

The window spans every row's current block (rows of a batch may sit in different blocks,
with adaptive planners); a row that moves to a new block triggers a refresh for the batch.
The model must implement
[`CachingBackbone`][omni_blocks.backbones.CachingBackbone] (`NativeTransformer` does).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from omni_blocks.backbones.base import CachingBackbone, EmbeddingSlots, KeyValueCache
from omni_blocks.sampling.base import Denoiser
from omni_blocks.typing import SeqMask, TokenIds

__all__ = ["CachedDenoiser", "DecodingCache", "DualCache", "NoCache", "PrefixCache"]


class DecodingCache(ABC):
    """The interface of a cache policy: which positions a step recomputes.

    Attributes:
        refresh_every: rebuild the cache every this many steps as well as at every new
            block (0: only at new blocks; 1: at every step, the uncached sampler).
    """

    refresh_every: int = 0

    @abstractmethod
    def window(self, block: SeqMask) -> tuple[int, int] | None:
        """The columns `(start, end)` a step recomputes, given each row's current block
        (True at its positions; rows without a block are finished); None: all of them and
        keep nothing."""


def _span(block: SeqMask) -> tuple[int, int]:
    columns = block.any(0).nonzero().flatten()
    if columns.numel() == 0:
        return 0, block.shape[-1]
    return int(columns[0]), int(columns[-1]) + 1


@dataclass(frozen=True)
class NoCache(DecodingCache):
    """Run the whole sequence at every step (the exact sampler; the default)."""

    def window(self, block: SeqMask) -> tuple[int, int] | None:
        return None


@dataclass(frozen=True)
class _RefreshedCache(DecodingCache):
    """A cache rebuilt at each block and, with `refresh_every`, every so many steps."""

    refresh_every: int = 0

    def __post_init__(self) -> None:
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0; got {self.refresh_every}")


@dataclass(frozen=True)
class PrefixCache(_RefreshedCache):
    """Fast-dLLM's prefix cache: the prompt and finished blocks come from the cache, the
    current block and everything after it are recomputed at every step.

    Args:
        refresh_every: also rebuild every this many steps (0: once per block).

    Raises:
        ValueError: a negative `refresh_every`.
    """

    def window(self, block: SeqMask) -> tuple[int, int] | None:
        return _span(block)[0], block.shape[-1]


@dataclass(frozen=True)
class DualCache(_RefreshedCache):
    """Fast-dLLM's dual cache: only the current block is recomputed; the prefix and the
    (masked) suffix both come from the cache.

    Args:
        refresh_every: also rebuild every this many steps (0: once per block).

    Raises:
        ValueError: a negative `refresh_every`.
    """

    def window(self, block: SeqMask) -> tuple[int, int] | None:
        return _span(block)


class CachedDenoiser:
    """A model behind a cache policy, for one sampling run.

    Called once per step with the current ids and each row's current block; returns the
    logits of the positions it recomputed and the column of the first of them.

    Args:
        policy: the cache policy.
        model: the denoiser; a [`CachingBackbone`][omni_blocks.backbones.CachingBackbone]
            unless the policy is `NoCache`.

    Raises:
        TypeError: a cache is asked of a model that cannot keep one.
    """

    def __init__(self, policy: DecodingCache, model: Denoiser) -> None:
        self.policy, self.model = policy, model
        self.uses_cache = policy.window(torch.ones(1, 1, dtype=torch.bool)) is not None
        if self.uses_cache and not isinstance(model, CachingBackbone):
            raise TypeError(
                f"{type(policy).__name__} needs a model with `forward_cached` (a "
                f"CachingBackbone such as NativeTransformer); {type(model).__name__} has "
                "none. transformers' caches append keys and cannot replace a window of a "
                "bidirectional sequence: use NoCache with HFBackbone"
            )
        self._cache: KeyValueCache | None = None
        self._blocks: SeqMask | None = None
        self._since = 0
        self.refreshes = 0

    def __call__(
        self,
        ids: TokenIds,
        attention_mask: SeqMask | None,
        slots: EmbeddingSlots | None,
        block: SeqMask,
    ) -> tuple[Tensor, int]:
        """Logits `(batch, window, vocab)` of the recomputed positions, and the window's
        first column."""
        if not self.uses_cache:
            if slots is None:
                return self.model(ids, attention_mask), 0
            return self.model(ids, attention_mask, slots=slots), 0  # type: ignore[call-arg]
        model: CachingBackbone = self.model  # type: ignore[assignment]
        self._since += 1
        if self._needs_refresh(block):
            logits, self._cache = model.forward_cached(ids, attention_mask, slots)
            self._blocks, self._since = block.clone(), 0
            self.refreshes += 1
            return logits, 0
        window = self.policy.window(block)
        assert window is not None
        logits, self._cache = model.forward_cached(
            ids, attention_mask, slots, cache=self._cache, window=window
        )
        return logits, window[0]

    def _needs_refresh(self, block: SeqMask) -> bool:
        if self._cache is None or self._blocks is None:
            return True
        every = self.policy.refresh_every
        if every > 0 and self._since >= every:
            return True
        # a row that moved to another block; a row that finished changes nothing
        active = block.any(-1)
        return not torch.equal(block[active], self._blocks[active])
