"""Omni-Diffusion's own data format: chat messages with `<|audio|>` / `<|image|>` placeholders.

Upstream's samples (its README; `omni_diffusion/data/dataset_qwen2.py`, `preprocess`) are

```json
{"messages": [{"role": "user", "content": "Convert the speech to text.\\n<|audio|>"},
              {"role": "assistant", "content": "hello world"}],
 "audios": ["a.wav"], "images": []}
```

rendered in ChatML turn by turn (`<|im_start|>` role `\\n` content `<|im_end|>` `\\n`, each
piece tokenized on its own) with the placeholders expanded in order:

| placeholder | in a user turn | in an assistant turn |
|---|---|---|
| `<|audio|>` | speech heard: begin-of-audio, a slot (or codes), end-of-audio | GLM-4-Voice codes |
| `<|image|>` | MAGVIT-v2 codes of the 512 px image in their markers | codes of the 256 px image |

The last assistant turn is the target: its content, `<|im_end|>` and `\\n`, as upstream's
labels are (the tail pads the collate function adds are upstream's `<|endoftext|>` ones).
Here the samples' `audios` / `images` entries are already encoded (feature frames or codes,
in the order of the placeholders); [`encode_media`][omni_blocks.data.messages.encode_media]
turns upstream's file paths into them with the model's front end and tokenizers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks.data.sequence import DataError, TaskSequence
from omni_blocks.data.speech_input import SpeechCodes, SpeechFeatures, SpeechInput, SpeechPiece
from omni_blocks.data.templates import TaskTemplate, _join, _Prompt
from omni_blocks.vocab import Modality

__all__ = [
    "AUDIO_PLACEHOLDER",
    "IMAGE_PLACEHOLDER",
    "ChatImageTemplate",
    "ChatSpeechTemplate",
    "ChatTextTemplate",
    "MessagesTemplate",
    "encode_media",
]

AUDIO_PLACEHOLDER = "<|audio|>"
"""Where a sample's next `audios` entry goes."""

IMAGE_PLACEHOLDER = "<|image|>"
"""Where a sample's next `images` entry goes."""

_PLACEHOLDERS = (AUDIO_PLACEHOLDER, IMAGE_PLACEHOLDER)

_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
_ROLES["system"] = "system"

_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in _PLACEHOLDERS))


