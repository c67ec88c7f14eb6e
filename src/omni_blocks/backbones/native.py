"""A native bidirectional transformer with the Qwen2 / Dream parameter layout.

The network is Qwen2's (Dream-7B is Qwen2.5-7B trained further as a masked-diffusion model):
pre-norm blocks of grouped-query self-attention with rotary position embeddings and biased
q/k/v projections, followed by a SwiGLU MLP, RMSNorm everywhere, and a linear output head.
The only change from Qwen2 is the attention pattern: every position attends to every
non-padding position (`is_causal=False`, as in Dream's `DreamSdpaAttention`). With
`causal=True` the same network attends only to earlier positions (Qwen2's own pattern): the
autoregressive baseline of the miniature recipe is this backbone, trained with next-token
prediction.

Parameter names and shapes are those of a Qwen2 / Dream checkpoint, so Dream-7B's
safetensors load without renaming:

| parameter | shape |
|---|---|
| `model.embed_tokens.weight` | `(vocab_size, hidden_size)` |
| `model.layers.N.self_attn.q_proj.weight` | `(heads * head_dim, hidden_size)` |
| `model.layers.N.self_attn.q_proj.bias` | `(heads * head_dim,)` |
| `model.layers.N.self_attn.{k,v}_proj.weight` | `(kv_heads * head_dim, hidden_size)` |
| `model.layers.N.self_attn.{k,v}_proj.bias` | `(kv_heads * head_dim,)` |
| `model.layers.N.self_attn.o_proj.weight` | `(hidden_size, heads * head_dim)` |
| `model.layers.N.mlp.{gate,up}_proj.weight` | `(intermediate_size, hidden_size)` |
| `model.layers.N.mlp.down_proj.weight` | `(hidden_size, intermediate_size)` |
| `model.layers.N.{input,post_attention}_layernorm.weight` | `(hidden_size,)` |
| `model.norm.weight` | `(hidden_size,)` |
| `lm_head.weight` | `(vocab_size, hidden_size)` (absent when tied) |
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from omni_blocks.backbones.base import EmbeddingSlots, KeyValueCache, grow_rows
from omni_blocks.backbones.config import (
    TransformerConfig,
    default_shift_logits,
    read_config_json,
)
from omni_blocks.checkpointing import load_state_dict, resolve_checkpoint, save_state_dict
from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = [
    "Attention",
    "DecoderLayer",
    "NativeTransformer",
    "PretrainedTransformer",
    "RMSNorm",
    "SwiGLU",
    "causal_key_mask",
    "position_ids_from_mask",
    "position_ids_from_segments",
    "rotary_cos_sin",
    "segment_key_mask",
    "shift_right",
]

Hidden = Float[Tensor, "batch seq hidden"]


def position_ids_from_mask(attention_mask: SeqMask) -> Int[Tensor, "batch seq"]:
    """Positions counted over non-padding tokens only (Dream's `tok_idx`).

    Dream's sampler computes `attention_mask.cumsum(-1) - 1`, so a left-padded prompt starts
    at position 0 like an unpadded one; right padding leaves the real tokens' positions
    unchanged. Padding positions get the last real position (their outputs are ignored).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def causal_key_mask(keys: SeqMask) -> Bool[Tensor, "batch 1 seq seq"]:
    """Attention mask of causal attention with padding: query `i` sees real keys `j <= i`.

    `keys` is True at real (non-padding) tokens. Every query also sees itself, so a padding
    query before the first real token (left padding) keeps a finite output (it is ignored).
    """
    seq = keys.shape[-1]
    earlier = torch.ones(seq, seq, dtype=torch.bool, device=keys.device).tril()
    itself = torch.eye(seq, dtype=torch.bool, device=keys.device)
    return rearrange(keys, "b s -> b 1 1 s") & earlier | itself


def position_ids_from_segments(segment_ids: Int[Tensor, "batch seq"]) -> Int[Tensor, "batch seq"]:
    """Positions that restart at 0 with every example of a packed row.

    `segment_ids` numbers the examples packed into a row (1, 2, ...; 0 at padding); a
    position's id is its index within its own example, so a packed example sees the same
    rotary positions as it would alone in a row.
    """
    seq = segment_ids.shape[-1]
    index = torch.arange(seq, device=segment_ids.device).expand_as(segment_ids)
    first = torch.ones_like(segment_ids, dtype=torch.bool)
    first[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    start = torch.where(first, index, 0).cummax(-1).values
    return index - start


def segment_key_mask(segment_ids: Int[Tensor, "batch seq"]) -> Bool[Tensor, "batch 1 seq seq"]:
    """Block-diagonal attention of packed rows: query `i` sees key `j` of its own example.

    Padding (segment 0) is never a key; a padding query sees itself only, which keeps its
    (ignored) output finite.
    """
    same = rearrange(segment_ids, "b s -> b 1 s 1") == rearrange(segment_ids, "b s -> b 1 1 s")
    real = rearrange(segment_ids > 0, "b s -> b 1 1 s")
    itself = torch.eye(segment_ids.shape[-1], dtype=torch.bool, device=segment_ids.device)
    return same & real | itself


def rotary_cos_sin(
    position_ids: Int[Tensor, "batch seq"], head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Float[Tensor, "batch seq head_dim"], Float[Tensor, "batch seq head_dim"]]:
    """Cosines and sines of the rotary embedding (Su et al., RoFormer), computed in float32.

    Frequencies `theta^(-2k/d)` for `k < d/2`, repeated for both halves of the head
    (`rotate_half` convention of Qwen2 / Llama), then cast to `dtype`.
    """
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponent / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def shift_right(logits: Logits) -> Logits:
    """Dream's realignment: the prediction for position `i` read from position `i - 1`.

    Mirrors `logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)` in Dream's (and
    Omni-Diffusion's) `generation_utils.py`; position 0 keeps its own logits.
    """
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich, 2019), as in Qwen2.

    `y = w * x / sqrt(mean(x^2) + eps)`, normalised in float32 and cast back before the
    weight is applied (the same order of operations as Qwen2 / Dream, so bf16 results match).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Hidden) -> Hidden:
        """Normalise the last dimension."""
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class SwiGLU(nn.Module):
    """The Qwen2 MLP: `down(silu(gate(x)) * up(x))` (Shazeer, 2020), without biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: Hidden) -> Hidden:
        """Apply the MLP position-wise."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Full (bidirectional) grouped-query self-attention with rotary embeddings.

    Mirrors Dream's `DreamSdpaAttention`: biased q/k/v projections, unbiased output
    projection, key/value heads repeated to the query heads, then
    `F.scaled_dot_product_attention(..., is_causal=False)`. Padding keys are excluded
    through a boolean mask; unlike Dream, padding *queries* still attend to the real tokens,
    which keeps their (ignored) outputs finite instead of NaN. `is_causal=True` (without a
    mask) gives causal attention; with padding, the caller folds causality into the mask
    (see [`causal_key_mask`][omni_blocks.backbones.native.causal_key_mask]).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)

    def forward(
        self,
        x: Hidden,
        cos: Float[Tensor, "batch seq head_dim"],
        sin: Float[Tensor, "batch seq head_dim"],
        key_mask: Tensor | None = None,
        is_causal: bool = False,
        kv: _LayerKV | None = None,
    ) -> Hidden:
        """Attend every position to every allowed key.

        `key_mask` broadcasts to `(batch, heads, queries, keys)` (True = may attend):
        `(batch, 1, 1, seq)` for padding only, `(batch, 1, seq, seq)` for causal attention
        with padding or packed rows. With `kv` (the sampler's key/value cache) the keys and
        values this call computes are recorded, or, when `x` is a window of the sequence,
        written into the cache at the window's place and the queries attend to the whole
        cached sequence.
        """
        q = rearrange(self.q_proj(x), "b s (h d) -> b h s d", d=self.head_dim)
        k = rearrange(self.k_proj(x), "b s (h d) -> b h s d", d=self.head_dim)
        v = rearrange(self.v_proj(x), "b s (h d) -> b h s d", d=self.head_dim)
        cos_h, sin_h = cos[:, None], sin[:, None]
        q = q * cos_h + _rotate_half(q) * sin_h
        k = k * cos_h + _rotate_half(k) * sin_h
        if kv is not None:
            k, v = kv.exchange(k, v)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = repeat(k, "b h s d -> b (h g) s d", g=groups)
            v = repeat(v, "b h s d -> b (h g) s d", g=groups)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=key_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.o_proj(rearrange(out, "b h s d -> b s (h d)"))


