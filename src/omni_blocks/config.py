"""Blocks as plain `class_path` / `init_args` dictionaries, and back: the one place that knows
about configuration files.

Checkpoints and `save_pretrained` folders record every block of a module in the same shape
LightningCLI reads from YAML, so what a checkpoint holds is plain JSON (no pickled objects):

```python
from omni_blocks.config import block_config
from omni_blocks.masking import AttenuatedTailPadMasking

block_config(AttenuatedTailPadMasking(pad_mask_ratio=0.5))
# {'class_path': 'omni_blocks.masking.AttenuatedTailPadMasking',
#  'init_args': {'pad_mask_ratio': 0.5, 'pad_loss_weight': 1.0}}
```

A block is recorded from (in this order) a `to_config()` method that returns such a
dictionary, its dataclass fields, or the attributes named like its constructor's parameters.

Reading a configuration back is where a file could turn into code, so a configuration that
comes from a file (a saved model, a checkpoint's hyper-parameters) is *untrusted*:

- its class paths resolve only through the [`BlockRegistry`][omni_blocks.config.BlockRegistry]
  of omni_blocks' own blocks (plus the classes a caller registers), never to an arbitrary
  importable name;
- it may not turn on a trust switch (`trust_remote_code`, `allow_pickle`, ...): only the
  caller's own arguments can ([`check_untrusted`][omni_blocks.config.check_untrusted]).

jsonargparse (LightningCLI's parser) builds the blocks, exactly as it parses the `model`
section of a YAML file ([`build_blocks`][omni_blocks.config.build_blocks]).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "REGISTRY",
    "TRUST_ARGUMENTS",
    "BlockRegistry",
    "SerializationError",
    "UntrustedConfigError",
    "block_config",
    "build_blocks",
    "build_object",
    "check_untrusted",
    "class_path",
    "class_paths",
    "to_jsonable",
]


class SerializationError(TypeError):
    """A block whose configuration cannot be written as `class_path` / `init_args`."""


class UntrustedConfigError(ValueError):
    """A configuration from a file asks for something only the caller may allow."""


TRUST_ARGUMENTS = frozenset(
    {"trust_remote_code", "allow_pickle", "trust_class_paths", "weights_only_false"}
)
"""Arguments that lower a safety guard: a configuration read from a file may not set them."""


# ---------------------------------------------------------------------------------- writing


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


def block_config(block: object) -> dict[str, Any]:
    """`{"class_path": ..., "init_args": {...}}` that rebuilds `block`.

    Raises:
        SerializationError: the block keeps no record of a constructor argument (a class
            whose `__init__` parameter `x` is not stored as `self.x`), or holds a value
            without a JSON form. Give such a class a `to_config()` method.
    """
    to_config = getattr(block, "to_config", None)
    if callable(to_config):
        config = to_config()
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


# ---------------------------------------------------------------------------------- reading


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


# The packages whose public classes are blocks a saved configuration may name. Explicit on
# purpose: a file can only ever build what is listed here (or what a caller registers).
_BLOCK_MODULES = (
    "omni_blocks.vocab",
    "omni_blocks.schedules",
    "omni_blocks.masking",
    "omni_blocks.optim",
    "omni_blocks.sampling",
    "omni_blocks.sampling.base",
    "omni_blocks.sampling.sampler",
    "omni_blocks.sampling.planners",
    "omni_blocks.sampling.scorers",
    "omni_blocks.sampling.penalties",
    "omni_blocks.sampling.choice",
    "omni_blocks.sampling.guidance",
    "omni_blocks.sampling.cache",
    "omni_blocks.backbones",
    "omni_blocks.backbones.native",
    "omni_blocks.backbones.hf",
    "omni_blocks.backbones.lora",
    "omni_blocks.speech",
    "omni_blocks.speech.encoders",
    "omni_blocks.speech.projectors",
    "omni_blocks.speech.sensevoice",
    "omni_blocks.tokenizers",
    "omni_blocks.tokenizers.text",
    "omni_blocks.tokenizers.magvit2",
    "omni_blocks.tokenizers.patch_vq",
    "omni_blocks.tokenizers.speech_vq",
    "omni_blocks.tokenizers.glm4voice",
    "omni_blocks.data",
    "omni_blocks.data.templates",
    "omni_blocks.data.mixture",
    "omni_blocks.data.manifest",
    "omni_blocks.data.collate",
    "omni_blocks.data.packing",
    "omni_blocks.data.chat",
    "omni_blocks.data.speech_input",
    "omni_blocks.data.messages",
    "omni_blocks.metrics",
    "omni_blocks.module",
)

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class BlockRegistry:
    """The classes a configuration read from a file may name.

    By default: every public class of omni_blocks' block modules, under both the package
    path (`omni_blocks.sampling.MaskedDiffusionSampler`) and the defining module's path
    (`omni_blocks.sampling.sampler.MaskedDiffusionSampler`). A caller adds its own classes
    with [`register`][omni_blocks.config.BlockRegistry.register] (or passes
    `trust_class_paths=True` to the loading function, for a source it trusts).

    Example:
        ```python
        from omni_blocks.config import REGISTRY

        assert "omni_blocks.sampling.MaskedDiffusionSampler" in REGISTRY
        assert "os.system" not in REGISTRY
        ```
    """

    def __init__(self, modules: Iterable[str] = _BLOCK_MODULES) -> None:
        self._modules = tuple(modules)
        self._classes: dict[str, type] | None = None
        self._extra: dict[str, type] = {}

    def _load(self) -> dict[str, type]:
        if self._classes is None:
            classes: dict[str, type] = {}
            for name in self._modules:
                try:
                    module = importlib.import_module(name)
                except ImportError:
                    continue  # an optional part not installed (or not in this version)
                for attr in getattr(module, "__all__", ()):
                    value = getattr(module, attr, None)
                    if inspect.isclass(value) and value.__module__.startswith("omni_blocks."):
                        classes[f"{name}.{attr}"] = value
                        classes[f"{value.__module__}.{value.__qualname__}"] = value
            self._classes = classes
        return self._classes

    def register(self, cls: type, *paths: str) -> type:
        """Allow `cls` (under its own path and any further `paths`); returns `cls`, so it
        works as a decorator."""
        for path in (f"{cls.__module__}.{cls.__qualname__}", *paths):
            self._extra[path] = cls
        return cls

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and (path in self._extra or path in self._load())

    def resolve(self, path: str) -> type:
        """The class registered under `path`.

        Raises:
            UntrustedConfigError: `path` is not registered.
        """
        if path in self._extra:
            return self._extra[path]
        classes = self._load()
        if path not in classes:
            raise UntrustedConfigError(
                f"class path {path!r} is not one of omni_blocks' blocks nor a registered "
                "class; a saved configuration may only name those (register your class with "
                "omni_blocks.config.REGISTRY.register, or pass trust_class_paths=True for a "
                "source you trust)"
            )
        return classes[path]

    def paths(self) -> list[str]:
        """Every registered path, sorted."""
        return sorted({*self._load(), *self._extra})


REGISTRY = BlockRegistry()
"""The registry every loading function consults by default."""


def check_untrusted(
    config: Any,
    *,
    registry: BlockRegistry | None = None,
    trust_class_paths: bool = False,
    source: str = "the configuration",
) -> None:
    """Refuse what a configuration read from a file may not do.

    Args:
        config: the configuration (nested dicts and lists).
        registry: the allowed classes (default: [`REGISTRY`][omni_blocks.config.REGISTRY]).
        trust_class_paths: allow any class path (trust switches are still refused).
        source: names the file in error messages.

    Raises:
        UntrustedConfigError: a class path outside the registry (unless
            `trust_class_paths`), a dotted string naming an importable module outside it
            (jsonargparse would import it), or a trust switch (`TRUST_ARGUMENTS`) set to
            anything but false.
    """
    registry = REGISTRY if registry is None else registry
    for key, value in _walk(config):
        if key in TRUST_ARGUMENTS and value not in (None, False):
            raise UntrustedConfigError(
                f"{source} sets {key}={value!r}; a saved model or checkpoint may not turn on a "
                "trust switch. Pass it yourself (for example as a keyword argument or an "
                "override) if you trust the source"
            )
        if trust_class_paths or not isinstance(value, str):
            continue
        if key == "class_path":
            registry.resolve(value)
        elif _DOTTED.fullmatch(value) and value not in registry and _importable(value):
            raise UntrustedConfigError(
                f"{source} holds {value!r} under {key!r}, an importable name outside "
                "omni_blocks' blocks; it would be imported when the configuration is parsed"
            )


def _walk(config: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(config, Mapping):
        for k, v in config.items():
            yield str(k), v
            yield from _walk(v, str(k))
    elif isinstance(config, Sequence) and not isinstance(config, str):
        for v in config:
            yield key, v
            yield from _walk(v, key)


def _importable(path: str) -> bool:
    root = path.split(".", 1)[0]
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False


def build_blocks(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Build the entries of `config` (`class_path` dicts, plain values) with jsonargparse.

    Each entry is parsed against the type of `cls.__init__`'s parameter of the same name,
    exactly as LightningCLI parses the `model` section of a YAML config. Check a
    configuration that comes from a file with
    [`check_untrusted`][omni_blocks.config.check_untrusted] first.

    Raises:
        ValueError: an entry that is not a valid value for its parameter.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    init = getattr(cls, "__init__")  # noqa: B009 (mypy refuses cls.__init__)
    names = set(typing.get_type_hints(init)) - {"return"}
    parser.add_class_arguments(
        cls, "block", skip=names - set(config), instantiate=False, fail_untyped=False
    )
    try:
        parsed = parser.parse_object({"block": dict(config)})
    except Exception as err:  # jsonargparse's ArgumentError: name what did not parse
        raise ValueError(f"cannot build {cls.__name__} from its configuration: {err}") from err
    # `instantiate` since jsonargparse 4.49; `instantiate_classes` before (now deprecated)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    built = instantiate(parsed)
    return {k: getattr(built.block, k) for k in config}


def build_object(cls: type, config: Mapping[str, Any], **overrides: Any) -> Any:
    """`cls(**values)`: the entries of `config` built with
    [`build_blocks`][omni_blocks.config.build_blocks], then `overrides` (ready-made values)
    on top. Keys starting with `_` are ignored.

    Raises:
        ValueError: a key that is not a parameter of `cls`, or an entry that does not parse.
    """
    config = {k: v for k, v in config.items() if not str(k).startswith("_")}
    init = getattr(cls, "__init__")  # noqa: B009 (mypy refuses cls.__init__)
    known = set(typing.get_type_hints(init)) - {"return"}
    unknown = sorted((set(config) | set(overrides)) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} arguments {unknown}; valid: {sorted(known)}")
    values = build_blocks(cls, {k: v for k, v in config.items() if k not in overrides})
    values.update(overrides)
    return cls(**values)
