"""Task templates: one Omni-Diffusion task's example -> a unified token sequence, and back.

Every template lays out a sequence the same way (ChatML turns, as Omni-Diffusion feeds
Dream; `|` marks where the target region starts):

```text
[bos] <|im_start|>user\\n {inputs} <|im_end|>\\n <|im_start|>assistant\\n [begin_x] | target [end]
```

- `inputs` are the task's input segments in order: images as
  `[begin_image] codes [end_image]`, speech as `[begin_speech] codes [end_speech]`, text
  as its BPE ids (the instruction and/or the example's text);
- `[begin_x]` opens an image or speech response (`[begin_image]`, `[begin_speech]`); text
  responses have none. It sits in the prompt: the sampler generates only the codes;
- the target is the response content followed by its end token: `eos` for text,
  `[end_image]` / `[end_speech]` otherwise. Collation appends tail pads
  (`layout.pad_id`), which are targets too.

[`build`][omni_blocks.data.templates.TaskTemplate.build] returns the training sequence
(target filled in); [`prompt`][omni_blocks.data.templates.TaskTemplate.prompt] returns the
generation sequence (target positions hold `layout.mask_id`; inpainting keeps its known
image codes there); [`parse`][omni_blocks.data.templates.TaskTemplate.parse] turns a
generated target region back into text or local codes.

Examples are plain dicts: strings under `text` / `caption` / `question` / `answer`, local
codes under `image_codes` / `speech_codes` (integer tensors; see
[`tokenize_example`][omni_blocks.data.tokenize.tokenize_example] for raw images and audio),
and optionally an `id` that error messages quote.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.data.sequence import (
    DataError,
    TaskSequence,
    _check_layout_has,
    describe_example,
    local_codes,
    segment,
)
from omni_blocks.data.speech_input import SpeechCodes, SpeechInput, SpeechPiece
from omni_blocks.tokenizers.text import TextTokenizer
from omni_blocks.vocab import Modality, VocabError, VocabLayout

__all__ = [
    "TASK_NAMES",
    "AsrTemplate",
    "CaptionTemplate",
    "ChatFormat",
    "InpaintingTemplate",
    "SpeechToImageTemplate",
    "SpokenVqaTemplate",
    "TaskTemplate",
    "TextToImageTemplate",
    "TtsTemplate",
    "VqaTemplate",
    "build_all",
]


TASK_NAMES = ("asr", "tts", "caption", "vqa", "t2i", "s2i", "spoken_vqa", "inpainting")
"""The `name` of every built-in template (the task column of batches)."""


@dataclass(frozen=True)
class ChatFormat:
    """The text around the user turn and before the response (ChatML by default).

    Omni-Diffusion formats every example as a ChatML conversation for Dream:
    `<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n...`. A tokenizer without
    these special tokens still encodes the strings (as several byte-level tokens); set the
    fields to `""` for a bare layout.

    Args:
        user_start: text before the user turn's content.
        user_end: text after it.
        assistant_start: text that opens the response.
        bos: start the sequence with `layout.bos_id` (Dream's `<|beginoftext|>`). Upstream
            Omni-Diffusion adds none; a fixed first token gives the bidirectional model an
            anchor at position 0 and costs one position.
    """

    user_start: str = "<|im_start|>user\n"
    user_end: str = "<|im_end|>\n"
    assistant_start: str = "<|im_start|>assistant\n"
    bos: bool = True


@dataclass(frozen=True)
class _Prompt:
    """A prompt's ids; with speech heard as features, its slot positions and their frames."""

    ids: Tensor
    slot: Tensor | None = None
    features: tuple[Tensor, ...] = ()


def _join(parts: Sequence[Tensor | SpeechPiece]) -> _Prompt:
    """Ids (and, where speech is heard as features, slot positions and frames) of pieces
    laid end to end."""
    pieces = [p if isinstance(p, SpeechPiece) else SpeechPiece(p) for p in parts]
    ids = torch.cat([p.ids for p in pieces]).long() if pieces else torch.zeros(0, dtype=torch.long)
    features = tuple(p.features for p in pieces if p.features is not None)
    if not features:
        return _Prompt(ids)
    slot = torch.cat(
        [p.slot if p.slot is not None else torch.zeros(len(p.ids), dtype=torch.bool)
         for p in pieces]
    )  # fmt: skip
    return _Prompt(ids, slot, features)


@dataclass
class TaskTemplate(ABC):
    """Turns one task's examples into [`TaskSequence`][omni_blocks.data.sequence.TaskSequence]s.

    Subclasses set `name`, `target_modality` and `input_modalities`, and implement
    `_inputs` (the user turn) and `_target` (the response content).

    Args:
        layout: the unified vocabulary; every local code becomes a global id through it.
        tokenizer: the text tokenizer; its ids must fit in `layout.text_size`.
        instruction: the task's instruction text ("" for none).
        max_length: longest sequence allowed (the backbone's maximum); longer examples raise
            [`DataError`][omni_blocks.data.sequence.DataError]. None: no limit.
        chat: the chat formatting around the turns.
        speech_input: how speech in the prompt is written (ASR, speech-to-image, spoken
            VQA): [`SpeechCodes`][omni_blocks.data.speech_input.SpeechCodes] (the
            `speech_codes` key) or
            [`SpeechFeatures`][omni_blocks.data.speech_input.SpeechFeatures] (a slot of
            encoder outputs for the `speech_features` frames, as Omni-Diffusion hears).

    Raises:
        VocabError: the layout lacks a codebook the task needs, or the tokenizer has more ids
            than `layout.text_size`.
    """

    layout: VocabLayout
    tokenizer: TextTokenizer
    instruction: str = ""
    max_length: int | None = None
    chat: ChatFormat = field(default_factory=ChatFormat)
    speech_input: SpeechInput = field(default_factory=SpeechCodes)

    name: ClassVar[str]
    target_modality: ClassVar[Modality]
    input_modalities: ClassVar[tuple[Modality, ...]]
    reference_key: ClassVar[str | None] = None
    """The example key of a text task's reference output (None for image / speech tasks)."""
    text_metric: ClassVar[str] = "accuracy"
    """How a text output is scored against the reference: `"accuracy"` or `"wer"`."""

    def __post_init__(self) -> None:
        for modality in {*self.input_modalities, self.target_modality}:
            _check_layout_has(self.layout, modality, self.name)
        if self.tokenizer.codebook_size > self.layout.text_size:
            raise VocabError(
                f"the text tokenizer has {self.tokenizer.codebook_size} ids but the layout's "
                f"text range holds {self.layout.text_size}; build the layout with "
                f"text_size={self.tokenizer.codebook_size}"
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be positive or None, got {self.max_length}")
        self._text_cache: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ public API
    def build(self, example: Mapping[str, Any], *, index: int | None = None) -> TaskSequence:
        """The training sequence of `example`: prompt, then the full target region.

        Args:
            example: a dict with the task's keys (see the class docstring).
            index: the example's position in its dataset, quoted in error messages.

        Raises:
            DataError: a missing or bad field, or a sequence longer than `max_length`; the
                message names the example.
        """
        name = self._check_example(example, index)
        prompt = self._prompt(example, name)
        target = torch.cat([self._target(example, name), self._end()])
        return self._assemble(prompt, target, name)

    def prompt(
        self,
        example: Mapping[str, Any],
        target_length: int | None = None,
        *,
        index: int | None = None,
    ) -> TaskSequence:
        """The generation sequence: the prompt, then `target_length` positions of `mask_id`.

        Target fields of `example` (the answer, the image to generate, ...) are not read.

        Args:
            example: a dict with the task's input keys.
            target_length: positions of the target region (room for the response, its end
                token and tail pads). Image targets default to `image_tokens + 1` and only
                their codes are `mask_id`: an image's length is known, so its end token
                (and tail pads in any further room) are given. Text and speech targets need
                a length.
            index: the example's position in its dataset, quoted in error messages.

        Raises:
            DataError: a bad input field, a missing or non-positive `target_length`, or a
                sequence longer than `max_length`.
        """
        name = self._check_example(example, index)
        length = self._target_length(target_length, name)
        prompt = self._prompt(example, name)
        target = self._masked_target(example, length, name)
        return self._assemble(prompt, target, name)

    def parse(
        self, target_ids: Int[Tensor, " target"], *, lenient: bool = False
    ) -> str | Int[Tensor, " codes"]:
        """A generated target region -> text (a string) or local codes (a 1-D tensor).

        The region is cut at its first end token (`eos`, `pad` or the modality's end token);
        text is decoded with the tokenizer, image / speech ids become local codes. Image
        outputs are not padded or truncated: check their length against `image_tokens`.

        Args:
            target_ids: the generated target region.
            lenient: keep only the ids of the target modality and drop the others, as
                Omni-Diffusion's `tools/inference.py` sorts its outputs by id range. A
                sampler that does not restrict its output to the modality (the
                upstream-exact presets) can write, say, a text id into an image.

        Raises:
            VocabError: (strict) an id before the end token is not of the target modality
                (for example a `mask_id` left unfilled).
        """
        stop = torch.tensor(sorted(self._stop_ids()), device=target_ids.device)
        hits = torch.isin(target_ids, stop).nonzero()
        content = target_ids[: int(hits[0, 0])] if hits.numel() else target_ids
        if lenient:
            keep = self.layout.is_modality(content, self.target_modality)
            content = content[keep]
        if self.target_modality is Modality.TEXT:
            if bool(torch.isin(content, torch.tensor([self.layout.mask_id])).any()):
                raise VocabError("the target region still holds mask_id; it was not filled")
            local = self.layout.to_local(content, Modality.TEXT)
            text = self.tokenizer.decode(local)
            assert isinstance(text, str)
            return text
        return self.layout.to_local(content, self.target_modality)

    def unconditional_prompt(self) -> Int[Tensor, " prompt"]:
        """The prompt with an empty user turn (no instruction, no input): what
        [`PromptDropout`][omni_blocks.data.dropout.PromptDropout] trains on and what
        classifier-free guidance's unconditional pass reads
        ([`PromptSwapGuidance`][omni_blocks.sampling.PromptSwapGuidance] with
        `align_response=True`). Omni-Diffusion's speech-to-image unconditional prompt is
        likewise its chat format around an empty user turn."""
        return self._turns([]).ids

    def __call__(self, example: Mapping[str, Any], *, index: int | None = None) -> TaskSequence:
        """Same as [`build`][omni_blocks.data.templates.TaskTemplate.build]."""
        return self.build(example, index=index)

    # ------------------------------------------------------------------ task hooks
    @abstractmethod
    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        """Global ids of the user turn's content, in order (speech as a piece)."""

    @abstractmethod
    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        """Global ids of the response content (without its end token)."""

    def _masked_target(self, example: Mapping[str, Any], length: int, name: str) -> Tensor:
        return torch.full((length,), self.layout.mask_id, dtype=torch.long)

    def _default_target_length(self) -> int | None:
        return None

    # ------------------------------------------------------------------ shared helpers
    def _end(self) -> Tensor:
        return torch.tensor([self.layout.end_id(self.target_modality)])

    def _stop_ids(self) -> set[int]:
        layout = self.layout
        return {layout.eos_id, layout.pad_id, layout.end_id(self.target_modality)}

    def _prompt(self, example: Mapping[str, Any], name: str) -> _Prompt:
        """The prompt's ids, and the slots and features of speech heard as features."""
        return self._turns(self._inputs(example, name))

    def _turns(self, inputs: Sequence[Tensor | SpeechPiece]) -> _Prompt:
        """The chat format around the user turn's content, then the response's opening."""
        parts: list[Tensor | SpeechPiece] = []
        if self.chat.bos:
            parts.append(torch.tensor([self.layout.bos_id]))
        parts.append(self._fixed_text(self.chat.user_start))
        parts.extend(inputs)
        parts.append(self._fixed_text(self.chat.user_end))
        parts.append(self._fixed_text(self.chat.assistant_start))
        if self.target_modality is not Modality.TEXT:
            parts.append(torch.tensor([self.layout.begin_id(self.target_modality)]))
        return _join(parts)

    def _assemble(self, prompt: _Prompt, target: Tensor, name: str) -> TaskSequence:
        total = len(prompt.ids) + len(target)
        if self.max_length is not None and total > self.max_length:
            raise DataError(
                f"{name}: the {self.name} sequence has {total} tokens ({len(prompt.ids)} prompt "
                f"+ {len(target)} target), more than max_length={self.max_length}"
            )
        ids = torch.cat([prompt.ids, target]).long()
        target_mask = torch.cat(
            [
                torch.zeros(len(prompt.ids), dtype=torch.bool),
                torch.ones(len(target), dtype=torch.bool),
            ]
        )
        slots = None
        if prompt.slot is not None:
            slots = torch.cat([prompt.slot, torch.zeros(len(target), dtype=torch.bool)])
        return TaskSequence(
            ids, target_mask, self.name, self.target_modality, slots=slots,
            features=prompt.features,
        )  # fmt: skip

    def _speech(self, example: Mapping[str, Any], name: str) -> SpeechPiece:
        """The example's speech input, as codes or features (`speech_input`)."""
        return self.speech_input.piece(example, self.layout, name)

    def _target_length(self, target_length: int | None, name: str) -> int:
        if target_length is None:
            target_length = self._default_target_length()
            if target_length is None:
                raise DataError(
                    f"{name}: {type(self).__name__}.prompt needs target_length (the number of "
                    f"{self.target_modality.value} positions to generate, end token included)"
                )
        if int(target_length) < 1:
            raise DataError(f"{name}: target_length must be positive, got {target_length}")
        return int(target_length)

    def _check_example(self, example: Any, index: int | None) -> str:
        name = describe_example(example, index)
        if not isinstance(example, Mapping):
            raise DataError(f"{name}: examples are dicts, got {type(example).__name__}")
        return name

    def _fixed_text(self, text: str) -> Tensor:
        """Ids of a fixed string (chat markers, instructions), cached."""
        if text not in self._text_cache:
            self._text_cache[text] = (
                self._encode(text) if text else torch.zeros(0, dtype=torch.long)
            )
        return self._text_cache[text]

    def _encode(self, text: str) -> Tensor:
        ids = self.tokenizer.encode(text)
        assert isinstance(ids, Tensor)
        return ids.long()

    def _text(self, example: Mapping[str, Any], key: str, name: str) -> Tensor:
        """Ids of the example's string under `key`, checked: present, non-empty, no specials."""
        if key not in example:
            raise DataError(
                f"{name}: the {self.name} task needs a {key!r} string; keys: "
                f"{sorted(map(str, example))}"
            )
        value = example[key]
        if not isinstance(value, str):
            raise DataError(f"{name}: {key!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{name}: {key!r} is empty")
        ids = self._encode(value)
        special = self.layout.is_special(ids)
        if bool(special.any()):
            bad = sorted(set(ids[special].tolist()))
            raise DataError(
                f"{name}: {key!r} encodes to special token id(s) {bad} "
                f"({self.layout.special_tokens}); a literal mask/pad/eos in text would corrupt "
                "training and generation"
            )
        return ids

    def _text_with_instruction(self, example: Mapping[str, Any], key: str, name: str) -> Tensor:
        """`instruction\\n` then the example's text under `key`."""
        ids = self._text(example, key, name)
        if not self.instruction:
            return ids
        return torch.cat([self._fixed_text(self.instruction + "\n"), ids])

    def _codes(
        self,
        example: Mapping[str, Any],
        key: str,
        modality: Modality,
        name: str,
        count: int | None = None,
    ) -> Tensor:
        """Local codes under `key`, checked (see `local_codes`)."""
        return local_codes(example, key, modality, self.layout, name, task=self.name, count=count)

    def _segment(
        self,
        example: Mapping[str, Any],
        key: str,
        modality: Modality,
        name: str,
        count: int | None = None,
    ) -> Tensor:
        return segment(self._codes(example, key, modality, name, count), modality, self.layout)


def _text_parts(*parts: Tensor) -> list[Tensor]:
    return [p for p in parts if p.numel()]


@dataclass
class _ImageTokens:
    """Mixin field: codes per image (MAGVIT-v2 at 256x256: 256; at 512x512: 1,024)."""

    image_tokens: int = 256

    def _check_image_tokens(self) -> None:
        if self.image_tokens < 1:
            raise ValueError(f"image_tokens must be positive, got {self.image_tokens}")


# ---------------------------------------------------------------------- speech -> text
@dataclass
class AsrTemplate(TaskTemplate):
    """ASR: `speech_codes` -> `text` (the transcript)."""

    instruction: str = "Transcribe the speech into text."

    name: ClassVar[str] = "asr"
    target_modality: ClassVar[Modality] = Modality.TEXT
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.SPEECH,)
    reference_key: ClassVar[str | None] = "text"
    text_metric: ClassVar[str] = "wer"

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        return [self._speech(example, name), *_text_parts(self._fixed_text(self.instruction))]

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        return self._text(example, "text", name)


# ---------------------------------------------------------------------- text -> speech
@dataclass
class TtsTemplate(TaskTemplate):
    """TTS: `text` -> `speech_codes`."""

    instruction: str = "Read the text aloud."

    name: ClassVar[str] = "tts"
    target_modality: ClassVar[Modality] = Modality.SPEECH
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.TEXT,)

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        return [self._text_with_instruction(example, "text", name)]

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        codes = self._codes(example, "speech_codes", Modality.SPEECH, name)
        return segment(codes, Modality.SPEECH, self.layout, begin=False, end=False)


