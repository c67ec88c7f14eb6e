"""JSONL manifests: a user's prepared datasets, read lazily, one task per manifest.

A manifest is a text file with one JSON object per line, one example each. Keys are those
of the task templates (see [`omni_blocks.data.templates`][omni_blocks.data.templates]),
with media given as files or as codes:

| key | value |
|---|---|
| `id` | optional; quoted by error messages |
| `text`, `caption`, `question`, `answer` | strings (which ones: the task's template) |
| `image` | path of an image file (PNG, JPEG, ...), tokenized with the image tokenizer |
| `audio` | path of an audio file (WAV, FLAC, ...), tokenized with the speech tokenizer |
| `image_codes`, `speech_codes` | pre-tokenized local codes: a list of integers or a `.npy` path |
| `known_mask` | inpainting prompts only: a list of booleans, one per image code |

```json
{"id": "ls-19-198-0001", "audio": "librispeech/19-198-0001.flac", "text": "northanger abbey"}
{"id": "jdb-000001", "image": "journeydb/000001.jpg", "caption": "a lighthouse at dusk"}
{"id": "jdb-000002", "image_codes": [5, 8190, 17], "caption": "a red fox"}
```

Relative paths are resolved against the manifest's folder, or against `root` when given
(upstream Omni-Diffusion's `prefix_path`). Images are prepared as upstream's
`image_transform`: RGB, the shorter side resized to the tokenizer's `image_size` (bicubic),
then centre-cropped to a square. Audio is read, mixed down to mono and resampled to the
speech tokenizer's rate. Raw media are tokenized when an item is read (in the data-loader
workers); for large runs, tokenize once beforehand and store codes (the recipe's
`examples/omni_diffusion/prepare.py` writes such manifests).

[`ManifestDataset`][omni_blocks.data.manifest.ManifestDataset] indexes the byte offsets of
the lines (it does not keep the examples in memory) and builds each item with the task's
template on access; [`ManifestDataModule`][omni_blocks.data.manifest.ManifestDataModule]
mixes one manifest-backed dataset per [`ManifestTask`][omni_blocks.data.manifest.ManifestTask]
into an [`OmniDataModule`][omni_blocks.data.mixture.OmniDataModule], so that a LightningCLI
config names the files, the templates and the tokenizers:

```yaml
data:
  class_path: omni_blocks.data.ManifestDataModule
  init_args:
    layout: {text_size: 151667, speech_size: 16384, image_size: 8192, special_ids: {...}}
    text_tokenizer: {class_path: omni_blocks.tokenizers.QwenTextTokenizer}
    image_tokenizer:
      class_path: omni_blocks.tokenizers.PretrainedMagvitV2
      init_args: {pretrained: showlab/magvitv2}
    train:
      - manifests: [data/t2i.jsonl]
        template: {class_path: omni_blocks.data.TextToImageTemplate}
      - manifests: [data/caption.jsonl]
        template: {class_path: omni_blocks.data.CaptionTemplate}
        ratio: 0.5
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.utils.data import Dataset

from omni_blocks._optional import require
from omni_blocks.data.dropout import PromptDropout
from omni_blocks.data.mixture import OmniDataModule, TaskMixture
from omni_blocks.data.sequence import DataError, TaskSequence
from omni_blocks.data.templates import TaskTemplate
from omni_blocks.data.tokenize import tokenize_example
from omni_blocks.speech.encoders import SpeechFrontEnd
from omni_blocks.tokenizers.base import ImageTokenizer, SpeechTokenizer
from omni_blocks.tokenizers.glm4voice import GLM4VoiceTokenizer
from omni_blocks.tokenizers.speech_vq import MelVQSpeechTokenizer
from omni_blocks.tokenizers.text import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

if TYPE_CHECKING:
    from omni_blocks.data.processor import TaskProcessor

__all__ = [
    "ManifestDataModule",
    "ManifestDataset",
    "ManifestTask",
    "load_example",
    "load_image",
    "read_manifest",
]

STRING_KEYS = ("id", "text", "caption", "question", "answer")
"""Manifest keys copied as they are."""

CODE_KEYS = ("image_codes", "speech_codes")
"""Manifest keys holding pre-tokenized codes (a list of integers or a `.npy` path)."""


def load_image(path: str | os.PathLike[str], size: int) -> Float[Tensor, "3 size size"]:
    """An image file as a `(3, size, size)` float tensor in `[0, 1]`.

    Upstream Omni-Diffusion's `image_transform` (before its normalisation to `[-1, 1]`,
    which the image tokenizer does): RGB through Pillow, torchvision's
    `Resize(size, BICUBIC)` of the shorter side and `CenterCrop(size)`.

    Raises:
        ImportError: Pillow or torchvision is not installed (the message names the
            `vision` extra).
    """
    require("PIL", "reading image files")
    require("torchvision", "resizing images")
    from PIL import Image
    from torchvision.transforms import v2

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    resize = v2.Compose(
        [v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(size)]
    )
    pixels = v2.functional.pil_to_tensor(resize(image))
    return v2.functional.to_dtype(pixels, torch.float32, scale=True)


def _codes(value: Any, base: Path, key: str, name: str) -> Tensor:
    if isinstance(value, str):
        path = _resolve(value, base)
        if path.suffix != ".npy":
            raise DataError(f"{name}: {key!r} names {value!r}; code files must be .npy arrays")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{name}: cannot read {key!r} from {path}: {err}") from err
        return torch.from_numpy(np.ascontiguousarray(array)).long()
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return torch.tensor(value, dtype=torch.long)
    raise DataError(
        f"{name}: {key!r} must be a list of integers or the path of a .npy file, got "
        f"{type(value).__name__}"
    )


def _resolve(path: str, base: Path) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else base / resolved


def load_example(
    record: Mapping[str, Any],
    *,
    base: str | os.PathLike[str] = ".",
    image_tokenizer: ImageTokenizer | None = None,
    speech_tokenizer: SpeechTokenizer | None = None,
    name: str = "example",
    speech_front_end: SpeechFrontEnd | None = None,
    features_key: str | None = None,
    speech_codes: bool = True,
) -> dict[str, Any]:
    """A manifest record -> a template example (strings and local codes).

    Strings are copied, code lists and `.npy` files become integer tensors, `image` and
    `audio` files are read and tokenized (see the module docstring). Unknown keys are kept,
    so templates and callers can use them.

    Args:
        record: one parsed manifest line.
        base: the folder relative paths are resolved against.
        image_tokenizer: tokenizes `image` files.
        speech_tokenizer: tokenizes `audio` files.
        name: how error messages name the record (its file and line).
        speech_front_end: turns `audio` files into feature frames (speech heard as
            features, [`SpeechFeatures`][omni_blocks.data.speech_input.SpeechFeatures]).
        features_key: where to put those frames (None: no frames are made).
        speech_codes: tokenize `audio` files into `speech_codes` (off when the template
            reads only frames).

    Raises:
        DataError: a missing file, a media file without the tokenizer it needs, codes of the
            wrong form, or a record that is not a JSON object.
    """
    if not isinstance(record, Mapping):
        raise DataError(f"{name}: a manifest line must be a JSON object, got {type(record)}")
    folder = Path(base)
    example: dict[str, Any] = dict(record)
    for key in CODE_KEYS:
        if key in record:
            example[key] = _codes(record[key], folder, key, name)
    if "known_mask" in record:
        example["known_mask"] = torch.tensor(record["known_mask"], dtype=torch.bool)
    raw: dict[str, Any] = {}
    if "image" in record:
        if image_tokenizer is None:
            raise DataError(f"{name}: has an 'image' file but the data has no image_tokenizer")
        path = _resolve(str(record["image"]), folder)
        if not path.is_file():
            raise DataError(f"{name}: image file {path} does not exist")
        raw["image"] = load_image(path, image_tokenizer.image_size)
        if image_tokenizer.channels == 1:
            raw["image"] = raw["image"].mean(dim=0, keepdim=True)
    if "audio" in record and features_key is not None:
        if speech_front_end is None:
            raise DataError(
                f"{name}: the template hears speech as features but the data has no "
                "speech_front_end"
            )
        example[features_key] = _front_end_frames(record["audio"], folder, speech_front_end, name)
        if not speech_codes:
            example.pop("audio")
    if "audio" in record and speech_codes:
        if speech_tokenizer is None:
            raise DataError(f"{name}: has an 'audio' file but the data has no speech_tokenizer")
        from omni_blocks.tokenizers.audio import load_audio

        path = _resolve(str(record["audio"]), folder)
        if not path.is_file():
            raise DataError(f"{name}: audio file {path} does not exist")
        rate = int(speech_tokenizer.sample_rate)
        raw["audio"], raw["sample_rate"] = load_audio(path, rate), rate
    if raw:
        tokenized = tokenize_example(
            raw, image_tokenizer=image_tokenizer, speech_tokenizer=speech_tokenizer
        )
        example.pop("image", None)
        example.pop("audio", None)
        example.update(tokenized)
    return example


def _front_end_frames(value: Any, folder: Path, front_end: SpeechFrontEnd, name: str) -> Tensor:
    from omni_blocks.tokenizers.audio import load_audio

    path = _resolve(str(value), folder)
    if not path.is_file():
        raise DataError(f"{name}: audio file {path} does not exist")
    rate = int(front_end.sample_rate)
    return front_end(load_audio(path, rate), rate)


def read_manifest(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a manifest, parsed (blank lines skipped; media not loaded).

    Raises:
        FileNotFoundError: no file at `path`.
        DataError: a line that is not a JSON object (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    records = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                records.append(_parse(line, f"{path}:{number}"))
    return records


def _parse(line: bytes, name: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise DataError(f"{name}: a manifest line must be a JSON object, got {type(record)}")
    return record


class ManifestDataset(Dataset[TaskSequence]):
    """One task's examples, read from JSONL manifests and built by the task's template.

    The constructor records where each line starts (not its content); `__getitem__` reads
    the line, loads and tokenizes its media and builds the training sequence, so memory
    does not grow with the dataset. Errors name the file and line.

    Args:
        manifests: JSONL files; their lines are concatenated in order.
        template: builds the sequences.
        root: folder relative media paths are resolved against (default: each manifest's
            own folder).
        image_tokenizer: tokenizes `image` files (not needed for pre-tokenized codes).
        speech_tokenizer: tokenizes `audio` files.
        speech_front_end: turns `audio` files into feature frames, for a template that hears
            speech as features (`speech_input: SpeechFeatures`).

    Raises:
        FileNotFoundError: a manifest is missing.
        DataError: a manifest has no examples.
    """

    def __init__(
        self,
        manifests: Sequence[str | os.PathLike[str]],
        template: TaskTemplate,
        *,
        root: str | os.PathLike[str] | None = None,
        image_tokenizer: ImageTokenizer | None = None,
        speech_tokenizer: SpeechTokenizer | None = None,
        speech_front_end: SpeechFrontEnd | None = None,
    ) -> None:
        if isinstance(manifests, (str, os.PathLike)):
            manifests = [manifests]
        self.files = [Path(m) for m in manifests]
        self.template = template
        self.root = None if root is None else Path(root)
        self.image_tokenizer = image_tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.speech_front_end = speech_front_end
        self._lines: list[tuple[int, int, int]] = []  # (file, byte offset, line number)
        for index, path in enumerate(self.files):
            if not path.is_file():
                raise FileNotFoundError(f"{template.name}: no manifest at {path}")
            offset = 0
            with path.open("rb") as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        self._lines.append((index, offset, number))
                    offset += len(line)
        if not self._lines:
            names = ", ".join(str(p) for p in self.files)
            raise DataError(f"{template.name}: the manifests {names} hold no examples")

    def __len__(self) -> int:
        return len(self._lines)

    def location(self, index: int) -> str:
        """`file:line` of item `index`, as error messages quote it."""
        file, _, number = self._lines[index]
        return f"{self.files[file]}:{number}"

    def record(self, index: int) -> dict[str, Any]:
        """The parsed manifest line of item `index` (media not loaded)."""
        file, offset, _ = self._lines[index]
        with self.files[file].open("rb") as f:
            f.seek(offset)
            line = f.readline()
        return _parse(line, self.location(index))

    def example(self, index: int) -> dict[str, Any]:
        """Item `index` as a template example (media loaded and tokenized)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        index %= len(self)
        file = self.files[self._lines[index][0]]
        base = self.root if self.root is not None else file.parent
        record = self.record(index)
        name = f"{self.location(index)} (id={record.get('id')!r})"
        template = self.template
        features_key = template.speech_input.features_key
        if "messages" in record:  # upstream's chat format
            return self._chat_example(record, base, features_key, name)
        hears = Modality.SPEECH in template.input_modalities
        says = template.target_modality is Modality.SPEECH
        return load_example(
            record,
            base=base,
            image_tokenizer=self.image_tokenizer,
            speech_tokenizer=self.speech_tokenizer,
            name=name,
            speech_front_end=self.speech_front_end,
            features_key=features_key if hears else None,
            speech_codes=says or (hears and features_key is None),
        )

    def _chat_example(
        self, record: dict[str, Any], base: Path, features_key: str | None, name: str
    ) -> dict[str, Any]:
        """An upstream chat sample with its `audios` / `images` files encoded by role."""
        from omni_blocks.data.messages import encode_media

        def media(key: str, out: str) -> Callable[[Path], Tensor]:
            """One media file through `load_example`, as a manifest line's would be."""

            def encode(path: Path) -> Tensor:
                loaded = load_example(
                    {key: str(path)},
                    image_tokenizer=self.image_tokenizer,
                    speech_tokenizer=self.speech_tokenizer,
                    name=f"{key} {path.name}",  # the record's name is added around it
                    speech_front_end=self.speech_front_end,
                    features_key=out if out == features_key else None,
                    speech_codes=out == "speech_codes",
                )
                value: Tensor = loaded[out]
                return value

            return encode

        heard = media("audio", features_key) if features_key else media("audio", "speech_codes")
        image = media("image", "image_codes")
        try:
            return encode_media(
                record, root=base, heard=heard, said=media("audio", "speech_codes"),
                image_in=image, image_out=image,
            )  # fmt: skip
        except DataError as err:
            raise DataError(f"{name}: {err}") from err

    def __getitem__(self, index: int) -> TaskSequence:
        example = self.example(index)
        try:
            return self.template.build(example, index=index)
        except DataError as err:
            raise DataError(f"{self.location(index)}: {err}") from err


