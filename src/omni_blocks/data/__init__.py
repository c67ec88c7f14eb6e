"""Task data: templates that turn examples into token sequences, collation, mixtures.

- [`TaskSequence`][omni_blocks.data.sequence.TaskSequence]: global ids + the target region;
- task templates ([`AsrTemplate`][omni_blocks.data.templates.AsrTemplate], ...,
  [`InpaintingTemplate`][omni_blocks.data.templates.InpaintingTemplate]);
- [`collate_sequences`][omni_blocks.data.collate.collate_sequences]: batches with tail pads;
- [`tokenize_example`][omni_blocks.data.tokenize.tokenize_example]: raw pixels / audio ->
  codes, checked per example;
- upstream's chat samples (`messages`, `audios`, `images`):
  [`ChatTextTemplate`][omni_blocks.data.messages.ChatTextTemplate] and its image / speech
  siblings, with [`encode_media`][omni_blocks.data.messages.encode_media];
- speech heard as codes or as encoder features:
  [`SpeechCodes`][omni_blocks.data.speech_input.SpeechCodes],
  [`SpeechFeatures`][omni_blocks.data.speech_input.SpeechFeatures];
- [`PromptDropout`][omni_blocks.data.dropout.PromptDropout]: a share of a task's rows
  trained without their prompt, for classifier-free guidance;
- [`ManifestDataModule`][omni_blocks.data.manifest.ManifestDataModule]: prepared datasets
  as JSONL manifests (media files or pre-tokenized codes), one task per manifest.
"""

from omni_blocks.data.collate import BatchError, TaskBatch, check_batch, collate_sequences
from omni_blocks.data.dropout import PromptDropout
from omni_blocks.data.manifest import (
    ManifestDataModule,
    ManifestDataset,
    ManifestTask,
    load_example,
    read_manifest,
)
from omni_blocks.data.messages import (
    ChatImageTemplate,
    ChatSpeechTemplate,
    ChatTextTemplate,
    MessagesTemplate,
    encode_media,
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
from omni_blocks.data.speech_input import SpeechCodes, SpeechFeatures, SpeechInput
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
    "ChatImageTemplate",
    "ChatSpeechTemplate",
    "ChatTextTemplate",
    "DataError",
    "GreedyPacking",
    "InpaintingTemplate",
    "ManifestDataModule",
    "ManifestDataset",
    "ManifestTask",
    "MessagesTemplate",
    "MixtureOrder",
    "NoPacking",
    "OmniDataModule",
    "PackedRows",
    "Packing",
    "PromptDropout",
    "SequenceCollator",
    "SpeechCodes",
    "SpeechFeatures",
    "SpeechInput",
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
    "encode_media",
    "load_example",
    "read_manifest",
    "render_sequence",
    "segment",
    "tokenize_example",
    "tokenize_examples",
]