# ---------------------------------------------------------------------- image -> text
@dataclass
class CaptionTemplate(_ImageTokens, TaskTemplate):
    """Captioning: `image_codes` -> `caption`."""

    instruction: str = "Describe the image."

    name: ClassVar[str] = "caption"
    target_modality: ClassVar[Modality] = Modality.TEXT
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.IMAGE,)
    reference_key: ClassVar[str | None] = "caption"

    def __post_init__(self) -> None:
        self._check_image_tokens()
        super().__post_init__()

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        image = self._segment(example, "image_codes", Modality.IMAGE, name, self.image_tokens)
        return _text_parts(image, self._fixed_text(self.instruction))

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        return self._text(example, "caption", name)


@dataclass
class VqaTemplate(_ImageTokens, TaskTemplate):
    """VQA: `image_codes` + `question` -> `answer`.

    The instruction (none by default) follows the question, as in LLaVA-style prompts
    ("...\\nAnswer the question using a single word or phrase.").
    """

    name: ClassVar[str] = "vqa"
    target_modality: ClassVar[Modality] = Modality.TEXT
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.IMAGE, Modality.TEXT)
    reference_key: ClassVar[str | None] = "answer"

    def __post_init__(self) -> None:
        self._check_image_tokens()
        super().__post_init__()

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        image = self._segment(example, "image_codes", Modality.IMAGE, name, self.image_tokens)
        question = self._text(example, "question", name)
        suffix = self._fixed_text("\n" + self.instruction) if self.instruction else question[:0]
        return _text_parts(image, question, suffix)

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        return self._text(example, "answer", name)


