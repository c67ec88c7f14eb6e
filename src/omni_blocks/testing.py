"""Helpers for testing and studying blocks without training a model.

`MixtureDenoiser` is the exact denoiser of a small data set, to study samplers without
training.

If the data is a uniform mixture of `K` known sequences, the best possible denoiser has a
closed form: given the visible (unmasked) tokens, the posterior over the data is uniform on
the sequences that agree with them, and the prediction at a masked position is the share of
those sequences holding each token there. A sampler that unmasks one token per step with
this denoiser reproduces a data sequence exactly, every time; parallel decoding can combine
tokens of different sequences into one that is in no data set. How often that happens is a
clean measure of what a planner trades for fewer steps (see `matches`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from einops import einsum
from jaxtyping import Bool, Int
from torch import Tensor
from torch.nn import functional as F

from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["MixtureDenoiser", "make_released_standin"]


class MixtureDenoiser:
    """The exact denoiser of a uniform mixture of the given sequences.

    Args:
        sequences: the data, one sequence per row (global ids, every position including the
            prompt).
        mask_id: the id of `[MASK]`; positions holding it are hidden.
        vocab_size: the number of logits per position.
        floor: probability given to tokens no agreeing sequence holds (keeps logits finite).
        logit_offset: added to every logit. The softmax ignores it, but Omni-Diffusion's
            [`TailPenalty`][omni_blocks.sampling.penalties.TailPenalty] depends on the sign of
            the logits: with the default 0 all logits are log-probabilities (negative), which
            the penalty sharpens instead of flattening. A trained language model's likely
            tokens have positive logits; an offset of about 10 imitates that.

    Raises:
        ValueError: `sequences` is empty, holds `mask_id`, or ids outside `[0, vocab_size)`.

    Example:
        ```python
        import torch
        from omni_blocks.testing import MixtureDenoiser

        data = torch.tensor([[1, 2, 3], [1, 4, 5]])
        model = MixtureDenoiser(data, mask_id=9, vocab_size=10)
        probs = model(torch.tensor([[1, 9, 9]])).softmax(-1)   # p(2) = p(4) = 0.5 at position 1
        ```
    """

    def __init__(
        self,
        sequences: Int[Tensor, "k seq"],
        *,
        mask_id: int,
        vocab_size: int,
        floor: float = 1e-9,
        logit_offset: float = 0.0,
    ) -> None:
        if sequences.numel() == 0:
            raise ValueError("sequences must hold at least one non-empty sequence")
        if bool((sequences == mask_id).any()):
            raise ValueError(f"sequences must not contain mask_id {mask_id}")
        if bool((sequences < 0).any()) or bool((sequences >= vocab_size).any()):
            raise ValueError(f"sequence ids must lie in [0, {vocab_size})")
        self.sequences = sequences.long()
        self.mask_id = mask_id
        self.vocab_size = vocab_size
        self.floor = floor
        self.logit_offset = logit_offset
        self._one_hot = F.one_hot(self.sequences, vocab_size).float()

    def posterior(self, ids: TokenIds) -> Int[Tensor, "batch k"]:
        """Which data sequences agree with the visible tokens of each row (1 or 0)."""
        if ids.shape[-1] != self.sequences.shape[-1]:
            raise ValueError(
                f"ids have {ids.shape[-1]} positions, the data sequences {self.sequences.shape[-1]}"
            )
        visible = ids != self.mask_id
        clash = visible.unsqueeze(1) & (ids.unsqueeze(1) != self.sequences.unsqueeze(0))
        agree = (~clash.any(-1)).long()
        # a row no sequence agrees with (after an incoherent parallel step): fall back to
        # the prior rather than predicting nothing
        none = agree.sum(-1, keepdim=True) == 0
        return torch.where(none, torch.ones_like(agree), agree)

    def __call__(self, ids: TokenIds, attention_mask: SeqMask | None = None) -> Logits:
        """Log-probabilities of every token at every position given the visible ones."""
        weights = self.posterior(ids).float()
        weights = weights / weights.sum(-1, keepdim=True)
        probs = einsum(weights, self._one_hot, "b k, k s v -> b s v")
        return probs.clamp(min=self.floor).log() + self.logit_offset

    def matches(self, ids: TokenIds) -> Bool[Tensor, " batch"]:
        """Whether each row is exactly one of the data sequences."""
        same = (ids.unsqueeze(1) == self.sequences.unsqueeze(0)).all(-1)
        return same.any(-1)


# ---------------------------------------------------------------------------------- released


def make_released_standin(
    folder: str | os.PathLike[str], *, seed: int = 0, hidden_size: int = 32
) -> Path:
    """Write a tiny random model laid out exactly as `lijiang/Omni-Diffusion` is.

    Same file names, key names, config fields and tokenizer files as the released folder
    (see [`omni_blocks.released`][omni_blocks.released]): a two-layer Dream of width
    `hidden_size` over the full released vocabulary (176,264 ids), a two-block SenseVoice
    encoder (width 16, two heads: pass `sensevoice_heads=2` to `load_released`) with its CTC
    head under `model.audio_model.model.`, a `ResamplerProjector(16, hidden_size)` under
    `model.audio_projection.`, weights in safetensors shards with an index, Dream's
    tokenizer files (`vocab.json`, `merges.txt`, `tokenizer_config.json` with every added
    token at its released id) and a `tokenization_dream.py` that raises if anything ever
    imports it. Weights come from `seed`. Returns the folder.
    """
    from omni_blocks.backbones import NativeTransformer, TransformerConfig
    from omni_blocks.checkpointing import save_state_dict
    from omni_blocks.speech import ResamplerProjector, SenseVoiceEncoder
    from omni_blocks.tokenizers.text import (
        DREAM_SPECIAL_TOKENS,
        QWEN2_SPECIAL_TOKENS,
        _vocab_and_merges,
        qwen2_bpe_ranks,
    )
    from omni_blocks.vocab import Modality, VocabLayout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = VocabLayout.omni_diffusion()
    config = TransformerConfig(
        vocab_size=layout.vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    ).to_dict()  # fmt: skip
    config.update(
        architectures=["DreamModel"], model_type="Dream", mask_token_id=layout.mask_id,
        pad_token_id=151_643, bos_token_id=151_643, eos_token_id=151_643,
        auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                  "AutoModel": "modeling_dream.DreamModel"},
        torch_dtype="float32",
    )  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    torch.manual_seed(seed)
    backbone = NativeTransformer.from_config(TransformerConfig.from_dict(config))
    encoder = SenseVoiceEncoder(
        output_size=16, attention_heads=2, linear_units=32, num_blocks=2, tp_blocks=1
    )
    projector = ResamplerProjector(16, hidden_size)
    state = dict(backbone.state_dict())
    state |= {f"model.audio_model.model.{k}": v for k, v in encoder.state_dict().items()}
    state["model.audio_model.model.ctc.ctc_lo.weight"] = torch.randn(25_055, 16) * 0.02
    state["model.audio_model.model.ctc.ctc_lo.bias"] = torch.zeros(25_055)
    state |= {f"model.audio_projection.{k}": v for k, v in projector.state_dict().items()}
    save_state_dict(state, folder, max_shard_size="10MB")

    vocab, merges = _vocab_and_merges(qwen2_bpe_ranks())
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    added: dict[str, dict[str, Any]] = {}

    def add(token_id: int, content: str, special: bool) -> None:
        flags = dict.fromkeys(("lstrip", "normalized", "rstrip", "single_word"), False)
        added[str(token_id)] = {"content": content, **flags, "special": special}

    for token_id, content, special in (*QWEN2_SPECIAL_TOKENS, *DREAM_SPECIAL_TOKENS):
        add(token_id, content, special)
    for marker in layout.added_tokens:
        add(layout.token_id(marker), marker, True)
    for modality, name in ((Modality.SPEECH, "audio"), (Modality.IMAGE, "image")):
        first = layout.offset(modality)
        for i in range(layout.size(modality)):
            add(first + i, f"<|{name}_{i}|>", False)
    tokenizer_config = {
        "added_tokens_decoder": added,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "mask_token": "<|mask|>", "tokenizer_class": "DreamTokenizer", "model_max_length": 131072,
    }  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config) + "\n")
    special_map = {
        k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token")
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map) + "\n")
    (folder / "tokenization_dream.py").write_text(
        'raise RuntimeError("the released folder\'s code must never be imported")\n'
    )
    (folder / "generation_config.json").write_text(
        json.dumps({"mask_token_id": layout.mask_id, "pad_token_id": 151_643}) + "\n"
    )
    return folder
