"""Helpers for testing and studying blocks without training a model.

`MixtureDenoiser` is the exact denoiser of a small data set, to study samplers without
training.

If the data is a uniform mixture of `K` known sequences, the best possible denoiser has a
closed form: given the visible (unmasked) tokens, the posterior over the data is uniform on
the sequences that agree with them, and the prediction at a masked position is the share of
those sequences holding each token there. A sampler that unmasks one token per step with
this denoiser reproduces a data sequence exactly, every time; parallel decoding can combine
tokens of different sequences into one that is in no data set. How often that happens is a
clean measure of what a planner trades for fewer steps (see `matches`).
"""

from __future__ import annotations

import torch
from einops import einsum
from jaxtyping import Bool, Int
from torch import Tensor
from torch.nn import functional as F

from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["MixtureDenoiser"]


class MixtureDenoiser:
    """The exact denoiser of a uniform mixture of the given sequences.

    Args:
        sequences: the data, one sequence per row (global ids, every position including the
            prompt).
        mask_id: the id of `[MASK]`; positions holding it are hidden.
        vocab_size: the number of logits per position.
        floor: probability given to tokens no agreeing sequence holds (keeps logits finite).
        logit_offset: added to every logit. The softmax ignores it, but Omni-Diffusion's
            [`TailPenalty`][omni_blocks.sampling.penalties.TailPenalty] depends on the sign of
            the logits: with the default 0 all logits are log-probabilities (negative), which
            the penalty sharpens instead of flattening. A trained language model's likely
            tokens have positive logits; an offset of about 10 imitates that.

    Raises:
        ValueError: `sequences` is empty, holds `mask_id`, or ids outside `[0, vocab_size)`.

    Example:
        ```python
        import torch
        from omni_blocks.testing import MixtureDenoiser

        data = torch.tensor([[1, 2, 3], [1, 4, 5]])
        model = MixtureDenoiser(data, mask_id=9, vocab_size=10)
        probs = model(torch.tensor([[1, 9, 9]])).softmax(-1)   # p(2) = p(4) = 0.5 at position 1
        ```
    """

    def __init__(
        self,
        sequences: Int[Tensor, "k seq"],
        *,
        mask_id: int,
        vocab_size: int,
        floor: float = 1e-9,
        logit_offset: float = 0.0,
    ) -> None:
        if sequences.numel() == 0:
            raise ValueError("sequences must hold at least one non-empty sequence")
        if bool((sequences == mask_id).any()):
            raise ValueError(f"sequences must not contain mask_id {mask_id}")
        if bool((sequences < 0).any()) or bool((sequences >= vocab_size).any()):
            raise ValueError(f"sequence ids must lie in [0, {vocab_size})")
        self.sequences = sequences.long()
        self.mask_id = mask_id
        self.vocab_size = vocab_size
        self.floor = floor
        self.logit_offset = logit_offset
        self._one_hot = F.one_hot(self.sequences, vocab_size).float()

    def posterior(self, ids: TokenIds) -> Int[Tensor, "batch k"]:
        """Which data sequences agree with the visible tokens of each row (1 or 0)."""
        if ids.shape[-1] != self.sequences.shape[-1]:
            raise ValueError(
                f"ids have {ids.shape[-1]} positions, the data sequences {self.sequences.shape[-1]}"
            )
        visible = ids != self.mask_id
        clash = visible.unsqueeze(1) & (ids.unsqueeze(1) != self.sequences.unsqueeze(0))
        agree = (~clash.any(-1)).long()
        # a row no sequence agrees with (after an incoherent parallel step): fall back to
        # the prior rather than predicting nothing
        none = agree.sum(-1, keepdim=True) == 0
        return torch.where(none, torch.ones_like(agree), agree)

    def __call__(self, ids: TokenIds, attention_mask: SeqMask | None = None) -> Logits:
        """Log-probabilities of every token at every position given the visible ones."""
        weights = self.posterior(ids).float()
        weights = weights / weights.sum(-1, keepdim=True)
        probs = einsum(weights, self._one_hot, "b k, k s v -> b s v")
        return probs.clamp(min=self.floor).log() + self.logit_offset

    def matches(self, ids: TokenIds) -> Bool[Tensor, " batch"]:
        """Whether each row is exactly one of the data sequences."""
        same = (ids.unsqueeze(1) == self.sequences.unsqueeze(0)).all(-1)
        return same.any(-1)