# ---------------------------------------------------------------------- -> image
@dataclass
class _ImageTarget(_ImageTokens, TaskTemplate):
    """Shared by the image-generating tasks: the target is `image_codes` + `[end_image]`."""

    target_modality: ClassVar[Modality] = Modality.IMAGE

    def __post_init__(self) -> None:
        self._check_image_tokens()
        super().__post_init__()

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        codes = self._codes(example, "image_codes", Modality.IMAGE, name, self.image_tokens)
        return segment(codes, Modality.IMAGE, self.layout, begin=False, end=False)

    def _default_target_length(self) -> int | None:
        return self.image_tokens + 1

    def _masked_target(self, example: Mapping[str, Any], length: int, name: str) -> Tensor:
        # An image has exactly `image_tokens` codes, so only they are generated: the end token
        # (and any room after it, as tail pads) is given. Otherwise the sampler may end the
        # image early, or fill it with pads when the region is longer than the image.
        if length < self.image_tokens + 1:
            raise DataError(
                f"{name}: image targets need target_length >= image_tokens + 1 = "
                f"{self.image_tokens + 1} (the codes and the end token), got {length}"
            )
        target = torch.full((length,), self.layout.pad_id, dtype=torch.long)
        target[: self.image_tokens] = self.layout.mask_id
        target[self.image_tokens] = self.layout.end_id(Modality.IMAGE)
        return target


