"""Blocks as plain `class_path` / `init_args` dictionaries, and back.

Checkpoints and `save_pretrained` folders record every block of a module in the same shape
LightningCLI reads from YAML, so what a checkpoint holds is plain JSON (no pickled objects):

```python
from omni_blocks.masking import AttenuatedTailPadMasking
from omni_blocks.serialization import block_config

block_config(AttenuatedTailPadMasking(pad_mask_ratio=0.5))
# {'class_path': 'omni_blocks.masking.AttenuatedTailPadMasking',
#  'init_args': {'pad_mask_ratio': 0.5}}
```

A block is recorded from (in this order) a `to_config()` method that returns such a
dictionary, its dataclass fields, or the attributes named like its constructor's parameters.
[`NativeTransformer`][omni_blocks.backbones.NativeTransformer] backbones (and subclasses
such as `PretrainedTransformer`) are recorded as a `NativeTransformer` of the same shape, so
that rebuilding one never downloads the original checkpoint again.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["SerializationError", "block_config", "class_paths", "to_jsonable"]


class SerializationError(TypeError):
    """A block whose configuration cannot be written as `class_path` / `init_args`."""


def class_path(obj: object) -> str:
    """`module.QualName` of `obj`'s class."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_jsonable(value: Any, where: str = "value") -> Any:
    """`value` as JSON data: blocks become `class_path` dictionaries, tuples lists.

    Raises:
        SerializationError: a value that has no JSON form (a tensor, a function, ...).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return block_config(value)
    if hasattr(value, "to_config") or _init_params(type(value)) is not None:
        return block_config(value)
    raise SerializationError(
        f"{where} = {value!r} ({type(value).__name__}) has no JSON form; blocks must hold "
        "plain values (numbers, strings, lists, dicts) or other blocks"
    )


def _init_params(cls: type) -> list[inspect.Parameter] | None:
    """The named parameters of `cls.__init__`, or None for `object.__init__`."""
    init = getattr(cls, "__init__")  # noqa: B009 (mypy refuses cls.__init__)
    if init is object.__init__:
        return None
    params = list(inspect.signature(init).parameters.values())[1:]
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _native_backbone_config(block: Any) -> dict[str, Any]:
    from omni_blocks.backbones import NativeTransformer

    config = block.config.to_dict()
    names = [p.name for p in _init_params(NativeTransformer) or []]
    init_args = {k: config[k] for k in names if k in config}
    init_args["shift_logits"] = bool(block.shift_logits)
    init_args["gradient_checkpointing"] = bool(block.gradient_checkpointing)
    return {
        "class_path": "omni_blocks.backbones.NativeTransformer",
        "init_args": to_jsonable(init_args, "NativeTransformer"),
    }


def _hf_backbone_config(block: Any) -> dict[str, Any]:
    if block.pretrained is None:
        raise SerializationError(
            "an HFBackbone made with HFBackbone.from_model has no checkpoint name to record; "
            "build it with HFBackbone(pretrained=...) or save it with save_pretrained"
        )
    return {
        "class_path": "omni_blocks.backbones.HFBackbone",
        "init_args": {
            "pretrained": str(block.pretrained),
            "shift_logits": bool(block.shift_logits),
            "vocab_size": int(block.vocab_size),
        },
    }


def block_config(block: object) -> dict[str, Any]:
    """`{"class_path": ..., "init_args": {...}}` that rebuilds `block`.

    Raises:
        SerializationError: the block keeps no record of a constructor argument (a class
            whose `__init__` parameter `x` is not stored as `self.x`), or holds a value
            without a JSON form. Give such a class a `to_config()` method.
    """
    from omni_blocks.backbones import NativeTransformer

    if isinstance(block, NativeTransformer):
        return _native_backbone_config(block)
    if type(block).__name__ == "HFBackbone" and type(block).__module__.startswith("omni_blocks."):
        return _hf_backbone_config(block)
    if hasattr(block, "to_config"):
        config = block.to_config()
        if not isinstance(config, Mapping) or "class_path" not in config:
            raise SerializationError(
                f"{type(block).__name__}.to_config() must return a dict with a 'class_path'"
            )
        return dict(config)
    name = type(block).__name__
    if dataclasses.is_dataclass(block) and not isinstance(block, type):
        values = {f.name: getattr(block, f.name) for f in dataclasses.fields(block) if f.init}
    else:
        params = _init_params(type(block))
        if params is None:
            values = {}
        else:
            missing = [p.name for p in params if not hasattr(block, p.name)]
            if missing:
                raise SerializationError(
                    f"cannot record the configuration of {name}: its constructor takes "
                    f"{missing} but the object has no attribute of that name; store them as "
                    "attributes, make the class a dataclass, or give it a to_config() method "
                    "returning {'class_path': ..., 'init_args': ...}"
                )
            values = {p.name: getattr(block, p.name) for p in params}
    return {"class_path": class_path(block), "init_args": to_jsonable(values, name)}


def class_paths(config: Any) -> Iterator[str]:
    """Every `class_path` value inside a nested configuration."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "class_path" and isinstance(value, str):
                yield value
            else:
                yield from class_paths(value)
    elif isinstance(config, Sequence) and not isinstance(config, str):
        for value in config:
            yield from class_paths(value)
