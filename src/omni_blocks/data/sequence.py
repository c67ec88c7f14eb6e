"""One training or generation sequence, and the pieces it is built from.

A [`TaskSequence`][omni_blocks.data.sequence.TaskSequence] is the unit every task template
produces: global ids (prompt first, then the target region) and a `target_mask` flag
that is True exactly on the target region. The loss covers only target positions; at generation
time the sampler writes only there (the positions that hold `layout.mask_id`).

Local codes become global ids only through [`VocabLayout`][omni_blocks.vocab.VocabLayout]
(see [`segment`][omni_blocks.data.sequence.segment]); a bad example raises
[`DataError`][omni_blocks.data.sequence.DataError], whose message names the example.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from omni_blocks.tokenizers.text import TextTokenizer
from omni_blocks.vocab import MODALITY_CODES, Modality, VocabError, VocabLayout

__all__ = [
    "DataError",
    "TaskSequence",
    "describe_example",
    "local_codes",
    "render_sequence",
    "segment",
]


class DataError(ValueError):
    """A bad example (or sequence). The message names the example: its `id` and/or index."""


def describe_example(example: Any, index: int | None = None) -> str:
    """How error messages name an example: `example id='a7' (index 3)`.

    The `id` comes from the example's `"id"` key when it is a mapping that has one; the index
    is the position in its dataset, when known.
    """
    parts = []
    if isinstance(example, Mapping) and example.get("id") is not None:
        parts.append(f"id={example['id']!r}")
    if index is not None:
        parts.append(f"index {index}")
    if not parts:
        return "example (no id; pass index= or give it an 'id' key)"
    if len(parts) == 2:
        return f"example {parts[0]} ({parts[1]})"
    return f"example {parts[0]}"


@dataclass(frozen=True)
class TaskSequence:
    """Global ids of one example, prompt first, then the target region.

    Attributes:
        ids: global ids in the unified vocabulary, `(seq,)`.
        target_mask: True exactly on the target region `(seq,)`: the positions the loss covers
            and the sampler writes. Templates put the target at the end of the sequence.
        task: the template's name (`"asr"`, `"t2i"`, ...).
        target_modality: the modality of the target region.
        slots: True at the positions whose embeddings come from a speech encoder (the slots
            of speech heard as features; their ids are placeholders); None when there are
            none. Slots lie in the prompt.
        features: the feature frames of each slot, in order, `(frames, features)` each.

    Raises:
        DataError: `ids` and `target_mask` differ in length, are not 1-D, or have the wrong
            dtype; slots inside the target; or features without slots (or the reverse).
    """

    ids: Int[Tensor, " seq"]
    target_mask: Bool[Tensor, " seq"]
    task: str
    target_modality: Modality
    slots: Bool[Tensor, " seq"] | None = None
    features: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        if self.ids.dtype != torch.long:
            raise DataError(f"TaskSequence.ids must be int64, got {self.ids.dtype}")
        if self.ids.shape != self.target_mask.shape:
            raise DataError(
                f"TaskSequence.ids {tuple(self.ids.shape)} and target_mask "
                f"{tuple(self.target_mask.shape)} must have the same shape"
            )
        object.__setattr__(self, "target_modality", Modality(self.target_modality))
        if (self.slots is None) != (len(self.features) == 0):
            raise DataError("a TaskSequence has slots without features, or features without slots")
        if self.slots is not None:
            if self.slots.shape != self.ids.shape or self.slots.dtype != torch.bool:
                raise DataError("TaskSequence.slots must be a bool tensor shaped like ids")
            if bool((self.slots & self.target_mask).any()):
                raise DataError("speech slots lie in the target region; they belong to the prompt")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def target_start(self) -> int:
        """Index of the first target position (`len(self)` when there is no target)."""
        hits = self.target_mask.nonzero()
        return int(hits[0, 0]) if hits.numel() else len(self)

    @property
    def prompt_ids(self) -> Int[Tensor, " prompt"]:
        """The ids before the target region."""
        return self.ids[: self.target_start]

    @property
    def target_ids(self) -> Int[Tensor, " target"]:
        """The ids of the target region (what `TaskTemplate.parse` takes)."""
        return self.ids[self.target_start :]

    def is_target_suffix(self) -> bool:
        """Whether `target_mask` is one non-empty block at the end (what collation needs)."""
        start = self.target_start
        return start < len(self) and bool(self.target_mask[start:].all())


def segment(
    codes: Int[Tensor, " n"],
    modality: Modality,
    layout: VocabLayout,
    *,
    begin: bool = True,
    end: bool = True,
) -> Int[Tensor, " m"]:
    """Local codes of `modality` as global ids, wrapped in its begin / end tokens.

    `[begin_image] codes + offset [end_image]` for images (likewise speech). Text has no
    begin/end tokens: its ids are returned unchanged (they are already global).

    Raises:
        VocabError: a code lies outside the modality's codebook.
    """
    modality = Modality(modality)
    ids = layout.to_global(codes.reshape(-1), modality)
    if modality is Modality.TEXT:
        return ids
    parts = []
    if begin:
        parts.append(torch.tensor([layout.begin_id(modality)]))
    parts.append(ids)
    if end:
        parts.append(torch.tensor([layout.end_id(modality)]))
    return torch.cat(parts)


def render_sequence(
    seq: TaskSequence, layout: VocabLayout, tokenizer: TextTokenizer, *, target_mark: str = " | "
) -> str:
    """A readable rendering of a sequence, for docs and debugging.

    Runs of text ids are decoded together; special tokens appear by their layout name in
    square brackets (`[bos]`, `[begin_image]`, `[mask]`, ...), image and speech codes as
    `<img 5>` / `<sp 12>` (local codes); `target_mark` separates prompt and target.
    """
    names = {idx: f"[{name}]" for name, idx in layout.special_tokens.items()}
    names[layout.eos_id] = "[eos]" if layout.eos_id != layout.pad_id else "[eos/pad]"
    kinds = layout.modality_of(seq.ids).tolist()
    prefix = {MODALITY_CODES[Modality.IMAGE]: "img", MODALITY_CODES[Modality.SPEECH]: "sp"}
    out: list[str] = []
    text_run: list[int] = []

    def flush() -> None:
        if text_run:
            decoded = tokenizer.decode(text_run)
            assert isinstance(decoded, str)
            out.append(decoded)
            text_run.clear()

    start = seq.target_start
    for i, (idx, kind) in enumerate(zip(seq.ids.tolist(), kinds, strict=True)):
        if i == start:
            flush()
            out.append(target_mark)
        if idx in names:
            flush()
            out.append(names[idx])
        elif kind == MODALITY_CODES[Modality.TEXT]:
            text_run.append(idx)
        else:
            flush()
            modality = Modality.IMAGE if kind == MODALITY_CODES[Modality.IMAGE] else Modality.SPEECH
            out.append(f"<{prefix[kind]} {idx - layout.offset(modality)}>")
    flush()
    return "".join(out)


def local_codes(
    example: Mapping[str, Any],
    key: str,
    modality: Modality,
    layout: VocabLayout,
    name: str,
    *,
    task: str,
    count: int | None = None,
) -> Tensor:
    """The local codes of `modality` under `example[key]`, checked: present, integer,
    non-empty, inside the codebook, and `count` of them when given.

    Raises:
        DataError: the message names the example (`name`), the task and the key.
    """
    if key not in example:
        raise DataError(
            f"{name}: the {task} task needs {key!r} ({modality.value} codes); "
            f"keys: {sorted(map(str, example))}"
        )
    value = example[key]
    if not isinstance(value, Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise DataError(
                f"{name}: {key!r} must be an integer tensor of {modality.value} codes, got "
                f"{type(value).__name__}"
            ) from err
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise DataError(
            f"{name}: {key!r} must hold integer {modality.value} codes, got dtype "
            f"{value.dtype} (tokenize raw data first, see tokenize_example)"
        )
    if modality is Modality.SPEECH and value.ndim != 1:
        raise DataError(f"{name}: {key!r} must be 1-D, got shape {tuple(value.shape)}")
    codes = value.reshape(-1).long()
    if codes.numel() == 0:
        raise DataError(f"{name}: {key!r} is empty")
    if count is not None and codes.numel() != count:
        raise DataError(
            f"{name}: {key!r} has {codes.numel()} {modality.value} codes, expected {count} "
            f"(image_tokens of {task}; got shape {tuple(value.shape)}); was "
            "the image tokenized at the right size?"
        )
    size = layout.size(modality)
    bad = (codes < 0) | (codes >= size)
    if bool(bad.any()):
        raise DataError(
            f"{name}: {key!r} holds {int(bad.sum())} code(s) outside the {modality.value} "
            f"codebook [0, {size}), e.g. {int(codes[bad][0])}"
        )
    return codes


def _check_layout_has(layout: VocabLayout, modality: Modality, task: str) -> None:
    if layout.size(modality) == 0:
        raise VocabError(f"task {task!r} needs a {modality.value} codebook; the layout has none")
