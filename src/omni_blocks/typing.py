"""Shape-annotated tensor aliases shared by every block.

The aliases are [jaxtyping](https://docs.kidger.site/jaxtyping/) annotations. They document
shapes in signatures and are checked at run time in the test-suite (beartype through
jaxtyping's import hook), so a wrong shape fails loudly where it enters a block.

Dimension names used throughout the library:

- `batch`: rows of a batch;
- `seq`: positions of the unified token sequence;
- `vocab`: entries of the unified vocabulary (logits);
- `codes`: entries of one modality's codebook.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["Logits", "Probs", "SeqFloat", "SeqMask", "Times", "TokenIds"]

TokenIds = Int[Tensor, "batch seq"]
"""Global ids in the unified vocabulary, one row per sequence."""

Logits = Float[Tensor, "batch seq vocab"]
"""Unnormalised scores over the unified vocabulary; position `i` predicts token `i`."""

Probs = Float[Tensor, "batch seq vocab"]
"""Probabilities over the unified vocabulary (rows sum to one)."""

SeqMask = Bool[Tensor, "batch seq"]
"""A boolean flag per position (for example: masked, target, attention)."""

SeqFloat = Float[Tensor, "batch seq"]
"""A float per position (for example: confidence, loss weight)."""

Times = Float[Tensor, " batch"]
"""Diffusion times in `[0, 1]`, one per row: 0 is clean data, 1 is fully masked."""