@dataclass
class MessagesTemplate(TaskTemplate):
    """Upstream's chat samples (`messages`, `audios`, `images`) as sequences, id for id.

    Each concrete class fixes the modality of the response (`ChatTextTemplate`,
    `ChatImageTemplate`, `ChatSpeechTemplate`); `instruction` and `chat` are not used (the
    messages hold the text, rendered in upstream's ChatML).

    Args:
        layout: the vocabulary (its markers must include `<|begin_of_audio|>`-style begin/end
            tokens of every modality the samples use).
        tokenizer: the text tokenizer; it must know `<|im_start|>` and `<|im_end|>` as single
            tokens (Dream's / Qwen2's does).
        speech_input: how speech in a user turn is heard (`SpeechFeatures()`, upstream's
            SenseVoice slot of frames + 4 positions, or `SpeechCodes()`); speech in an
            assistant turn is always codes.
        system: the system prompt put first when a sample has none (upstream's training data
            code: none; Qwen2's chat template: "You are a helpful assistant.").
        image_tokens: the default length of an image response (MAGVIT-v2 at 256 px: 256
            codes, plus begin / end markers, `<|im_end|>` and `\\n`).
        begin_at: for generation, write the response modality's begin marker at this
            fraction of the response before sampling (upstream's `add_boa_token`: spoken
            VQA answers in text, then `<|begin_of_audio|>` at 0.2 and speech); None: none.

    Raises:
        DataError (per sample): an unknown role, an empty conversation, placeholders that do
            not match the `audios` / `images` lists, an entry of the wrong kind, or (for
            training) a last message that is not the assistant's.
    """

    speech_input: SpeechInput = field(default_factory=SpeechFeatures)
    system: str | None = None
    image_tokens: int = 256
    begin_at: float | None = None

    name: ClassVar[str] = "chat"
    input_modalities: ClassVar[tuple[Modality, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.begin_at is not None and not 0.0 <= self.begin_at < 1.0:
            raise ValueError(f"begin_at must lie in [0, 1); got {self.begin_at}")
        # placeholders first: in the released vocabulary they are markers too
        # (<|image|> 151682, <|audio|> 151687), expanded before tokenization
        markers = [m for m in self.layout.added_tokens if m not in _PLACEHOLDERS]
        pieces = [*_PLACEHOLDERS, *markers]
        self._split = re.compile("(" + "|".join(re.escape(p) for p in pieces) + ")")
        self._im_start = self._single("<|im_start|>")
        self._im_end = self._single("<|im_end|>")

    # ------------------------------------------------------------------ public API
    def build(self, example: Mapping[str, Any], *, index: int | None = None) -> TaskSequence:
        name = self._check_example(example, index)
        messages = self._messages(example, name)
        if messages[-1][0] != "assistant":
            raise DataError(f"{name}: the last message must be the assistant's (the target)")
        prompt = self._render(example, messages[:-1], name, generation_prompt=True)
        cursor = _Cursor(prompt.counts)
        response = self._content(example, "assistant", messages[-1][1], cursor, name)
        target = torch.cat([response.ids, self._im_end, self._newline()])
        return self._assemble(prompt.prompt, target, name)

    def prompt(
        self,
        example: Mapping[str, Any],
        target_length: int | None = None,
        *,
        index: int | None = None,
    ) -> TaskSequence:
        """The conversation up to `<|im_start|>assistant\\n`, then `target_length` masks (a
        last assistant message, if any, is the reference and is not read)."""
        name = self._check_example(example, index)
        messages = self._messages(example, name)
        if messages[-1][0] == "assistant":
            messages = messages[:-1]
        if not messages:
            raise DataError(f"{name}: no message before the response")
        length = self._target_length(target_length, name)
        prompt = self._render(example, messages, name, generation_prompt=True)
        target = torch.full((length,), self.layout.mask_id, dtype=torch.long)
        if self.begin_at is not None and self.target_modality is not Modality.TEXT:
            # generation_utils.py: bos_index = int(prompt + masks * 0.2); a known token
            # inside the generated region, kept as given by the sampler
            index = int(len(prompt.prompt.ids) + length * self.begin_at) - len(prompt.prompt.ids)
            target[min(index, length - 1)] = self.layout.begin_id(self.target_modality)
        return self._assemble(prompt.prompt, target, name)

    def unconditional_prompt(self) -> Int[Tensor, " prompt"]:
        """The conversation with an empty user turn, up to `<|im_start|>assistant\n` (after
        `system` where one is set): upstream's speech-to-image unconditional prompt when
        `system` is "Please generate an image based on the input audio.". The response
        writes its own begin marker, so none is added."""
        messages = [("user", "")]
        if self.system:
            messages.insert(0, ("system", self.system))
        empty: dict[str, Any] = {"audios": [], "images": []}
        return self._render(empty, messages, "unconditional", generation_prompt=True).prompt.ids

    def parse(
        self, target_ids: Int[Tensor, " target"], *, lenient: bool = False
    ) -> str | Int[Tensor, " codes"]:
        """A generated response -> text or local codes; the media's begin marker, which the
        model writes itself here, is dropped first."""
        media = self.target_modality is not Modality.TEXT
        if (
            media
            and len(target_ids)
            and int(target_ids[0]) == self.layout.begin_id(self.target_modality)
        ):
            target_ids = target_ids[1:]
        return super().parse(target_ids, lenient=lenient)

    # ------------------------------------------------------------------ rendering
    def _stop_ids(self) -> set[int]:
        return {*super()._stop_ids(), int(self._im_end[0])}

    def _default_target_length(self) -> int | None:
        if self.target_modality is Modality.IMAGE:
            return self.image_tokens + 4  # begin, codes, end, <|im_end|>, \n
        return None

    def _inputs(self, example: Mapping[str, Any], name: str) -> Sequence[Tensor | SpeechPiece]:
        raise NotImplementedError("messages are rendered whole by _render")  # pragma: no cover

    def _target(self, example: Mapping[str, Any], name: str) -> Tensor:
        raise NotImplementedError("messages are rendered whole by build")  # pragma: no cover

    def _single(self, token: str) -> Tensor:
        ids = self._fixed_text(token)
        if len(ids) != 1:
            raise ValueError(
                f"the text tokenizer encodes {token!r} as {len(ids)} ids; the chat format "
                "needs it as one token (use Dream's / Qwen2's tokenizer)"
            )
        return ids

    def _newline(self) -> Tensor:
        return self._fixed_text("\n")

    def _messages(self, example: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
        raw = example.get("messages", example.get("conversations"))
        if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
            raise DataError(f"{name}: needs a non-empty 'messages' list of {{role, content}}")
        messages = []
        for i, message in enumerate(raw):
            if not isinstance(message, Mapping):
                raise DataError(f"{name}: message {i} is not a {{role, content}} dict")
            role, content = message.get("role"), message.get("content")
            if role not in _ROLES or not isinstance(content, str):
                raise DataError(
                    f"{name}: message {i} needs a role in {sorted(_ROLES)} and a string "
                    f"content; got role {role!r}, content {type(content).__name__}"
                )
            messages.append((_ROLES[role], content))
        if messages[0][0] != "system" and self.system:
            messages.insert(0, ("system", self.system))
        self._check_counts(example, messages, name)
        return messages

    def _check_counts(
        self, example: Mapping[str, Any], messages: list[tuple[str, str]], name: str
    ) -> None:
        for key, placeholder in (("audios", AUDIO_PLACEHOLDER), ("images", IMAGE_PLACEHOLDER)):
            entries = example.get(key) or []
            if not isinstance(entries, Sequence) or isinstance(entries, (str, Tensor)):
                raise DataError(f"{name}: {key!r} must be a list")
            count = sum(content.count(placeholder) for _, content in messages)
            if count != len(entries):
                raise DataError(
                    f"{name}: the messages hold {count} {placeholder} placeholder(s) but "
                    f"{key!r} has {len(entries)} entries"
                )

    def _render(
        self,
        example: Mapping[str, Any],
        messages: list[tuple[str, str]],
        name: str,
        *,
        generation_prompt: bool,
    ) -> _Rendered:
        cursor = _Cursor()
        pieces: list[SpeechPiece] = []
        for role, content in messages:
            pieces.append(SpeechPiece(torch.cat([self._im_start, self._fixed_text(role)])))
            pieces.append(SpeechPiece(self._newline()))
            pieces.append(self._content(example, role, content, cursor, name))
            pieces.append(SpeechPiece(torch.cat([self._im_end, self._newline()])))
        if generation_prompt:
            pieces.append(SpeechPiece(torch.cat([self._im_start, self._fixed_text("assistant")])))
            pieces.append(SpeechPiece(self._newline()))
        return _Rendered(_join(pieces), cursor.counts)

    def _content(
        self, example: Mapping[str, Any], role: str, content: str, cursor: _Cursor, name: str
    ) -> SpeechPiece:
        """One turn's content: text pieces tokenized apart (as a Hugging Face tokenizer does
        around its added tokens), markers by id, placeholders expanded."""
        parts: list[SpeechPiece] = []
        for part in self._split.split(content):
            if not part:
                continue
            if part == AUDIO_PLACEHOLDER:
                parts.append(self._audio(example, role, cursor.next("audios"), name))
            elif part == IMAGE_PLACEHOLDER:
                codes = _entry(example, "images", cursor.next("images"), name)
                value = {"image_codes": codes}
                ids = self._segment(value, "image_codes", Modality.IMAGE, name)
                parts.append(SpeechPiece(ids))
            elif part in self.layout.added_tokens:
                parts.append(SpeechPiece(torch.tensor([self.layout.token_id(part)])))
            else:
                parts.append(SpeechPiece(self._encode(part)))
        joined = _join(parts)
        if len(joined.features) > 1:
            raise DataError(
                f"{name}: one turn holds {len(joined.features)} heard audios; one at most"
            )
        features = joined.features[0] if joined.features else None
        return SpeechPiece(joined.ids, joined.slot, features)

    def _audio(self, example: Mapping[str, Any], role: str, index: int, name: str) -> SpeechPiece:
        value = _entry(example, "audios", index, name)
        where = f"{name} audios[{index}]"
        if role == "user":
            key = getattr(self.speech_input, "key", "speech_codes")
            return self.speech_input.piece({key: value}, self.layout, where)
        # what the model says is always codes
        return SpeechCodes().piece({"speech_codes": value}, self.layout, where)


@dataclass
class ChatTextTemplate(MessagesTemplate):
    """Upstream chat samples whose response is text (ASR, captioning, VQA)."""

    name: ClassVar[str] = "chat_text"
    target_modality: ClassVar[Modality] = Modality.TEXT


@dataclass
class ChatImageTemplate(MessagesTemplate):
    """Upstream chat samples whose response is an image (text- and speech-to-image)."""

    name: ClassVar[str] = "chat_image"
    target_modality: ClassVar[Modality] = Modality.IMAGE


@dataclass
class ChatSpeechTemplate(MessagesTemplate):
    """Upstream chat samples whose response is speech (TTS, spoken answers)."""

    name: ClassVar[str] = "chat_speech"
    target_modality: ClassVar[Modality] = Modality.SPEECH


@dataclass(frozen=True)
class _Rendered:
    prompt: _Prompt
    counts: dict[str, int]


class _Cursor:
    """The next unused entry of `audios` / `images`, in placeholder order."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts = dict(counts or {"audios": 0, "images": 0})

    def next(self, key: str) -> int:
        index = self.counts[key]
        self.counts[key] = index + 1
        return index


def _entry(example: Mapping[str, Any], key: str, index: int, name: str) -> Any:
    entries = example.get(key) or []
    if index >= len(entries):
        raise DataError(f"{name}: more {key} placeholders than {key!r} entries")
    value = entries[index]
    if isinstance(value, (str, Path)):
        raise DataError(
            f"{name}: {key}[{index}] is a path ({value!s}); encode the sample's media first "
            "(omni_blocks.data.messages.encode_media)"
        )
    return value


def encode_media(
    sample: Mapping[str, Any],
    *,
    root: str | Path = ".",
    heard: Callable[[Path], Tensor] | None = None,
    said: Callable[[Path], Tensor] | None = None,
    image_in: Callable[[Path], Tensor] | None = None,
    image_out: Callable[[Path], Tensor] | None = None,
) -> dict[str, Any]:
    """A copy of an upstream sample whose `audios` / `images` paths are encoded.

    Which function encodes an entry depends on the turn its placeholder sits in, as upstream
    decides: `heard` for audio in a user turn (front-end frames for a SenseVoice slot, or
    codes), `said` for audio in an assistant turn (GLM-4-Voice codes), `image_in` for an image
    in a user turn (MAGVIT-v2 codes at 512 px) and `image_out` in an assistant turn (256 px).
    Paths are relative to `root`; entries that are not paths are kept.

    Raises:
        DataError: a path whose encoder was not given, or a file that does not exist.
    """
    messages = sample.get("messages") or []
    order: dict[str, list[str]] = {"audios": [], "images": []}
    for message in messages:
        role = _ROLES.get(str(message.get("role")), "user")
        content = str(message.get("content", ""))
        for match in _PLACEHOLDER_RE.finditer(content):
            key = "audios" if match.group() == AUDIO_PLACEHOLDER else "images"
            order[key].append(role)
    coders = {
        ("audios", "user"): heard, ("audios", "assistant"): said,
        ("images", "user"): image_in, ("images", "assistant"): image_out,
    }  # fmt: skip
    out = dict(sample)
    for key in ("audios", "images"):
        encoded = []
        for i, entry in enumerate(sample.get(key) or []):
            if not isinstance(entry, (str, Path)):
                encoded.append(entry)
                continue
            role = order[key][i] if i < len(order[key]) else "user"
            coder = coders[(key, role)]
            if coder is None:
                raise DataError(f"{key}[{i}] ({entry}) sits in a {role} turn; no encoder given")
            path = Path(root) / entry
            if not path.is_file():
                raise DataError(f"{key}[{i}]: no file {path}")
            encoded.append(coder(path))
        out[key] = encoded
    return out
