"""Task data: templates that turn examples into token sequences, collation, mixtures.

- [`TaskSequence`][omni_blocks.data.sequence.TaskSequence]: global ids + the target region;
- task templates ([`AsrTemplate`][omni_blocks.data.templates.AsrTemplate], ...,
  [`InpaintingTemplate`][omni_blocks.data.templates.InpaintingTemplate]);
- [`collate_sequences`][omni_blocks.data.collate.collate_sequences]: batches with tail pads;
- [`tokenize_example`][omni_blocks.data.tokenize.tokenize_example]: raw pixels / audio ->
  codes, checked per example;
- [`ManifestDataModule`][omni_blocks.data.manifest.ManifestDataModule]: prepared datasets
  as JSONL manifests (media files or pre-tokenized codes), one task per manifest.
"""

from omni_blocks.data.collate import BatchError, TaskBatch, check_batch, collate_sequences
from omni_blocks.data.manifest import (
    ManifestDataModule,
    ManifestDataset,
    ManifestTask,
    load_example,
    read_manifest,
)
from omni_blocks.data.mixture import (
    MixtureOrder,
    OmniDataModule,
    SequenceCollator,
    TaskMixture,
    TemplateDataset,
)
from omni_blocks.data.packing import GreedyPacking, NoPacking, PackedRows, Packing
from omni_blocks.data.sequence import (
    DataError,
    TaskSequence,
    describe_example,
    render_sequence,
    segment,
)
from omni_blocks.data.templates import (
    TASK_NAMES,
    AsrTemplate,
    CaptionTemplate,
    ChatFormat,
    InpaintingTemplate,
    SpeechToImageTemplate,
    SpokenVqaTemplate,
    TaskTemplate,
    TextToImageTemplate,
    TtsTemplate,
    VqaTemplate,
    build_all,
)
from omni_blocks.data.tokenize import tokenize_example, tokenize_examples

__all__ = [
    "TASK_NAMES",
    "AsrTemplate",
    "BatchError",
    "CaptionTemplate",
    "ChatFormat",
    "DataError",
    "GreedyPacking",
    "InpaintingTemplate",
    "ManifestDataModule",
    "ManifestDataset",
    "ManifestTask",
    "MixtureOrder",
    "NoPacking",
    "OmniDataModule",
    "PackedRows",
    "Packing",
    "SequenceCollator",
    "SpeechToImageTemplate",
    "SpokenVqaTemplate",
    "TaskBatch",
    "TaskMixture",
    "TaskSequence",
    "TaskTemplate",
    "TemplateDataset",
    "TextToImageTemplate",
    "TtsTemplate",
    "VqaTemplate",
    "build_all",
    "check_batch",
    "collate_sequences",
    "describe_example",
    "load_example",
    "read_manifest",
    "render_sequence",
    "segment",
    "tokenize_example",
    "tokenize_examples",
]
