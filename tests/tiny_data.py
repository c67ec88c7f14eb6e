"""Tiny data for the module tests: a copy task, and captioning + ASR of ten digits.

The copy task is in the batch format of `omni_blocks.data.collate_sequences`.

Rows are `prompt + target + tail pads`, where the target repeats the prompt's text ids; the
prompt length varies, so rows are aligned with padding that is neither attended nor
target_mask. Used by the module, CLI and benchmark tests (importable from a YAML config as
`tiny_data.CopyDataModule`).
"""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from omni_blocks.data import (
    AsrTemplate,
    CaptionTemplate,
    ChatFormat,
    OmniDataModule,
    TaskMixture,
    TaskTemplate,
    TemplateDataset,
)
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import VocabLayout

TASKS = ("copy", "echo")


def tiny_layout(text_size: int = 40) -> VocabLayout:
    return VocabLayout(text_size=text_size, speech_size=16, image_size=16)


def copy_examples(
    layout: VocabLayout, num_examples: int, max_prompt: int = 6, tail_pads: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """`num_examples` sequences with `ids`, `target_mask` and `task` (one per row)."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num_examples):
        n = int(torch.randint(max_prompt - 2, max_prompt + 1, (1,), generator=generator))
        prompt = torch.randint(0, layout.text_size, (n,), generator=generator)
        pads = torch.full((tail_pads,), layout.pad_id)
        ids = torch.cat([prompt, prompt, pads])
        target_mask = torch.cat(
            [torch.zeros(n, dtype=torch.bool), torch.ones(n + tail_pads, dtype=torch.bool)]
        )
        out.append({"ids": ids, "target_mask": target_mask, "task": TASKS[i % 2]})
    return out


def collate(rows: list[dict[str, Any]], layout: VocabLayout) -> dict[str, Any]:
    """Right-align nothing: rows are padded at the end with unattended, untarget_mask pads."""
    width = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), width), layout.pad_id, dtype=torch.long)
    target_mask = torch.zeros(len(rows), width, dtype=torch.bool)
    attention = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r["ids"])
        ids[i, :n] = r["ids"]
        target_mask[i, :n] = r["target_mask"]
        attention[i, :n] = True
    return {
        "input_ids": ids,
        "target_mask": target_mask,
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


# ---------------------------------------------------------------------------------- real tasks
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_TOKENS = 4


@functools.lru_cache(maxsize=1)
def digit_tokenizer() -> TextTokenizer:
    """A small BPE tokenizer over the digit words (trained once per process)."""
    texts = [f"the digit {w}" for w in WORDS] + WORDS
    return TextTokenizer.train_bpe(texts * 5, vocab_size=300)


def digit_layout(tok: TextTokenizer) -> VocabLayout:
    return VocabLayout(
        text_size=tok.codebook_size,
        speech_size=16,
        image_size=16,
        special_ids=tok.special_ids,
    )


def digit_examples() -> list[dict[str, Any]]:
    """One example per digit: image and speech codes that identify it, and its words."""
    return [
        {
            "id": f"d{d}",
            "image_codes": torch.tensor([d, (d + 3) % 16, (2 * d) % 16, 15 - d]),
            "speech_codes": torch.tensor([d, d, (d + 5) % 16]),
            "caption": f"the digit {WORDS[d]}",
            "text": WORDS[d],
        }
        for d in range(10)
    ]


def digit_templates(layout: VocabLayout, tok: TextTokenizer) -> dict[str, TaskTemplate]:
    chat = ChatFormat(user_start="", user_end="", assistant_start="")
    return {
        "caption": CaptionTemplate(layout, tok, image_tokens=IMAGE_TOKENS, chat=chat),
        "asr": AsrTemplate(layout, tok, chat=chat),
    }


def digit_data(batch_size: int = 4, seed: int = 0) -> OmniDataModule:
    """Captioning + ASR over the ten digits, 1:1, as an `OmniDataModule`."""
    tok = digit_tokenizer()
    layout = digit_layout(tok)
    templates = digit_templates(layout, tok)
    examples = digit_examples()
    mixture = TaskMixture(
        {name: TemplateDataset(examples, t) for name, t in templates.items()},
        {"caption": 1, "asr": 1},
        seed=seed,
    )
    val = [templates["caption"].build(e) for e in examples[:4]]
    return OmniDataModule(layout, mixture, val, batch_size=batch_size, seed=seed, extra_tail_pad=2)
