"""Generation for a task: prompts in, parsed outputs out, with what the sampler did.

[`generate`][omni_blocks.generation.generate] builds each example's prompt with the task's
template, batches the prompts, lets a sampler fill the target regions restricted to the
task's output modality, and parses each row's target region (text for text tasks, local
codes otherwise). It returns the outputs together with the sampler's own record: the
number of forward passes (NFE) and the order in which every position was unmasked.
`OmniDiffusionModule.generate` is this function on the module's own backbone and sampler.

[`write_output`][omni_blocks.generation.write_output] writes one output as a file a person
can open (a PNG, a WAV, or JSON for text and codes), and
[`GenerationWriter`][omni_blocks.generation.GenerationWriter] does it for `omni-blocks
predict` (`Trainer.predict`), batch by batch.

```text
example -> template.prompt -> collate -> sampler (plan; score, penalise, choose) -> parse
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from jaxtyping import Int
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor, nn
from tqdm.auto import tqdm

from omni_blocks._optional import require
from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.data.collate import collate_sequences
from omni_blocks.data.templates import TaskTemplate
from omni_blocks.sampling.base import SampleOutput, Sampler
from omni_blocks.typing import SeqMask
from omni_blocks.vocab import VocabError, VocabLayout

if TYPE_CHECKING:
    from omni_blocks.data.processor import TaskProcessor

__all__ = ["Generation", "GenerationWriter", "generate", "write_output"]


@dataclass
class Generation:
    """What [`generate`][omni_blocks.generation.generate] returns.

    Attributes:
        outputs: one parsed output per example, in order (a string, or local codes).
        nfe: the forward passes spent on each example (its batch's NFE).
        trajectories: each example's unmasking steps over its target region (-1 where a
            position was given, not generated).
        samples: the sampler's raw output of every batch.
        seconds: wall-clock time of the whole call.
    """

    outputs: list[Any]
    nfe: list[int] = field(default_factory=list)
    trajectories: list[Int[Tensor, " target"]] = field(default_factory=list)
    samples: list[SampleOutput] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mean_nfe(self) -> float:
        """Forward passes per example, averaged."""
        return sum(self.nfe) / len(self.nfe) if self.nfe else 0.0


@torch.no_grad()
def generate(
    backbone: nn.Module,
    layout: VocabLayout,
    sampler: Sampler,
    template: TaskTemplate,
    examples: Sequence[Mapping[str, Any]],
    target_length: int | None = None,
    *,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    lenient_parse: bool = False,
    speech: Callable[[SeqMask, list[Tensor]], EmbeddingSlots] | None = None,
) -> Generation:
    """Generate the task's output for every example.

    Rows of a batch are aligned with padding that is neither attended nor generated, so an
    example's output does not depend on the other examples of its batch (up to the
    sampler's random draws). The backbone is put in eval mode for the call and restored.

    Args:
        backbone: the denoiser (any module called as `backbone(ids, attention_mask)`).
        layout: the vocabulary layout of the backbone.
        sampler: fills the masked positions.
        template: the task's template (holds the layout and the text tokenizer).
        examples: examples with the task's input keys.
        target_length: positions of the target region (room for the response, its end
            token and tail pads); image tasks default to the image's token count.
        generator: makes sampling deterministic.
        batch_size: examples per sampler call (default: all at once).
        progress: show a tqdm bar over batches.
        speech: turns a batch's speech slots and frames into slot embeddings, for templates
            that write speech as features (`OmniDiffusionModule.speech_slots`); computed once
            per batch, before sampling.
        lenient_parse: parse outputs as upstream's inference does, keeping only the ids of
            the task's modality (see `TaskTemplate.parse`); for samplers that do not
            restrict their output to it.

    Raises:
        ValueError: a template built for another layout, or a bad `batch_size`.
        DataError: a bad example (the message names its index).
    """
    import time

    if template.layout != layout:
        raise ValueError(
            f"the template's layout ({template.layout.describe()}) differs from the "
            f"model's ({layout.describe()})"
        )
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}")
    size = batch_size or max(1, len(examples))
    device = next(backbone.parameters()).device
    started = time.time()
    result = Generation(outputs=[])
    was_training = backbone.training
    backbone.eval()
    try:
        starts = range(0, len(examples), size)
        for start in tqdm(starts, disable=not progress, desc=f"generate {template.name}"):
            chunk = examples[start : start + size]
            seqs = [
                template.prompt(example, target_length, index=start + i)
                for i, example in enumerate(chunk)
            ]
            batch = collate_sequences(seqs, layout, pad_targets=False)
            ids = batch["input_ids"].to(device)
            target = batch["target_mask"].to(device)
            attention = batch["attention_mask"].to(device)
            slots = None
            if batch.get("slot_mask") is not None:
                if speech is None:
                    raise ValueError(
                        f"the {template.name} template writes speech as features but no speech "
                        "encoder was given (speech=...; a module built with speech_encoder)"
                    )
                slots = speech(batch["slot_mask"].to(device), list(batch["speech_features"]))
            # Slots go only to samplers that get speech: a sampler written before the
            # speech path (without the keyword) keeps working on every other template.
            extra = {} if slots is None else {"slots": slots}
            sample = sampler(
                backbone,
                ids,
                layout=layout,
                modality=template.target_modality,
                target_mask=target,
                attention_mask=None if bool(attention.all()) else attention,
                generator=generator,
                **extra,
            )
            result.samples.append(sample)
            for row in range(len(seqs)):
                region = sample.ids[row][target[row]].cpu()
                result.outputs.append(template.parse(region, lenient=lenient_parse))
                result.nfe.append(sample.nfe)
                if sample.trajectory is not None:
                    result.trajectories.append(sample.trajectory[row][target[row]].cpu())
    finally:
        backbone.train(was_training)
    result.seconds = time.time() - started
    return result


def write_output(
    stem: str | os.PathLike[str],
    task: str,
    output: str | Tensor,
    processor: TaskProcessor | None = None,
) -> dict[str, Any]:
    """Write one parsed output next to `stem`, as a person would open it.

    Text goes to `<stem>.json`; image and speech codes go to `<stem>.json` as lists, and,
    when `processor` has the tokenizer to decode them, to `<stem>.png` (torchvision's
    `save_image`) or `<stem>.wav` (16-bit PCM) as well.

    Returns:
        The record written to the JSON file (`task`, `text` or `codes`, the media file
        names, and `error` when the codes could not be decoded, such as an image with
        another number of codes than the tokenizer's).

    Raises:
        ImportError: torchvision or soundfile is missing for a PNG or WAV (the message names
            the extra).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"task": task}
    if isinstance(output, str):
        record["text"] = output
    else:
        record["codes"] = [int(c) for c in output.tolist()]
        known = processor is not None and task in processor.templates
        decoded = None
        if known and processor is not None and processor.decodes(task):
            try:
                decoded = processor.decode(task, output)
            except ValueError as err:  # e.g. an image of the wrong number of codes
                record["error"] = str(err)
        if isinstance(decoded, Tensor) and decoded.ndim == 3:
            utils = require("torchvision.utils", "writing images")
            utils.save_image(decoded.float().clamp(0, 1), str(stem.with_suffix(".png")))
            record["image"] = stem.with_suffix(".png").name
        elif isinstance(decoded, Tensor) and processor is not None:
            from omni_blocks.tokenizers.audio import write_wav

            rate = int(getattr(processor.speech_tokenizer, "sample_rate", 16_000))
            write_wav(stem.with_suffix(".wav"), decoded.detach().float().cpu(), rate)
            record["audio"] = stem.with_suffix(".wav").name
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


