"""LoRA fine-tuning of a backbone by configuration, through `peft`.

Omni-Diffusion fine-tunes all of Dream-7B; one GPU cannot hold that (the weights, gradients
and AdamW states of 7.6 billion parameters). Low-rank adapters (Hu et al., 2021, "LoRA")
train a rank-`r` update `B A` beside each chosen projection and freeze the rest; the new
vocabulary rows (the speech and image tokens the original model never saw) must still be
learnt, so they stay trainable too, through `peft`'s *trainable tokens* (a delta for those
rows only, in the embedding and the output head).

```yaml
model:
  backbone:
    class_path: omni_blocks.backbones.LoraBackbone
    init_args:
      backbone:
        class_path: omni_blocks.backbones.PretrainedTransformer
        init_args: {pretrained: Dream-org/Dream-v0-Instruct-7B, vocab_size: 176264}
      r: 16
      new_rows_from: 151667          # Dream's vocabulary: rows from here on are new
```

After training, [`merged`][omni_blocks.backbones.lora.LoraBackbone.merged] folds the
adapters into the weights and returns the plain backbone (save it with its own
`save_pretrained`). Needs the `lora` extra (`pip install 'omni-blocks[lora]'`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from omni_blocks._optional import require
from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["DEFAULT_TARGETS", "LoraBackbone"]

DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Every attention and MLP projection of a Qwen2 / Dream layer."""


class LoraBackbone(nn.Module):
    """A backbone whose projections carry LoRA adapters; everything else frozen except the
    new vocabulary rows.

    Args:
        backbone: the backbone to adapt (its vocabulary already resized to the layout's).
        r: the adapters' rank.
        alpha: LoRA's scale numerator (the update is scaled by `alpha / r`).
        dropout: dropout on the adapters' input while training.
        target_modules: the names of the projections to adapt.
        new_rows_from: vocabulary rows from this id on stay trainable in the embedding and
            the output head (the tokens the backbone did not have before); None: none.

    Raises:
        ImportError: `peft` is not installed (the message names the extra).
        ValueError: a rank below 1, or `new_rows_from` outside the vocabulary.
    """

    def __init__(
        self,
        backbone: nn.Module,
        r: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.05,
        target_modules: Sequence[str] = DEFAULT_TARGETS,
        new_rows_from: int | None = None,
    ) -> None:
        super().__init__()
        peft = require("peft", "LoRA fine-tuning")
        if r < 1:
            raise ValueError(f"r must be >= 1; got {r}")
        vocab = int(getattr(backbone, "vocab_size", 0))
        if new_rows_from is not None and not 0 <= new_rows_from < vocab:
            raise ValueError(
                f"new_rows_from must lie in [0, {vocab}) (the backbone's vocabulary); got "
                f"{new_rows_from}"
            )
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.target_modules = list(target_modules)
        self.new_rows_from = new_rows_from
        tokens: dict[str, list[int]] | None = None
        if new_rows_from is not None:
            rows = list(range(new_rows_from, vocab))
            tokens = {"embed_tokens": rows, "lm_head": rows}
        config = peft.LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.target_modules,
            trainable_token_indices=tokens,
        )
        self.model = peft.get_peft_model(backbone, config)

    @property
    def base(self) -> nn.Module:
        """The adapted backbone (its projections wrapped by the adapters)."""
        base: nn.Module = self.model.base_model.model
        return base

    @property
    def vocab_size(self) -> int:
        """Rows of the output head."""
        return int(getattr(self.base, "vocab_size"))  # noqa: B009 (the Backbone protocol)

    @property
    def config(self) -> Any:
        """The backbone's architecture (its `config`)."""
        return getattr(self.base, "config", None)

    def forward(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
        **kwargs: Any,
    ) -> Logits:
        """The adapted backbone's logits (`kwargs`, such as `segment_ids`, pass through)."""
        logits: Tensor = self.model(input_ids, attention_mask, slots, **kwargs)
        return logits

    def forward_cached(self, *args: Any, **kwargs: Any) -> Any:
        """The backbone's key/value-cached pass, through the adapters (see
        [`CachingBackbone`][omni_blocks.backbones.CachingBackbone])."""
        return self.base.forward_cached(*args, **kwargs)  # type: ignore[operator]

    def resize_vocab(self, new_size: int) -> None:
        """Not possible once adapted: resize the backbone before wrapping it.

        Raises:
            RuntimeError: always.
        """
        raise RuntimeError(
            "resize the backbone's vocabulary before wrapping it in LoraBackbone (the trainable "
            "rows are fixed when the adapters are made)"
        )

    def trainable_parameters(self) -> dict[str, int]:
        """Trainable and total parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total}

    def merged(self) -> nn.Module:
        """A copy of the backbone with the adapters and the new rows folded into its weights
        (this module is left as it is)."""
        merged: nn.Module = copy.deepcopy(self.model).merge_and_unload()
        return merged

    def to_config(self) -> dict[str, Any]:
        """`class_path` / `init_args`, the wrapped backbone's configuration inside."""
        from omni_blocks.config import block_config

        return {
            "class_path": "omni_blocks.backbones.LoraBackbone",
            "init_args": {
                "backbone": block_config(self.base),
                "r": self.r,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "target_modules": list(self.target_modules),
                "new_rows_from": self.new_rows_from,
            },
        }