class DecoderLayer(nn.Module):
    """One pre-norm block: `x + attn(norm(x))`, then `h + mlp(norm(h))`."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = Attention(
            config.hidden_size,
            config.num_attention_heads,
            config.kv_heads,
            config.attention_dropout,
        )
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: Hidden,
        cos: Float[Tensor, "batch seq head_dim"],
        sin: Float[Tensor, "batch seq head_dim"],
        key_mask: Tensor | None = None,
        is_causal: bool = False,
        kv: _LayerKV | None = None,
    ) -> Hidden:
        """Apply the block (`kv`: see `Attention.forward`)."""
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, key_mask, is_causal, kv)
        return h + self.mlp(self.post_attention_layernorm(h))


class _Body(nn.Module):
    """Holds the parameters under `model.` (Qwen2's `Qwen2Model`)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class NativeTransformer(nn.Module):
    """A bidirectional Qwen2 / Dream transformer: token ids to logits over the vocabulary.

    Implements the [`Backbone`][omni_blocks.backbones.Backbone] protocol. Build a fresh model
    from plain numbers (which is what a LightningCLI config does), load a checkpoint with
    [`from_pretrained`][omni_blocks.backbones.NativeTransformer.from_pretrained] (or the
    config-friendly [`PretrainedTransformer`][omni_blocks.backbones.PretrainedTransformer]).

    Args:
        vocab_size: rows of the embedding and output head (at least the layout's
            `vocab_size`).
        hidden_size: residual width.
        intermediate_size: SwiGLU width.
        num_hidden_layers: number of blocks.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention); default: as many as
            query heads.
        rms_norm_eps: RMSNorm epsilon.
        rope_theta: rotary embedding base (Dream-7B: 1e6).
        max_position_embeddings: informative maximum length (written to `config.json`).
        tie_word_embeddings: share the embedding matrix with the output head.
        attention_dropout: dropout on attention probabilities while training.
        initializer_range: std of the normal initialisation of fresh weights.
        shift_logits: Dream's shifted prediction. Dream, initialised from an autoregressive
            LLM, predicts token `i` at position `i - 1`; with `shift_logits=True` the forward
            pass realigns the logits (`cat([logits[:, :1], logits[:, :-1]])`, as in Dream's
            sampler) so that position `i` always predicts token `i`. Off for fresh models
            (no reason to shift), on by default when loading Dream checkpoints.
        gradient_checkpointing: recompute each block in the backward pass instead of storing
            its activations (less memory, about one more forward of compute).
        causal: causal attention (position `i` sees positions `<= i` only) instead of
            Dream's full attention: off for diffusion, on for an autoregressive baseline with
            the same architecture. With `causal=True, shift_logits=True` position `i`
            predicts token `i` from tokens `< i` (next-token prediction, aligned like the
            diffusion logits). Saved as `is_causal` in `config.json` and read back by
            `from_pretrained`.
        model_type: the `model_type` written to `config.json` (`"Dream"` for Dream
            checkpoints).
        extra: further `config.json` keys to keep (written back by `save_pretrained`).

    Example:
        ```python
        import torch
        from omni_blocks.backbones import NativeTransformer

        net = NativeTransformer(vocab_size=64, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2)
        logits = net(torch.randint(0, 64, (2, 5)))      # (2, 5, 64)
        ```
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        intermediate_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        num_key_value_heads: int | None = None,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10_000.0,
        max_position_embeddings: int = 32_768,
        tie_word_embeddings: bool = False,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        shift_logits: bool = False,
        gradient_checkpointing: bool = False,
        causal: bool = False,
        model_type: str = "qwen2",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.causal = causal
        self._config = TransformerConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            rms_norm_eps=rms_norm_eps,
            rope_theta=rope_theta,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=tie_word_embeddings,
            attention_dropout=attention_dropout,
            initializer_range=initializer_range,
            model_type=model_type,
            extra=dict(extra or {}),
        )
        self.shift_logits = shift_logits
        self.gradient_checkpointing = gradient_checkpointing
        self.model = _Body(self._config)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        self.apply(self._init_weights)
        if tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: TransformerConfig, **kwargs: Any) -> NativeTransformer:
        """A fresh model with the shape of `config` (`kwargs`: `shift_logits`, ...)."""
        return cls(**_init_args(config), **kwargs)

    def to_config(self) -> dict[str, Any]:
        """`class_path` / `init_args` of a fresh `NativeTransformer` of this shape.

        Subclasses (such as `PretrainedTransformer`) are recorded as a `NativeTransformer`, so
        that rebuilding one never downloads the original checkpoint again; the weights travel
        separately (`save_pretrained`).
        """
        init_args = {k: v for k, v in _init_args(self._config).items() if k != "extra"}
        init_args.update(
            shift_logits=bool(self.shift_logits),
            gradient_checkpointing=bool(self.gradient_checkpointing),
            causal=bool(self.causal),
        )
        return {"class_path": "omni_blocks.backbones.NativeTransformer", "init_args": init_args}

    @classmethod
    def from_saved(
        cls, folder: Path, init_args: Mapping[str, Any], *, device: str | torch.device = "cpu"
    ) -> NativeTransformer:
        """Read back what `save_pretrained` wrote, with the recorded `shift_logits` and
        `gradient_checkpointing` (the loading hook of `omni_blocks.checkpointing`)."""
        return cls.from_pretrained(
            folder,
            device=device,
            shift_logits=init_args.get("shift_logits"),
            gradient_checkpointing=bool(init_args.get("gradient_checkpointing", False)),
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | os.PathLike[str],
        *,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        shift_logits: bool | None = None,
        gradient_checkpointing: bool = False,
        allow_pickle: bool = False,
        strict: bool = False,
    ) -> NativeTransformer:
        """Load a Qwen2 / Dream checkpoint (local folder or hub repository id).

        The model is built on the `meta` device and the checkpoint's tensors are assigned
        to it, so a 7B model needs its weights' memory once, not twice.

        Args:
            pretrained: a folder with `config.json` and safetensors weights, or a hub id such
                as `"Dream-org/Dream-v0-Base-7B"`.
            revision: hub branch, tag or commit.
            dtype: cast every weight to this dtype (`torch.bfloat16` or `"bfloat16"`);
                `None` keeps the stored dtype.
            device: where the weights are created.
            shift_logits: Dream's shifted prediction; `None` reads it from `config.json`
                (on for Dream checkpoints, see `default_shift_logits`).
            gradient_checkpointing: see the class.
            allow_pickle: accept `pytorch_model.bin` weights (read with
                `torch.load(weights_only=True)`); refused by default.
            strict: raise on tensors of the checkpoint the backbone does not use (for
                example the SenseVoice encoder `model.audio_model.*` of Omni-Diffusion
                checkpoints) instead of warning.

        Raises:
            FileNotFoundError: no checkpoint at `pretrained`.
            ValueError: the checkpoint lacks a parameter, has one of the wrong shape, or
                (with `strict`) has unused tensors.
        """
        folder = resolve_checkpoint(pretrained, revision=revision, allow_pickle=allow_pickle)
        raw = read_config_json(folder / "config.json")
        config = TransformerConfig.from_dict(raw)
        shift = default_shift_logits(raw) if shift_logits is None else shift_logits
        with torch.device("meta"):
            model = cls.from_config(
                config,
                shift_logits=shift,
                gradient_checkpointing=gradient_checkpointing,
                causal=bool(raw.get("is_causal", False)),
            )
        state = load_state_dict(folder, allow_pickle=allow_pickle, device=device)
        model.load_checkpoint_state(state, strict=strict)
        if dtype is not None:
            model.to(_as_dtype(dtype))
        return model

    def load_checkpoint_state(self, state: dict[str, Tensor], *, strict: bool = False) -> None:
        """Assign a Qwen2 / Dream state dict to this model's parameters.

        Works on a model built on the `meta` device (the tensors are assigned, not copied).
        With tied embeddings, `lm_head.weight` is taken from `model.embed_tokens.weight`.

        Raises:
            ValueError: missing parameters, shape mismatches, or (with `strict`) unused
                tensors; the message lists the names.
        """
        expected = {name: p for name, p in self.named_parameters(remove_duplicate=False)}
        tied = self._config.tie_word_embeddings
        needed = {n for n in expected if not (tied and n == "lm_head.weight")}
        missing = sorted(needed - state.keys())
        if missing:
            raise ValueError(
                f"the checkpoint lacks {len(missing)} parameters of the backbone, e.g. "
                f"{missing[:5]}; is it a Qwen2 / Dream checkpoint with this config?"
            )
        wrong = [
            f"{n}: checkpoint {tuple(state[n].shape)} vs model {tuple(expected[n].shape)}"
            for n in sorted(needed)
            if tuple(state[n].shape) != tuple(expected[n].shape)
        ]
        if wrong:
            raise ValueError(f"shape mismatch for {len(wrong)} parameters: {wrong[:5]}")
        integers = [
            f"{n}: {state[n].dtype}" for n in sorted(needed) if not state[n].is_floating_point()
        ]
        if integers:
            raise ValueError(
                f"the checkpoint holds {len(integers)} non-float tensors for float parameters, "
                f"e.g. {integers[:3]}; it is not a model checkpoint (or was quantised)"
            )
        unused = sorted(set(state) - needed - {"lm_head.weight"})
        if unused:
            message = (
                f"{len(unused)} tensors of the checkpoint are not part of the backbone and "
                f"were skipped, e.g. {unused[:3]}"
            )
            if strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        self.load_state_dict({n: state[n] for n in needed}, strict=False, assign=True)
        if tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ------------------------------------------------------------------ protocol
    @property
    def config(self) -> TransformerConfig:
        """The architecture (kept in sync by `resize_vocab`)."""
        return self._config

    @property
    def vocab_size(self) -> int:
        """Rows of the output head."""
        return int(self.lm_head.weight.shape[0])

    def forward(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
        segment_ids: Int[Tensor, "batch seq"] | None = None,
    ) -> Logits:
        """Logits for every position; position `i` predicts token `i`.

        Args:
            input_ids: global token ids, `(batch, seq)`.
            attention_mask: True at real tokens, False at padding. Padding tokens are
                excluded as keys and positions are counted over real tokens (so left and
                right padding give the same logits at real positions as no padding). Pass
                `None` when nothing is padded: the attention then needs no mask.
            slots: embeddings that replace the token embeddings at their positions (the
                speech a model hears, through an encoder and a projector); None costs nothing.
            segment_ids: packed rows (see `omni_blocks.data.packing`): the example each
                position belongs to (1, 2, ...; 0 at padding). Attention stays inside each
                example (block-diagonal) and positions restart at 0 with every example, so a
                packed example gets the logits it would get alone in a row. Replaces
                `attention_mask`.

        Raises:
            TypeError: ids that are not an integer tensor.
            ValueError: an id outside `[0, vocab_size)`, ids on the meta device, a
                sequence longer than `max_position_embeddings`, or both `attention_mask`
                and `segment_ids`.
        """
        if not torch.compiler.is_compiling():
            self._check_ids(input_ids)
            if segment_ids is not None:
                _check_segments(segment_ids, input_ids, attention_mask)
        positions, key_mask = self._attention_inputs(input_ids, attention_mask, segment_ids)
        if segment_ids is None or not self.shift_logits:
            return self._run(input_ids, slots, positions, key_mask)
        logits = self._run(input_ids, slots, positions, key_mask, shift=False)
        # Dream's shift inside each example: an example's first position reads its own
        # hidden state (as position 0 does), not the previous example's last one
        return torch.where((positions == 0).unsqueeze(-1), logits, shift_right(logits))

    @torch.no_grad()
    def forward_cached(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
        *,
        cache: KeyValueCache | None = None,
        window: tuple[int, int] | None = None,
    ) -> tuple[Float[Tensor, "batch window vocab"], KeyValueCache]:
        """A forward pass that keeps, or reuses, every layer's keys and values.

        Without `cache`: the same logits as `forward` (the same operations, bit for bit) and
        a new [`KeyValueCache`][omni_blocks.backbones.KeyValueCache] of the whole sequence.
        With `cache` and `window=(start, end)`: only positions `start..end-1` are run through
        the network (their queries, keys and values computed from the current ids); every
        other position is read from the cache, and the window's new keys and values are
        written into it (Fast-dLLM's `replace_position`). With `shift_logits` the position
        before the window is run too, since it predicts the window's first token. Returns
        the logits of the window's positions.

        Raises:
            ValueError: a window outside the sequence, or a cache of another length.
        """
        self._check_ids(input_ids)
        positions, key_mask = self._attention_inputs(input_ids, attention_mask, None)
        if cache is None:
            cache = KeyValueCache([], [])
            kvs = [_LayerKV(cache, i, None) for i in range(len(self.model.layers))]
            return self._run(input_ids, slots, positions, key_mask, kvs), cache
        seq = input_ids.shape[1]
        if window is None or not 0 <= window[0] < window[1] <= seq:
            raise ValueError(f"window must be (start, end) with 0 <= start < end <= {seq}")
        if cache.seq_len != seq or len(cache.keys) != len(self.model.layers):
            raise ValueError(
                f"the cache covers {cache.seq_len} positions of {len(cache.keys)} layers; "
                f"this sequence has {seq} positions and the model {len(self.model.layers)} layers"
            )
        start, end = window
        first = max(start - 1, 0) if self.shift_logits else start
        if key_mask is None and self.causal:
            key_mask = causal_key_mask(torch.ones_like(input_ids, dtype=torch.bool))
        if key_mask is not None and key_mask.shape[-2] > 1:
            key_mask = key_mask[:, :, first:end]
        kvs = [_LayerKV(cache, i, first) for i in range(len(self.model.layers))]
        logits = self._run(
            input_ids, slots, positions, key_mask, kvs, window=(first, end), shift=False
        )
        if self.shift_logits:
            # position i reads the hidden state of i - 1 (position 0 its own)
            logits = shift_right(logits) if first == start else logits[:, :-1]
        return logits, cache

    def _attention_inputs(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None,
        segment_ids: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        """Position ids and the key mask (None: every position sees every position)."""
        batch, seq = input_ids.shape
        if segment_ids is not None:
            key_mask = segment_key_mask(segment_ids)
            if self.causal:
                key_mask = key_mask & causal_key_mask(segment_ids > 0)
            return position_ids_from_segments(segment_ids), key_mask
        if attention_mask is None:
            return torch.arange(seq, device=input_ids.device).expand(batch, seq), None
        positions = position_ids_from_mask(attention_mask)
        # A row without any real token attends to everything (its outputs are ignored).
        keys = attention_mask | ~attention_mask.any(dim=-1, keepdim=True)
        key_mask = causal_key_mask(keys) if self.causal else rearrange(keys, "b s -> b 1 1 s")
        return positions, key_mask

    def _run(
        self,
        input_ids: TokenIds,
        slots: EmbeddingSlots | None,
        positions: Tensor,
        key_mask: Tensor | None,
        kvs: list[_LayerKV] | None = None,
        window: tuple[int, int] | None = None,
        shift: bool = True,
    ) -> Tensor:
        # SDPA takes either a mask or is_causal; with padding causality is in the mask.
        is_causal = self.causal and key_mask is None
        if window is None:
            h = self.model.embed_tokens(input_ids)
            if slots is not None:
                h = slots.fill(h)
        else:
            first, end = window
            positions = positions[:, first:end]
            if slots is None:
                h = self.model.embed_tokens(input_ids[:, first:end])
            else:  # the slots are laid out over the whole sequence
                h = slots.fill(self.model.embed_tokens(input_ids))[:, first:end]
        cos, sin = rotary_cos_sin(
            positions, self._config.head_dim, self._config.rope_theta, h.dtype
        )
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.model.layers):
            kv = None if kvs is None else kvs[i]
            if use_checkpoint:
                h = checkpoint(layer, h, cos, sin, key_mask, is_causal, kv, use_reentrant=False)
            else:
                h = layer(h, cos, sin, key_mask, is_causal, kv)
        logits = self.lm_head(self.model.norm(h))
        return shift_right(logits) if self.shift_logits and shift else logits

    def _check_ids(self, input_ids: Tensor) -> None:
        if input_ids.dtype.is_floating_point or input_ids.dtype in (torch.bool, torch.complex64):
            raise TypeError(
                f"input_ids must be an integer tensor of token ids; got dtype {input_ids.dtype}"
            )
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq); got shape {tuple(input_ids.shape)}")
        if input_ids.device.type == "meta":
            raise ValueError("input_ids are on the meta device (no values): move them to a device")
        limit = self._config.max_position_embeddings
        if input_ids.shape[1] > limit:
            raise ValueError(
                f"a sequence of {input_ids.shape[1]} tokens is longer than this backbone's "
                f"max_position_embeddings={limit}; shorten the prompt or the target"
            )
        if input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, {self.vocab_size}); got ids in [{low}, {high}] "
                    "(call resize_vocab to grow the vocabulary)"
                )

    @torch.no_grad()
    def resize_vocab(self, new_size: int) -> None:
        """Resize the embedding and output head to `new_size` rows.

        Existing rows stay bit-identical; new rows are the mean of the existing rows (see
        [`grow_rows`][omni_blocks.backbones.base.grow_rows]). Tied embeddings stay tied.
        """
        embed = self.model.embed_tokens
        new_embed = nn.Embedding(
            new_size, embed.embedding_dim, device=embed.weight.device, dtype=embed.weight.dtype
        )
        new_embed.weight.copy_(grow_rows(embed.weight, new_size))
        new_embed.weight.requires_grad_(embed.weight.requires_grad)
        self.model.embed_tokens = new_embed
        head = self.lm_head
        new_head = nn.Linear(
            head.in_features,
            new_size,
            bias=False,
            device=head.weight.device,
            dtype=head.weight.dtype,
        )
        if self._config.tie_word_embeddings:
            new_head.weight = new_embed.weight
        else:
            new_head.weight.copy_(grow_rows(head.weight, new_size))
            new_head.weight.requires_grad_(head.weight.requires_grad)
        self.lm_head = new_head
        self._config = _replace(self._config, vocab_size=new_size)

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self, folder: str | os.PathLike[str], *, max_shard_size: int | str = "5GB"
    ) -> Path:
        """Write `config.json` and safetensors weights in the Qwen2 / Dream layout.

        The folder loads back with `from_pretrained` (and, the names being Qwen2's, with
        `transformers`' Qwen2 classes, see [`HFBackbone`][omni_blocks.backbones.HFBackbone]).
        `config.json` records `shift_logits` and `is_causal`. Tied output weights are
        not written twice. Returns the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.state_dict().items()}
        if self._config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_state_dict(state, folder, max_shard_size=max_shard_size)
        dtype = str(self.model.embed_tokens.weight.dtype).removeprefix("torch.")
        self._config.to_json(
            folder / "config.json",
            shift_logits=self.shift_logits,
            is_causal=self.causal,
            torch_dtype=dtype,
        )
        return folder

    def _init_weights(self, module: nn.Module) -> None:
        std = self._config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)


class PretrainedTransformer(NativeTransformer):
    """A [`NativeTransformer`][omni_blocks.backbones.NativeTransformer] loaded from a checkpoint.

    The same model as `NativeTransformer.from_pretrained`, as a class whose constructor takes
    plain values, so a LightningCLI config can name it:

    ```yaml
    backbone:
      class_path: omni_blocks.backbones.PretrainedTransformer
      init_args:
        pretrained: Dream-org/Dream-v0-Base-7B
        dtype: bfloat16
        vocab_size: 176264        # VocabLayout.omni_diffusion().vocab_size
    ```

    Args:
        pretrained: checkpoint folder or hub repository id.
        revision: hub branch, tag or commit.
        dtype: weight dtype (`"bfloat16"`, `"float32"`, ...); `None` keeps the stored one.
        shift_logits: `None` reads it from the checkpoint (on for Dream).
        vocab_size: if given, `resize_vocab(vocab_size)` after loading (new rows = mean).
        gradient_checkpointing: recompute blocks in the backward pass.
        allow_pickle: accept pickled `pytorch_model.bin` weights.
        strict: raise instead of warning on checkpoint tensors the backbone does not use.
    """

    def __init__(
        self,
        pretrained: str,
        revision: str | None = None,
        dtype: str | None = None,
        shift_logits: bool | None = None,
        vocab_size: int | None = None,
        gradient_checkpointing: bool = False,
        allow_pickle: bool = False,
        strict: bool = False,
    ) -> None:
        folder = resolve_checkpoint(pretrained, revision=revision, allow_pickle=allow_pickle)
        raw = read_config_json(folder / "config.json")
        config = TransformerConfig.from_dict(raw)
        shift = default_shift_logits(raw) if shift_logits is None else shift_logits
        with torch.device("meta"):
            super().__init__(
                **_init_args(config),
                shift_logits=shift,
                gradient_checkpointing=gradient_checkpointing,
                causal=bool(raw.get("is_causal", False)),
            )
        self.pretrained = str(pretrained)
        self.load_checkpoint_state(
            load_state_dict(folder, allow_pickle=allow_pickle), strict=strict
        )
        if dtype is not None:
            self.to(_as_dtype(dtype))
        if vocab_size is not None and vocab_size != self.vocab_size:
            self.resize_vocab(vocab_size)


class _LayerKV:
    """One layer's view of a `KeyValueCache`: records the keys and values of a full pass
    (`start=None`), or writes a window's into the cache and hands back the whole sequence's."""

    def __init__(self, cache: KeyValueCache, layer: int, start: int | None) -> None:
        self.cache, self.layer, self.start = cache, layer, start

    def exchange(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.start is None:
            self.cache.keys.append(k)
            self.cache.values.append(v)
            return k, v
        keys, values = self.cache.keys[self.layer], self.cache.values[self.layer]
        stop = self.start + k.shape[-2]
        keys[:, :, self.start : stop] = k
        values[:, :, self.start : stop] = v
        return keys, values


def _check_segments(segment_ids: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> None:
    if attention_mask is not None:
        raise ValueError("pass either attention_mask or segment_ids (packed rows), not both")
    if segment_ids.shape != input_ids.shape:
        raise ValueError(
            f"segment_ids must have the shape of input_ids {tuple(input_ids.shape)}; got "
            f"{tuple(segment_ids.shape)}"
        )
    if segment_ids.dtype.is_floating_point or segment_ids.dtype == torch.bool:
        raise TypeError(f"segment_ids must be an integer tensor; got {segment_ids.dtype}")
    if segment_ids.numel() and int(segment_ids.min()) < 0:
        raise ValueError("segment_ids must be >= 0 (0 marks padding)")


def _init_args(config: TransformerConfig) -> dict[str, Any]:
    """The constructor arguments of a model shaped like `config`."""
    return {**config.architecture(), "model_type": config.model_type, "extra": dict(config.extra)}


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use for example 'bfloat16' or 'float32'")
    return value


def _replace(config: TransformerConfig, **changes: Any) -> TransformerConfig:
    from dataclasses import replace

    return replace(config, **changes)