class GenerationWriter(BasePredictionWriter):
    """Writes what `OmniDiffusionModule.predict_step` generated, batch by batch.

    Every row becomes `<output_dir>/<index>-<task>.json` (and a PNG or WAV through
    [`write_output`][omni_blocks.generation.write_output]), parsed with the data module's
    templates when it has a `processor` (`ManifestDataModule` does: leniently, keeping the
    ids of the task's modality), as raw target ids otherwise; `predictions.jsonl` lists
    every record. `omni-blocks predict` adds one writing to `<log dir>/predictions`.

    Args:
        output_dir: the folder to write to.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self._count = 0

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        processor = getattr(datamodule, "processor", None)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with (self.output_dir / "predictions.jsonl").open("a") as listing:
            for row in prediction:
                name = f"{self._count:05d}-{row['task']}"
                output: str | Tensor = torch.tensor(row["target_ids"], dtype=torch.long)
                if processor is not None and row["task"] in processor.templates:
                    template = processor.template(row["task"])
                    try:
                        output = template.parse(output, lenient=True)
                    except VocabError as err:
                        row = {**row, "error": str(err)}
                record = write_output(self.output_dir / name, row["task"], output, processor)
                listing.write(json.dumps({"file": name, **record}) + "\n")
                self._count += 1
