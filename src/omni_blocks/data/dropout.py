"""Prompt dropout: train the unconditional model that classifier-free guidance subtracts.

Guidance mixes each step's logits as `uncond + (w + 1) * (cond - uncond)`. Its unconditional
pass is only meaningful if the model has seen unconditional rows in training; otherwise it
reads a prompt it never met (a fully masked prompt, or another task's). As in classifier-free
guidance for images (Ho and Salimans, 2022), a share of a task's training rows lose their
prompt: the row becomes the template's
[`unconditional_prompt`][omni_blocks.data.templates.TaskTemplate.unconditional_prompt] (the
chat format around an empty user turn) followed by the row's own target region. At sampling,
[`PromptSwapGuidance`][omni_blocks.sampling.PromptSwapGuidance] with the same ids and
`align_response=True` reads exactly that sequence. Upstream Omni-Diffusion trains without
dropout (its speech-to-image guidance reads a system prompt with an empty user turn that it
never trained on); this block is omni_blocks' own.

It acts on each training batch, as its rows are drawn:
[`OmniDataModule(prompt_dropout=...)`][omni_blocks.data.OmniDataModule] passes it to the
training batches' collator, whose per-batch generator (seeded by the run's seed and the
batch's contents) makes the draws, so that a resumed run and any number of data-loader
workers drop the same rows. Validation and test batches are never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from omni_blocks.data.sequence import TaskSequence
from omni_blocks.data.templates import TaskTemplate

__all__ = ["PromptDropout"]


@dataclass(frozen=True)
class PromptDropout:
    """Some tasks' training rows lose their prompt with probability `rate`.

    Args:
        unconditional: task name -> its unconditional prompt's ids (build them with
            `template.unconditional_prompt()`, or use
            [`from_templates`][omni_blocks.data.dropout.PromptDropout.from_templates]); rows
            of other tasks are never dropped.
        rate: the probability that a row of those tasks loses its prompt.

    Raises:
        ValueError: `rate` outside [0, 1], or an empty unconditional prompt.
    """

    unconditional: Mapping[str, Sequence[int]] = field(default_factory=dict)
    rate: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must lie in [0, 1]; got {self.rate}")
        prompts = {task: tuple(int(i) for i in ids) for task, ids in self.unconditional.items()}
        empty = sorted(task for task, ids in prompts.items() if not ids)
        if empty:
            raise ValueError(f"the unconditional prompt of {empty} is empty")
        object.__setattr__(self, "unconditional", prompts)

    @classmethod
    def from_templates(
        cls, templates: Mapping[str, TaskTemplate], rate: float = 0.1
    ) -> PromptDropout:
        """Dropout for the tasks of `templates` (task name -> template), each with its
        template's `unconditional_prompt()`."""
        return cls({task: t.unconditional_prompt().tolist() for task, t in templates.items()}, rate)

    def drop(self, seq: TaskSequence) -> TaskSequence:
        """`seq` without its prompt: the task's unconditional prompt, then its target region
        (speech slots, which lie in the prompt, go with it).

        Raises:
            KeyError: `seq.task` has no unconditional prompt here.
        """
        prompt = torch.tensor(self.unconditional[seq.task], dtype=torch.long)
        target = seq.ids[seq.target_mask]
        return TaskSequence(
            ids=torch.cat([prompt, target]),
            target_mask=torch.cat(
                [
                    torch.zeros(len(prompt), dtype=torch.bool),
                    torch.ones(len(target), dtype=torch.bool),
                ]
            ),
            task=seq.task,
            target_modality=seq.target_modality,
        )

    def __call__(
        self, seqs: Sequence[TaskSequence], generator: torch.Generator | None = None
    ) -> list[TaskSequence]:
        """The batch's rows, each of a listed task dropped with probability `rate` (one
        uniform draw per row from `generator`, whatever its task)."""
        draws = torch.rand(len(seqs), generator=generator).tolist()
        return [
            self.drop(seq) if seq.task in self.unconditional and u < self.rate else seq
            for seq, u in zip(seqs, draws, strict=True)
        ]