@dataclass
class ManifestTask:
    """One task of a training stage: its manifests, its template and its share.

    Args:
        manifests: JSONL files of the task's examples.
        template: the task's template, given without its first two arguments (`layout`
            and `tokenizer`, which the data module passes). In a config: `class_path` of a
            template plus the `init_args` you change, e.g. `instruction`.
        ratio: the share of the task in each epoch, as upstream Omni-Diffusion's `ratio`:
            an epoch draws `ratio x (number of examples)` items from the task (0.5: a random
            half, 2: every example twice).
        name: the task's name in the mixture (default: the template's name); two tasks
            with the same template need different names.
        root: folder relative media paths are resolved against (upstream `prefix_path`;
            default: each manifest's folder).
    """

    manifests: list[str]
    template: Callable[[VocabLayout, TextTokenizer], TaskTemplate]
    ratio: float = 1.0
    name: str | None = None
    root: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.manifests, str):
            self.manifests = [self.manifests]
        if not self.manifests:
            raise ValueError("ManifestTask needs at least one manifest file")
        if not self.ratio > 0 or self.ratio == float("inf"):
            raise ValueError(f"ratio must be positive and finite, got {self.ratio}")


class ManifestDataModule(OmniDataModule):
    """An [`OmniDataModule`][omni_blocks.data.mixture.OmniDataModule] over JSONL manifests.

    Each [`ManifestTask`][omni_blocks.data.manifest.ManifestTask] becomes a
    [`ManifestDataset`][omni_blocks.data.manifest.ManifestDataset] with its template; the
    training tasks are mixed by their ratios into a
    [`TaskMixture`][omni_blocks.data.mixture.TaskMixture] (seeded, resumable mid-epoch).
    Validation tasks are concatenated, in order.

    Image templates take their `image_tokens` from the image tokenizer
    (`tokens_per_item`), so the resolution is set in one place; a template whose
    `image_tokens` was set to another value explicitly is an error.

    Args:
        layout: the unified vocabulary (must be the model's).
        text_tokenizer: the text tokenizer of the templates.
        train: the training tasks.
        val: validation tasks (their `ratio` is ignored), or None.
        test: test tasks for `omni-blocks test` / `predict` (their `ratio` is ignored), or
            None (then the validation tasks, else every training example once).
        image_tokenizer: an [`ImageTokenizer`][omni_blocks.tokenizers.ImageTokenizer] for
            manifests with `image` files (MAGVIT-v2 in the paper:
            [`PretrainedMagvitV2`][omni_blocks.tokenizers.PretrainedMagvitV2] in a config).
        speech_tokenizer: a [`SpeechTokenizer`][omni_blocks.tokenizers.SpeechTokenizer] for
            manifests with `audio` files (GLM-4-Voice's in the paper). The annotation lists
            concrete classes because a config chooses the tokenizer by `class_path`, which
            needs a class type; any of their subclasses, or a `torch.nn.Module` implementing
            the protocol, works too.
        speech_front_end: turns `audio` files into feature frames for templates that hear
            speech as features (`SenseVoiceFrontEnd` for Omni-Diffusion's SenseVoice path).
        batch_size: sequences per batch and device.
        val_batch_size: for validation; defaults to `batch_size`.
        num_workers: data-loader worker processes (they read and tokenize media).
        seed: seed of the mixture's order and the tail pads.
        extra_tail_pad: pads appended to each target (Omni-Diffusion: 1 to 16).
        pad_to_multiple_of: round row lengths up to a multiple of this.
        max_length: longest sequence (the backbone's context used in training); longer
            sequences raise [`DataError`][omni_blocks.data.sequence.DataError].
        drop_last: drop a last incomplete training batch.
        pad_targets: whether the padding that aligns rows is a target (see
            [`collate_sequences`][omni_blocks.data.collate.collate_sequences]; Omni-Diffusion:
            False, neither attended nor a target).
        tail_pads_if_no_eos: give `extra_tail_pad` only to sequences without an eos yet
            (Omni-Diffusion's rule).
        prompt_dropout: training rows of `prompt_dropout_tasks` lose their prompt with this
            probability ([`PromptDropout`][omni_blocks.data.dropout.PromptDropout], for
            classifier-free guidance; upstream: 0).
        prompt_dropout_tasks: the training tasks (by name) whose prompts may be dropped.

    Raises:
        TypeError: a tokenizer that does not implement its protocol.
        ValueError: two tasks with the same name, an `image_tokens` that contradicts the
            image tokenizer, or a `prompt_dropout_tasks` name that is not a training task.
    """

    def __init__(
        self,
        layout: VocabLayout,
        text_tokenizer: TextTokenizer,
        train: list[ManifestTask],
        val: list[ManifestTask] | None = None,
        test: list[ManifestTask] | None = None,
        *,
        image_tokenizer: nn.Module | None = None,
        speech_tokenizer: GLM4VoiceTokenizer | MelVQSpeechTokenizer | nn.Module | None = None,
        speech_front_end: SpeechFrontEnd | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        extra_tail_pad: int | tuple[int, int] = (1, 16),
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        drop_last: bool = False,
        pad_targets: bool = True,
        tail_pads_if_no_eos: bool = False,
        prompt_dropout: float = 0.0,
        prompt_dropout_tasks: Sequence[str] = (),
    ) -> None:
        if image_tokenizer is not None and not isinstance(image_tokenizer, ImageTokenizer):
            raise TypeError(
                f"image_tokenizer must implement ImageTokenizer (image_size, channels, "
                f"tokens_per_item, encode, decode); got {type(image_tokenizer).__name__}"
            )
        if speech_tokenizer is not None and not isinstance(speech_tokenizer, SpeechTokenizer):
            raise TypeError(
                f"speech_tokenizer must implement SpeechTokenizer (sample_rate, frame_rate, "
                f"encode, decode); got {type(speech_tokenizer).__name__}"
            )
        if not train:
            raise ValueError("ManifestDataModule needs at least one training task")
        self.text_tokenizer = text_tokenizer
        self.image_tokenizer = image_tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.speech_front_end = speech_front_end
        self.tasks = list(train)
        self.val_tasks = list(val or [])
        datasets = self._datasets(self.tasks, layout, max_length)
        unknown = sorted(set(prompt_dropout_tasks) - set(datasets))
        if unknown:
            raise ValueError(
                f"prompt_dropout_tasks names {unknown}, not training tasks {sorted(datasets)}"
            )
        dropout = None
        if prompt_dropout > 0 and prompt_dropout_tasks:
            guided = {t: datasets[t].template for t in prompt_dropout_tasks}
            dropout = PromptDropout.from_templates(guided, prompt_dropout)
        sizes = {name: len(d) for name, d in datasets.items()}
        weights = {t: task.ratio * sizes[t] for t, task in zip(datasets, self.tasks, strict=True)}
        mixture = TaskMixture(
            datasets, weights, num_samples=max(1, round(sum(weights.values()))), seed=seed
        )
        val_data: Any = None
        if self.val_tasks:
            parts = list(self._datasets(self.val_tasks, layout, max_length).values())
            val_data = torch.utils.data.ConcatDataset(parts)
        self.test_tasks = list(test or [])
        test_data: Any = None
        if self.test_tasks:
            parts = list(self._datasets(self.test_tasks, layout, max_length).values())
            test_data = torch.utils.data.ConcatDataset(parts)
        super().__init__(
            layout,
            mixture,
            val_data,
            test=test_data,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            seed=seed,
            extra_tail_pad=extra_tail_pad,
            pad_to_multiple_of=pad_to_multiple_of,
            max_length=max_length,
            drop_last=drop_last,
            pad_targets=pad_targets,
            tail_pads_if_no_eos=tail_pads_if_no_eos,
            prompt_dropout=dropout,
        )

    @property
    def templates(self) -> dict[str, TaskTemplate]:
        """The training tasks' templates by task name (for generation and evaluation)."""
        pairs = zip(self.train.names, self.train.datasets, strict=True)
        return {name: dataset.template for name, dataset in pairs}

    @property
    def processor(self) -> TaskProcessor:
        """The templates and tokenizers, to save with the model
        (`module.save_pretrained(folder, processor=data.processor)`)."""
        from omni_blocks.data.processor import TaskProcessor

        return TaskProcessor(
            self.templates,
            image_tokenizer=self.image_tokenizer,  # type: ignore[arg-type]
            speech_tokenizer=self.speech_tokenizer,  # type: ignore[arg-type]
        )

    def _template(
        self, task: ManifestTask, layout: VocabLayout, max_length: int | None
    ) -> TaskTemplate:
        template = task.template(layout, self.text_tokenizer)
        if not isinstance(template, TaskTemplate):
            raise TypeError(f"a task's template must build a TaskTemplate, got {type(template)}")
        changes: dict[str, Any] = {}
        if max_length is not None and template.max_length is None:
            changes["max_length"] = max_length
        tokens = getattr(template, "image_tokens", None)
        if tokens is not None and self.image_tokenizer is not None:
            wanted = int(self.image_tokenizer.tokens_per_item)
            default = next(f.default for f in fields(template) if f.name == "image_tokens")
            if tokens not in (wanted, default):
                raise ValueError(
                    f"the {template.name} template sets image_tokens={tokens} but the image "
                    f"tokenizer makes {wanted} codes per image; drop image_tokens from the "
                    "template (it follows the tokenizer) or change the tokenizer's image_size"
                )
            if tokens != wanted:
                changes["image_tokens"] = wanted
        return replace(template, **changes) if changes else template

    def _datasets(
        self, tasks: Sequence[ManifestTask], layout: VocabLayout, max_length: int | None
    ) -> dict[str, ManifestDataset]:
        out: dict[str, ManifestDataset] = {}
        for task in tasks:
            template = self._template(task, layout, max_length)
            name = task.name or template.name
            if name in out:
                raise ValueError(
                    f"two tasks are named {name!r}; give one of them a distinct `name`"
                )
            out[name] = ManifestDataset(
                task.manifests,
                template,
                root=task.root,
                image_tokenizer=self.image_tokenizer,
                speech_tokenizer=self.speech_tokenizer,
                speech_front_end=self.speech_front_end,
            )
        return out
