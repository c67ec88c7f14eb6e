"""The unified vocabulary: one id space for text, speech and image tokens.

A [`VocabLayout`][omni_blocks.vocab.VocabLayout] owns every id. Text ids keep the text
tokenizer's values `[0, text_size)`; then come `added_tokens`, named markers added to the
tokenizer (Omni-Diffusion's `<|begin_of_image|>`, ..., `<|audio|>`); then each codebook as one
contiguous range (speech first, then image, as in Omni-Diffusion). Special tokens have named
roles (`mask`, `pad`, `begin_image`, ...) whose ids are text or marker ids (Dream's `<|mask|>`
is text id 151666) or, when not given, are appended after the codebooks.
[`VocabLayout.omni_diffusion()`][omni_blocks.vocab.VocabLayout.omni_diffusion] is the
released model's layout, id for id.

Converting between a tokenizer's local codes and global ids happens only here:

```python
layout = VocabLayout.omni_diffusion()
ids = layout.to_global(codes, Modality.IMAGE)   # codes in [0, 8192) -> global ids
codes = layout.to_local(ids, Modality.IMAGE)    # and back, with range checks
```
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = [
    "MODALITY_CODES",
    "OMNI_DIFFUSION_MARKERS",
    "SPECIAL_CODE",
    "Modality",
    "SpecialToken",
    "VocabError",
    "VocabLayout",
]


class Modality(str, Enum):
    """The kinds of content a unified sequence carries."""

    TEXT = "text"
    SPEECH = "speech"
    IMAGE = "image"


class SpecialToken(str, Enum):
    """Named special tokens every layout provides.

    `MASK` is the absorbing state of the diffusion; `PAD` fills the tail of variable-length
    responses (Omni-Diffusion attenuates its masking, see `omni_blocks.masking`); `EOS` ends a
    response; the begin/end pairs wrap image and speech segments.
    """

    MASK = "mask"
    PAD = "pad"
    EOS = "eos"
    BOS = "bos"
    BEGIN_IMAGE = "begin_image"
    END_IMAGE = "end_image"
    BEGIN_SPEECH = "begin_speech"
    END_SPEECH = "end_speech"


MODALITY_CODES: dict[Modality, int] = {Modality.TEXT: 0, Modality.SPEECH: 1, Modality.IMAGE: 2}
"""Integer code of each modality in the tensor returned by `VocabLayout.modality_of`."""

SPECIAL_CODE = -1
"""Code of special tokens in the tensor returned by `VocabLayout.modality_of`."""

# Tokens that may share one id (Dream uses <|endoftext|> both to end and to pad).
_MAY_SHARE = frozenset({SpecialToken.PAD, SpecialToken.EOS})

_BEGIN = {Modality.IMAGE: SpecialToken.BEGIN_IMAGE, Modality.SPEECH: SpecialToken.BEGIN_SPEECH}
_END = {Modality.IMAGE: SpecialToken.END_IMAGE, Modality.SPEECH: SpecialToken.END_SPEECH}


class VocabError(ValueError):
    """An id or code outside the range the layout allows for it."""


OMNI_DIFFUSION_MARKERS: tuple[str, ...] = (
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|context_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|context_of_video|>",
    "<|begin_of_patch|>",
    "<|end_of_patch|>",
    "<|context_of_patch|>",
    "<|begin_of_quad|>",
    "<|end_of_quad|>",
    "<|begin_of_ref|>",
    "<|end_of_ref|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_audio|>",
    "<|end_of_audio|>",
    "<|context_of_audio|>",
    "<|audio|>",
)
"""The 21 markers Omni-Diffusion adds to Dream's tokenizer, in the order they get their ids
(151667 to 151687): `update_tokenizer` adds the first 17, its SenseVoice / GLM-4-Voice update
the four audio ones (`omni_diffusion/tokenizer.py`, `tokenizer_sensevoice_glm4voice.py`)."""


@dataclass(frozen=True)
class VocabLayout:
    """Offsets of every codebook and special token in the unified vocabulary.

    Args:
        text_size: number of text ids, `[0, text_size)` (the text tokenizer's length).
        speech_size: speech codebook size (GLM-4-Voice: 16,384); 0 for no speech.
        image_size: image codebook size (MAGVIT-v2: 8,192); 0 for no images.
        special_ids: ids of special tokens that reuse text or marker ids (for example
            Dream's `{"mask": 151666, "pad": 151643, "eos": 151643, "bos": 151665}`). Special
            tokens not given here are appended after the codebooks, in `SpecialToken` order.
        added_tokens: marker strings added to the text tokenizer after its own tokens: they
            get the ids `text_size, text_size + 1, ...`, before the codebooks (Omni-Diffusion:
            [`OMNI_DIFFUSION_MARKERS`][omni_blocks.vocab.OMNI_DIFFUSION_MARKERS]).

    Raises:
        VocabError: a size is not an integer or is negative, a special id lies outside the
            text and marker range, two special tokens share an id (only `pad` and `eos` may),
            or a marker string appears twice.
    """

    text_size: int
    speech_size: int = 16_384
    image_size: int = 8_192
    special_ids: Mapping[str, int] = field(default_factory=dict)
    added_tokens: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("text_size", "speech_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise VocabError(f"{name} must be an int; got {value!r}")
        added = tuple(str(token) for token in self.added_tokens)
        if len(set(added)) != len(added):
            raise VocabError(f"added_tokens repeats a marker: {added}")
        object.__setattr__(self, "added_tokens", added)
        if self.text_size < 1 or self.speech_size < 0 or self.image_size < 0:
            raise VocabError(
                f"sizes must be text_size >= 1, speech_size >= 0, image_size >= 0; got "
                f"text_size={self.text_size}, speech_size={self.speech_size}, "
                f"image_size={self.image_size}"
            )
        given: dict[SpecialToken, int] = {}
        for name, idx in dict(self.special_ids).items():
            try:
                token = SpecialToken(name)
            except ValueError:
                valid = ", ".join(t.value for t in SpecialToken)
                raise VocabError(f"unknown special token {name!r}; valid names: {valid}") from None
            bad = isinstance(idx, bool) or not isinstance(idx, int)
            if bad or not 0 <= idx < self.marker_end:
                raise VocabError(
                    f"special token {name!r} has id {idx!r}, but reused special ids must lie in "
                    f"the text range (or the markers after it) [0, {self.marker_end}); leave it "
                    "out to append it instead"
                )
            given[token] = int(idx)
        ids: dict[SpecialToken, int] = {}
        next_id = self.marker_end + self.speech_size + self.image_size
        for token in SpecialToken:
            if token in given:
                ids[token] = given[token]
            else:
                ids[token] = next_id
                next_id += 1
        owners: dict[int, SpecialToken] = {}
        for token, idx in ids.items():
            other = owners.get(idx)
            if other is not None and {token, other} != _MAY_SHARE:
                raise VocabError(
                    f"special tokens {other.value!r} and {token.value!r} share id {idx}; "
                    "only 'pad' and 'eos' may share one"
                )
            owners[idx] = token
        object.__setattr__(self, "special_ids", {t.value: given[t] for t in given})
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_size", next_id)

    # ------------------------------------------------------------------ construction
    @classmethod
    def omni_diffusion(cls) -> VocabLayout:
        """The released Omni-Diffusion layout (lijiang/Omni-Diffusion), id for id.

        Dream-7B's tokenizer (Qwen2 BPE plus `<|beginoftext|>` = 151665 and `<|mask|>` =
        151666: 151,667 text ids); the 21 markers of
        [`OMNI_DIFFUSION_MARKERS`][omni_blocks.vocab.OMNI_DIFFUSION_MARKERS] at 151667..151687
        (`<|begin_of_image|>` 151667, `<|end_of_image|>` 151668, `<|begin_of_audio|>` 151684,
        `<|end_of_audio|>` 151685); the GLM-4-Voice codes `<|audio_0|>`.. at
        151688..168071; the MAGVIT-v2 codes `<|image_0|>`.. at 168072..176263; 176,264 ids in
        all, as `config_dream_resume.json` says. `<|endoftext|>` (151643) ends and pads
        responses. The test-suite checks every number against fixtures made by upstream's own
        tokenizer code.
        """
        markers = {m: 151_667 + i for i, m in enumerate(OMNI_DIFFUSION_MARKERS)}
        return cls(
            text_size=151_667,
            speech_size=16_384,
            image_size=8_192,
            special_ids={
                "mask": 151_666,
                "pad": 151_643,
                "eos": 151_643,
                "bos": 151_665,
                "begin_image": markers["<|begin_of_image|>"],
                "end_image": markers["<|end_of_image|>"],
                "begin_speech": markers["<|begin_of_audio|>"],
                "end_speech": markers["<|end_of_audio|>"],
            },
            added_tokens=OMNI_DIFFUSION_MARKERS,
        )

    # ------------------------------------------------------------------ sizes and ranges
    @property
    def vocab_size(self) -> int:
        """Total number of ids; a backbone's embedding needs at least this many rows."""
        size: int = self._size  # type: ignore[attr-defined]
        return size

    def size(self, modality: Modality) -> int:
        """Codebook size of `modality` (`text_size` for text)."""
        modality = Modality(modality)
        return {
            Modality.TEXT: self.text_size,
            Modality.SPEECH: self.speech_size,
            Modality.IMAGE: self.image_size,
        }[modality]

    @property
    def marker_end(self) -> int:
        """One past the last marker id: `text_size + len(added_tokens)`."""
        return self.text_size + len(self.added_tokens)

    def offset(self, modality: Modality) -> int:
        """Global id of local code 0 of `modality`."""
        modality = Modality(modality)
        return {
            Modality.TEXT: 0,
            Modality.SPEECH: self.marker_end,
            Modality.IMAGE: self.marker_end + self.speech_size,
        }[modality]

    def token_id(self, marker: str) -> int:
        """The id of an added marker (`"<|audio|>"`, ...).

        Raises:
            VocabError: not one of `added_tokens`.
        """
        try:
            return self.text_size + self.added_tokens.index(marker)
        except ValueError:
            raise VocabError(
                f"{marker!r} is not an added marker of this layout; markers: "
                f"{list(self.added_tokens)}"
            ) from None

    def id_range(self, modality: Modality) -> range:
        """The global ids of `modality` as a `range`."""
        start = self.offset(modality)
        return range(start, start + self.size(modality))

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """The modalities present in this layout (codebook size > 0)."""
        return tuple(m for m in Modality if self.size(m) > 0)

    # ------------------------------------------------------------------ special tokens
    def special(self, token: SpecialToken | str) -> int:
        """Global id of a special token."""
        ids: dict[SpecialToken, int] = self._ids  # type: ignore[attr-defined]
        return ids[SpecialToken(token)]

    @property
    def special_tokens(self) -> dict[str, int]:
        """Every special token's name and id."""
        return {t.value: self.special(t) for t in SpecialToken}

    @property
    def mask_id(self) -> int:
        """Id of `[MASK]`, the absorbing state."""
        return self.special(SpecialToken.MASK)

    @property
    def pad_id(self) -> int:
        """Id of the tail pad token."""
        return self.special(SpecialToken.PAD)

    @property
    def eos_id(self) -> int:
        """Id of the end-of-response token."""
        return self.special(SpecialToken.EOS)

    @property
    def bos_id(self) -> int:
        """Id of the begin-of-sequence token."""
        return self.special(SpecialToken.BOS)

    def begin_id(self, modality: Modality) -> int:
        """Id of the token that opens a `modality` segment (image or speech)."""
        return self.special(_BEGIN[self._segment_modality(modality)])

    def end_id(self, modality: Modality) -> int:
        """Id of the token that closes a `modality` segment (image or speech); eos for text."""
        modality = Modality(modality)
        if modality is Modality.TEXT:
            return self.eos_id
        return self.special(_END[self._segment_modality(modality)])

    def _segment_modality(self, modality: Modality) -> Modality:
        modality = Modality(modality)
        if modality not in _BEGIN:
            raise VocabError(f"text has no begin/end segment tokens; got {modality.value!r}")
        return modality

    # ------------------------------------------------------------------ conversion
    def to_global(self, codes: Int[Tensor, "*shape"], modality: Modality) -> Int[Tensor, "*shape"]:
        """Map local codes of `modality` to global ids.

        Raises:
            VocabError: a code lies outside `[0, size(modality))`; the message names it.
        """
        modality = Modality(modality)
        self._check_range(codes, 0, self.size(modality), f"{modality.value} code")
        return codes.long() + self.offset(modality)

    def to_local(self, ids: Int[Tensor, "*shape"], modality: Modality) -> Int[Tensor, "*shape"]:
        """Map global ids of `modality` back to local codes.

        Raises:
            VocabError: an id is not a `modality` id; the message names it and the range.
        """
        modality = Modality(modality)
        start = self.offset(modality)
        self._check_range(ids, start, start + self.size(modality), f"{modality.value} id")
        return ids.long() - start

    def modality_of(self, ids: Int[Tensor, "*shape"]) -> Int[Tensor, "*shape"]:
        """The modality code of each id (`MODALITY_CODES`, or `SPECIAL_CODE` for specials).

        Raises:
            VocabError: an id is negative or `>= vocab_size`.
        """
        self._check_range(ids, 0, self.vocab_size, "id")
        out = torch.full_like(ids, SPECIAL_CODE, dtype=torch.long)
        for modality in self.modalities:
            r = self.id_range(modality)
            out[(ids >= r.start) & (ids < r.stop)] = MODALITY_CODES[modality]
        out[self.is_special(ids)] = SPECIAL_CODE
        return out

    def is_modality(self, ids: Int[Tensor, "*shape"], modality: Modality) -> Bool[Tensor, "*shape"]:
        """Whether each id is a (non-special) token of `modality`."""
        return self.modality_of(ids) == MODALITY_CODES[Modality(modality)]

    def is_special(self, ids: Int[Tensor, "*shape"]) -> Bool[Tensor, "*shape"]:
        """Whether each id is one of the special tokens or an added marker."""
        special = torch.tensor(self.special_id_list(), device=ids.device)
        marker = (ids >= self.text_size) & (ids < self.marker_end)
        return torch.isin(ids, special) | marker

    def logit_mask(
        self,
        modality: Modality | None,
        *,
        allow_end: bool = True,
        allow_mask: bool = False,
        extra_ids: Iterable[int] = (),
        vocab_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> Bool[Tensor, " vocab"]:
        """Ids a sampler may write when it generates `modality` (True = allowed).

        With a modality: its own ids, except special tokens that reuse text ids, plus (with
        `allow_end`) its end token and the pad token, so variable-length responses can stop,
        plus `extra_ids`. With `modality=None`: every id of the layout. `[MASK]` is never
        allowed unless `allow_mask` (upstream samplers do not ban it).

        Args:
            modality: the modality being generated, or None for any.
            allow_end: also allow the end token (`eos` for text) and `pad`.
            allow_mask: also allow `[MASK]` itself.
            extra_ids: further ids to allow.
            vocab_size: length of the mask; defaults to `vocab_size`. Backbones often pad
                their output head (Dream: 152,064 rows); rows beyond the layout stay False.
            device: device of the returned tensor.

        Raises:
            VocabError: the layout has no codebook for `modality`, or `vocab_size` is smaller
                than the layout's.
        """
        n = self.vocab_size if vocab_size is None else vocab_size
        if n < self.vocab_size:
            raise VocabError(f"vocab_size {n} is smaller than the layout's {self.vocab_size}")
        allowed = torch.zeros(n, dtype=torch.bool, device=device)
        if modality is None:
            allowed[: self.vocab_size] = True
        else:
            modality = Modality(modality)
            if self.size(modality) == 0:
                raise VocabError(f"this layout has no {modality.value} codebook")
            r = self.id_range(modality)
            allowed[r.start : r.stop] = True
            allowed[self.special_id_list()] = False
        keep = list(extra_ids)
        if allow_end and modality is not None:
            keep += [self.end_id(modality), self.pad_id]
        if keep:
            allowed[keep] = True
        allowed[self.mask_id] = allow_mask
        return allowed

    def _check_range(self, values: Tensor, low: int, high: int, what: str) -> None:
        if values.dtype.is_floating_point or values.dtype == torch.bool:
            raise VocabError(f"{what}s must be an integer tensor, got dtype {values.dtype}")
        if values.numel() == 0:
            return
        bad = (values < low) | (values >= high)
        if bool(bad.any()):
            first = int(values[bad].flatten()[0])
            count = int(bad.sum())
            raise VocabError(
                f"{what} {first} is out of range [{low}, {high}) ({count} bad value(s)); "
                f"layout: {self.describe()}"
            )

    # ------------------------------------------------------------------ (de)serialisation
    def describe(self) -> str:
        """A one-line summary of every range and special id."""
        ranges = {m: self.id_range(m) for m in self.modalities}
        parts = [f"{m.value} [{r.start}, {r.stop})" for m, r in ranges.items()]
        if self.added_tokens:
            parts.insert(
                1, f"{len(self.added_tokens)} markers [{self.text_size}, {self.marker_end})"
            )
        specials = ", ".join(f"{k}={v}" for k, v in self.special_tokens.items())
        return "; ".join(parts) + f"; specials: {specials}; vocab_size={self.vocab_size}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict from which `from_dict` rebuilds the same layout."""
        data: dict[str, Any] = {
            "text_size": self.text_size,
            "speech_size": self.speech_size,
            "image_size": self.image_size,
            "special_ids": dict(self.special_ids),
        }
        if self.added_tokens:
            data["added_tokens"] = list(self.added_tokens)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocabLayout:
        """Rebuild a layout written by `to_dict`."""
        if not isinstance(data, Mapping):
            raise VocabError(f"a layout is a JSON object; got {type(data).__name__}")
        known = {"text_size", "speech_size", "image_size", "special_ids", "added_tokens"}
        unknown = set(data) - known
        if unknown:
            raise VocabError(f"unknown VocabLayout fields: {sorted(unknown)}")
        return cls(**dict(data))

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialise to JSON; also write it to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> VocabLayout:
        """Read a layout from a JSON string or a path to a JSON file."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def special_id_list(self) -> Sequence[int]:
        """Sorted distinct ids of all special tokens."""
        return sorted(set(self.special_tokens.values()))