@dataclass
class TextToImageTemplate(_ImageTarget):
    """Text-to-image: `caption` -> `image_codes`."""

    instruction: str = "Generate an image of:"

    name: ClassVar[str] = "t2i"
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.TEXT,)

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        return [self._text_with_instruction(example, "caption", name)]


@dataclass
class SpeechToImageTemplate(_ImageTarget):
    """Speech-to-image: `speech_codes` (a spoken caption) -> `image_codes`."""

    instruction: str = "Generate an image of what is said."

    name: ClassVar[str] = "s2i"
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.SPEECH,)

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        return [self._speech(example, name), *_text_parts(self._fixed_text(self.instruction))]


@dataclass
class InpaintingTemplate(_ImageTarget):
    """Inpainting: `image_codes` with a known region (`known_mask`) -> the full image.

    Omni-Diffusion inpaints zero-shot with its text-to-image ability: the known codes are
    fixed in the target region and only the rest is unmasked. So `build` gives a
    text-to-image training sequence (the `caption` is optional: without one the prompt is
    the instruction alone), and `prompt` keeps `image_codes[known_mask]` in place; only the
    unknown codes are `mask_id` (the end token is given, as for every image target).

    Example keys: `image_codes`, `known_mask` (bool, one per code; True = known; for
    `prompt`), optional `caption`.
    """

    instruction: str = "Generate an image of:"

    name: ClassVar[str] = "inpainting"
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.TEXT,)

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        if example.get("caption") is None:
            return _text_parts(self._fixed_text(self.instruction))
        return [self._text_with_instruction(example, "caption", name)]

    def _masked_target(self, example: Mapping[str, Any], length: int, name: str) -> Tensor:
        target = super()._masked_target(example, length, name)
        codes = self._codes(example, "image_codes", Modality.IMAGE, name, self.image_tokens)
        known = self._known_mask(example, name)
        ids = self.layout.to_global(codes, Modality.IMAGE)
        target[: self.image_tokens] = torch.where(known, ids, target[: self.image_tokens])
        return target

    def _known_mask(self, example: Mapping[str, Any], name: str) -> Tensor:
        if "known_mask" not in example:
            raise DataError(f"{name}: inpainting prompts need 'known_mask' (True = known code)")
        known = torch.as_tensor(example["known_mask"])
        if known.dtype != torch.bool:
            raise DataError(f"{name}: 'known_mask' must be a bool tensor, got {known.dtype}")
        if known.numel() != self.image_tokens:
            raise DataError(
                f"{name}: 'known_mask' has {known.numel()} entries, expected one per image "
                f"code ({self.image_tokens})"
            )
        return known.reshape(-1)


# ---------------------------------------------------------------------- speech + image -> text
@dataclass
class SpokenVqaTemplate(_ImageTokens, TaskTemplate):
    """Spoken VQA: `image_codes` + `speech_codes` (the spoken question) -> `answer`."""

    instruction: str = "Answer the spoken question about the image."

    name: ClassVar[str] = "spoken_vqa"
    target_modality: ClassVar[Modality] = Modality.TEXT
    input_modalities: ClassVar[tuple[Modality, ...]] = (Modality.IMAGE, Modality.SPEECH)
    reference_key: ClassVar[str | None] = "answer"

    def __post_init__(self) -> None:
        self._check_image_tokens()
        super().__post_init__()

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        image = self._segment(example, "image_codes", Modality.IMAGE, name, self.image_tokens)
        return [
            image,
            self._speech(example, name),
            *_text_parts(self._fixed_text(self.instruction)),
        ]

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        return self._text(example, "answer", name)


def build_all(template: TaskTemplate, examples: Sequence[Mapping[str, Any]]) -> list[TaskSequence]:
    """`template.build` on every example, each error naming its index."""
    return [template.build(example, index=i) for i, example in enumerate(examples)]
