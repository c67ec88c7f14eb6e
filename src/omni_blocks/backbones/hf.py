"""A [`Backbone`][omni_blocks.backbones.Backbone] around a `transformers` model.

For users who prefer the Hugging Face implementation (its kernels, quantisation, PEFT
adapters). Qwen2 and Dream checkpoints load into `transformers`' own `Qwen2ForCausalLM`
(Dream-7B's weights have exactly Qwen2's names) with `config.is_causal = False`: in
`transformers` 5 the mask builder then gives full bidirectional attention, which the
test-suite verifies numerically (changing a later token changes an earlier position's
logits) and against [`NativeTransformer`][omni_blocks.backbones.NativeTransformer].
Dream's own remote code is never executed; other architectures load through `AutoModel*`
and execute remote code only with `trust_remote_code=True`.

`transformers` is an optional dependency (`pip install omni-blocks[hf]`); it is imported
when a wrapper is built. Bidirectional attention through `is_causal=False` needs
`transformers` 5 (tested with 5.23); with older versions the wrapper warns, and
`is_bidirectional()` tells whether the model honours it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omni_blocks._optional import require
from omni_blocks.backbones.base import EmbeddingSlots, grow_rows
from omni_blocks.backbones.config import (
    TransformerConfig,
    default_shift_logits,
    is_dream_config,
    read_config_json,
)
from omni_blocks.backbones.native import position_ids_from_mask, shift_right
from omni_blocks.checkpointing import resolve_checkpoint
from omni_blocks.typing import Logits, SeqMask, TokenIds

__all__ = ["HFBackbone", "qwen2_config"]


def qwen2_config(config: TransformerConfig, **overrides: Any) -> Any:
    """A bidirectional `transformers.Qwen2Config` with the fields of `config`.

    `is_causal=False` and `use_cache=False` are set (overridable through `overrides`).
    """
    require("transformers", "a transformers backbone")
    from transformers import Qwen2Config

    values: dict[str, Any] = {
        **config.architecture(),
        "hidden_act": "silu",
        "use_sliding_window": False,
        "is_causal": False,
        "use_cache": False,
    }
    values.update(overrides)
    return Qwen2Config(**values)


def _dtype_kwargs(dtype: torch.dtype | str | None) -> dict[str, Any]:
    if dtype is None:
        return {}
    import transformers

    if isinstance(dtype, str) and dtype != "auto":
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use for example 'bfloat16' or 'float32'")
        dtype = value
    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


class HFBackbone(nn.Module):
    """A `transformers` model as a bidirectional [`Backbone`][omni_blocks.backbones.Backbone].

    Build it from a checkpoint (the constructor takes plain values, so LightningCLI can
    name it), or wrap a model you already have with
    [`from_model`][omni_blocks.backbones.HFBackbone.from_model].

    Args:
        pretrained: checkpoint folder or hub repository id. Qwen2 and Dream checkpoints are
            loaded into `transformers.Qwen2ForCausalLM` with full attention; any other
            `model_type` through `AutoModelForCausalLM` with `is_causal=False` set on its
            config (check the result with `is_bidirectional()`).
        revision: hub branch, tag or commit.
        dtype: weight dtype (`"bfloat16"`, `torch.float32`, `"auto"`); `None`: transformers'
            default.
        shift_logits: Dream's shifted prediction (see
            [`NativeTransformer`][omni_blocks.backbones.NativeTransformer]); `None` reads it
            from `config.json` (on for Dream checkpoints).
        vocab_size: if given, `resize_vocab(vocab_size)` after loading.
        gradient_checkpointing: enable `transformers`' gradient checkpointing.
        allow_pickle: accept pickled `pytorch_model.bin` weights (refused by default).
        trust_remote_code: let `transformers` run code shipped with a checkpoint of an
            unknown architecture (never needed for Qwen2 / Dream; off by default).
    """

    model: Any
    """The wrapped `transformers` model."""
    pretrained: str | None
    """The checkpoint it was loaded from (`None` for `from_model`)."""

    def __init__(
        self,
        pretrained: str,
        revision: str | None = None,
        dtype: str | None = None,
        shift_logits: bool | None = None,
        vocab_size: int | None = None,
        gradient_checkpointing: bool = False,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        require("transformers", "HFBackbone")
        folder = resolve_checkpoint(pretrained, revision=revision, allow_pickle=allow_pickle)
        raw = read_config_json(folder / "config.json")
        load_kwargs: dict[str, Any] = {"use_safetensors": None if allow_pickle else True}
        load_kwargs.update(_dtype_kwargs(dtype))
        model: Any
        if is_dream_config(raw) or str(raw.get("model_type", "")).lower() == "qwen2":
            from transformers import Qwen2ForCausalLM

            config = qwen2_config(TransformerConfig.from_dict(raw))
            model = Qwen2ForCausalLM.from_pretrained(folder, config=config, **load_kwargs)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
            config.is_causal = False
            config.use_cache = False
            model = AutoModelForCausalLM.from_pretrained(
                folder, config=config, trust_remote_code=trust_remote_code, **load_kwargs
            )
        self._setup(model, default_shift_logits(raw) if shift_logits is None else shift_logits)
        self.pretrained = str(pretrained)
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if vocab_size is not None and vocab_size != self.vocab_size:
            self.resize_vocab(vocab_size)

    def _setup(self, model: nn.Module, shift_logits: bool) -> None:
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "get_input_embeddings"):
            raise TypeError(
                f"HFBackbone wraps a transformers PreTrainedModel with an LM head; got "
                f"{type(model).__name__}"
            )
        config.is_causal = False
        config.use_cache = False
        self.model = model
        self.shift_logits = shift_logits
        import transformers

        if int(transformers.__version__.split(".")[0]) < 5:
            warnings.warn(
                f"transformers {transformers.__version__} may ignore is_causal=False; check "
                "HFBackbone.is_bidirectional() or upgrade to transformers>=5",
                stacklevel=3,
            )

    @classmethod
    def from_model(cls, model: nn.Module, shift_logits: bool = False) -> HFBackbone:
        """Wrap an existing `transformers` language model (its config gets `is_causal=False`).

        Raises:
            TypeError: `model` is not a `transformers` model with embeddings.
        """
        wrapper = cls.__new__(cls)
        nn.Module.__init__(wrapper)
        wrapper._setup(model, shift_logits)
        wrapper.pretrained = None
        return wrapper

    def to_config(self) -> dict[str, Any]:
        """`class_path` / `init_args` that rebuild this wrapper from its checkpoint.

        Raises:
            SerializationError: a wrapper made with `from_model` (it has no checkpoint name).
        """
        if self.pretrained is None:
            from omni_blocks.config import SerializationError

            raise SerializationError(
                "an HFBackbone made with HFBackbone.from_model has no checkpoint name to "
                "record; build it with HFBackbone(pretrained=...) or save it with save_pretrained"
            )
        init_args = {
            "pretrained": str(self.pretrained),
            "shift_logits": bool(self.shift_logits),
            "vocab_size": int(self.vocab_size),
        }
        return {"class_path": "omni_blocks.backbones.HFBackbone", "init_args": init_args}

    @classmethod
    def from_saved(
        cls, folder: Path, init_args: Mapping[str, Any], *, device: str | torch.device = "cpu"
    ) -> HFBackbone:
        """Read back what `save_pretrained` wrote (the loading hook of
        `omni_blocks.checkpointing`); only `shift_logits` is taken from `init_args`."""
        return cls(str(folder), shift_logits=init_args.get("shift_logits")).to(device)

    # ------------------------------------------------------------------ protocol
    @property
    def vocab_size(self) -> int:
        """Rows of the output head."""
        head = self.model.get_output_embeddings()
        return int(head.weight.shape[0])

    def forward(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
    ) -> Logits:
        """Logits for every position; position `i` predicts token `i`.

        Padding (`attention_mask` False) is excluded as keys, and positions are counted over
        real tokens, exactly as in [`NativeTransformer`][omni_blocks.backbones.NativeTransformer].
        `slots` replace the token embeddings at their positions (passed to `transformers` as
        `inputs_embeds`).
        """
        kwargs: dict[str, Any] = {"use_cache": False, "is_causal": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.long()
            kwargs["position_ids"] = position_ids_from_mask(attention_mask)
        if slots is None:
            logits = self.model(input_ids=input_ids, **kwargs).logits
        else:
            embeddings = slots.fill(self.model.get_input_embeddings()(input_ids))
            logits = self.model(inputs_embeds=embeddings, **kwargs).logits
        return shift_right(logits) if self.shift_logits else logits

    @torch.no_grad()
    def resize_vocab(self, new_size: int) -> None:
        """Resize input and output embeddings to `new_size` rows (old rows bit-identical,
        new rows = mean of the old ones); tied embeddings stay tied."""
        model = self.model
        embed = model.get_input_embeddings()
        head = model.get_output_embeddings()
        tied = head is not None and head.weight is embed.weight
        new_embed = nn.Embedding(
            new_size, embed.weight.shape[1], device=embed.weight.device, dtype=embed.weight.dtype
        )
        new_embed.weight.copy_(grow_rows(embed.weight, new_size))
        model.set_input_embeddings(new_embed)
        if head is not None:
            new_head = nn.Linear(
                head.weight.shape[1],
                new_size,
                bias=False,
                device=head.weight.device,
                dtype=head.weight.dtype,
            )
            if tied:
                new_head.weight = new_embed.weight
            else:
                new_head.weight.copy_(grow_rows(head.weight, new_size))
            if getattr(head, "bias", None) is not None:
                raise ValueError("output heads with a bias are not supported by resize_vocab")
            model.set_output_embeddings(new_head)
        model.config.vocab_size = new_size
        if hasattr(model, "vocab_size"):
            model.vocab_size = new_size

    @torch.no_grad()
    def is_bidirectional(self, seq_len: int = 4) -> bool:
        """Probe: does changing the last token change the first position's logits?

        A causal model answers False. Useful for architectures other than Qwen2, whose
        attention code may ignore `is_causal`.
        """
        device = self.model.get_input_embeddings().weight.device
        ids = torch.zeros(1, seq_len, dtype=torch.long, device=device)
        other = ids.clone()
        other[0, -1] = 1
        was_training = self.training
        self.eval()
        try:
            first = self.model(input_ids=ids, use_cache=False).logits[0, 0]
            second = self.model(input_ids=other, use_cache=False).logits[0, 0]
        finally:
            self.train(was_training)
        return not torch.equal(first, second)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """`transformers`' `save_pretrained` (safetensors), with `shift_logits` and
        `is_causal: false` recorded in `config.json`. Returns the folder."""
        folder = Path(folder)
        self.model.save_pretrained(folder)  # safetensors by default
        path = folder / "config.json"
        data = json.loads(path.read_text())
        data["shift_logits"] = self.shift_logits
        data["is_causal"] = False
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return folder
