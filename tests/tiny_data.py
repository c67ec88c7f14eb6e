"""A tiny copy task in the batch format of `omni_blocks.data.collate_sequences`.

Rows are `prompt + target + tail pads`, where the target repeats the prompt's text ids; the
prompt length varies, so rows are aligned with padding that is neither attended nor
maskable. Used by the module, CLI and benchmark tests (importable from a YAML config as
`tiny_data.CopyDataModule`).
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from omni_blocks.vocab import VocabLayout

TASKS = ("copy", "echo")


def tiny_layout(text_size: int = 40) -> VocabLayout:
    return VocabLayout(text_size=text_size, speech_size=16, image_size=16)


def copy_examples(
    layout: VocabLayout, num_examples: int, max_prompt: int = 6, tail_pads: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """`num_examples` sequences with `ids`, `maskable` and `task` (one per row)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num_examples):
        n = int(torch.randint(max_prompt - 2, max_prompt + 1, (1,), generator=generator))
        prompt = torch.randint(0, layout.text_size, (n,), generator=generator)
        pads = torch.full((tail_pads,), layout.pad_id)
        ids = torch.cat([prompt, prompt, pads])
        maskable = torch.cat(
            [torch.zeros(n, dtype=torch.bool), torch.ones(n + tail_pads, dtype=torch.bool)]
        )
        out.append({"ids": ids, "maskable": maskable, "task": TASKS[i % 2]})
    return out


def collate(rows: list[dict[str, Any]], layout: VocabLayout) -> dict[str, Any]:
    """Right-align nothing: rows are padded at the end with unattended, unmaskable pads."""
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), layout.pad_id, dtype=torch.long)
    maskable = torch.zeros(len(rows), width, dtype=torch.bool)
    attention = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n] = r["ids"]
        maskable[i, :n] = r["maskable"]
        attention[i, :n] = True
    return {
        "input_ids": ids,
        "maskable": maskable,
        "attention_mask": attention,
        "task": [r["task"] for r in rows],
    }


class CopyDataModule(L.LightningDataModule):
    """Copy-task batches (no shuffling: the order is the same in every run)."""

    def __init__(
        self,
        text_size: int = 40,
        num_examples: int = 24,
        num_val_examples: int = 8,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.layout = tiny_layout(text_size)
        self.batch_size = batch_size
        self.train = copy_examples(self.layout, num_examples, seed=seed)
        self.val = copy_examples(self.layout, num_val_examples, seed=seed + 1)

    def _loader(self, rows: list[dict[str, Any]]) -> DataLoader[Any]:
        return DataLoader(
            rows,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=functools.partial(collate, layout=self.layout),
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val)
