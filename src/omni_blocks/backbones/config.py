"""`TransformerConfig`: the Qwen2 / Dream `config.json` fields a backbone needs.

The field names are exactly those of a Qwen2 or Dream `config.json` (Dream-7B's config is a
Qwen2 config with `model_type: "Dream"` and a few extra token ids), so a checkpoint's
`config.json` reads into a `TransformerConfig` and writes back without renaming anything.
Keys the backbone does not use (`mask_token_id`, `auto_map`, ...) are kept in `extra` so that
`save_pretrained` writes them back.

```python
from omni_blocks.backbones import TransformerConfig

config = TransformerConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
assert TransformerConfig.from_dict(config.to_dict()) == config
```
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["TransformerConfig", "default_shift_logits", "is_dream_config", "read_config_json"]

# Keys of a config.json that only describe the file, never the network.
_FILE_KEYS = frozenset({"shift_logits", "is_causal"})


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and numerics of a Qwen2-architecture transformer (Dream-7B is one).

    Args:
        vocab_size: rows of the embedding and the output head.
        hidden_size: width of the residual stream (Dream-7B: 3584).
        intermediate_size: width of the SwiGLU hidden layer (Dream-7B: 18944).
        num_hidden_layers: number of transformer blocks (Dream-7B: 28).
        num_attention_heads: query heads (Dream-7B: 28); `head_dim = hidden_size / heads`.
        num_key_value_heads: key/value heads for grouped-query attention (Dream-7B: 4);
            `None` means as many as query heads (plain multi-head attention).
        rms_norm_eps: epsilon of every RMSNorm (Dream-7B: 1e-6).
        rope_theta: base of the rotary position embedding (Dream-7B: 1e6).
        max_position_embeddings: longest sequence the checkpoint was trained for
            (informative: rotary embeddings have no table to overflow).
        tie_word_embeddings: share one matrix between the embedding and the output head
            (Dream-7B: False).
        attention_dropout: dropout on attention probabilities during training.
        initializer_range: standard deviation of the normal initialisation of fresh weights.
        model_type: `"qwen2"` for fresh models; `"Dream"` for Dream checkpoints.
        extra: every other key of the `config.json` (kept so that saving writes it back).

    Raises:
        ValueError: a size is not positive, heads do not divide the width or the number of
            key/value heads does not divide the number of query heads.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    max_position_embeddings: int = 32_768
    tie_word_embeddings: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    model_type: str = "qwen2"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        sizes = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.max_position_embeddings,
        }
        for name, value in sizes.items():
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = hidden_size / num_attention_heads = {self.head_dim} must be even "
                "for rotary position embeddings"
            )
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.kv_heads}"
            )
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError(
                f"rms_norm_eps and rope_theta must be positive, got rms_norm_eps="
                f"{self.rms_norm_eps}, rope_theta={self.rope_theta}"
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must lie in [0, 1), got {self.attention_dropout}")

    def architecture(self) -> dict[str, Any]:
        """The fields that shape the network (every field but `model_type` and `extra`), with
        `num_key_value_heads` resolved: the keyword arguments of a Qwen2-style model."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.pop("model_type")
        values.pop("extra")
        values["num_key_value_heads"] = self.kv_heads
        return values

    @property
    def head_dim(self) -> int:
        """Width of one attention head, `hidden_size // num_attention_heads`."""
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (never `None` after construction)."""
        assert self.num_key_value_heads is not None
        return self.num_key_value_heads

    # ------------------------------------------------------------------ config.json
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TransformerConfig:
        """Read a Qwen2 / Dream `config.json` dictionary.

        Raises:
            ValueError: a required field is missing, or the file asks for something this
                architecture does not implement (an activation other than SiLU, RoPE scaling,
                sliding-window attention, Qwen3-style `head_dim` that differs from
                `hidden_size / num_attention_heads`).
        """
        raw = dict(raw)
        required = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        )
        missing = [k for k in required if k not in raw]
        if missing:
            raise ValueError(f"config.json lacks the required fields {missing}")
        if raw.get("hidden_act", "silu") != "silu":
            raise ValueError(
                f"only the SiLU (SwiGLU) MLP of Qwen2/Dream is implemented; the config asks for "
                f"hidden_act={raw['hidden_act']!r}"
            )
        if raw.get("rope_scaling") not in (None, {}):
            raise ValueError(
                f"RoPE scaling is not implemented (Dream-7B uses none); got "
                f"rope_scaling={raw['rope_scaling']!r}"
            )
        if raw.get("use_sliding_window"):
            raise ValueError(
                "sliding-window attention is not implemented: Dream uses full attention"
            )
        head_dim = raw.get("head_dim")
        if head_dim is not None and head_dim * raw["num_attention_heads"] != raw["hidden_size"]:
            raise ValueError(
                f"head_dim={head_dim} differs from hidden_size / num_attention_heads; this is "
                "a Qwen3-style config, which this backbone does not implement"
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: raw.pop(k) for k in list(raw) if k in names}
        for key in _FILE_KEYS:
            raw.pop(key, None)
        if "rope_theta" not in known and isinstance(raw.get("rope_parameters"), Mapping):
            # transformers 5 writes the RoPE base under rope_parameters.
            theta = raw["rope_parameters"].get("rope_theta")
            if theta is not None:
                known["rope_theta"] = theta
        for key in ("rms_norm_eps", "rope_theta", "attention_dropout", "initializer_range"):
            if key in known:
                known[key] = float(known[key])
        return cls(**known, extra=raw)

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` dictionary (the extra keys first, then every field)."""
        out: dict[str, Any] = dict(self.extra)
        own = asdict(self)
        own.pop("extra")
        out.update(own)
        out.setdefault("hidden_act", "silu")
        if self.model_type == "qwen2":
            out.setdefault("architectures", ["Qwen2ForCausalLM"])
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> TransformerConfig:
        """Read a `config.json` file (see `from_dict`)."""
        return cls.from_dict(read_config_json(path))

    def to_json(self, path: str | Path, **overrides: Any) -> None:
        """Write `config.json`, with `overrides` (for example `shift_logits`) added."""
        data = self.to_dict()
        data.update(overrides)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_config_json(path: str | Path) -> dict[str, Any]:
    """Parse a `config.json` file, with a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config.json at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def is_dream_config(raw: Mapping[str, Any]) -> bool:
    """Whether a `config.json` dictionary describes a Dream checkpoint.

    Dream-7B's config has `model_type: "Dream"` and `architectures: ["DreamModel"]`
    (Omni-Diffusion's checkpoints keep both).
    """
    model_type = str(raw.get("model_type", "")).lower()
    architectures = [str(a).lower() for a in raw.get("architectures") or []]
    return model_type == "dream" or any(a.startswith("dream") for a in architectures)


def default_shift_logits(raw: Mapping[str, Any]) -> bool:
    """Whether logits must be shifted by one for a checkpoint, from its `config.json`.

    An explicit `shift_logits` key (written by `save_pretrained`) wins; otherwise Dream
    checkpoints shift (Dream predicts token `i` at position `i - 1`, inherited from its
    autoregressive initialisation) and everything else does not.
    """
    if "shift_logits" in raw:
        return bool(raw["shift_logits"])
    return is_dream_config(raw)
