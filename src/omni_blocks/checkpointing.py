"""Every way weights and configurations are written and read, in one place.

- Checkpoint folders in the Hugging Face layout: `config.json` and its weights, one
  `model.safetensors` or shards listed by `model.safetensors.index.json`
  ([`save_state_dict`][omni_blocks.checkpointing.save_state_dict] through
  `huggingface_hub.save_torch_state_dict`,
  [`load_state_dict`][omni_blocks.checkpointing.load_state_dict]).
- One hub helper for everything that has weights (backbones, tokenizers, whole modules):
  [`resolve_checkpoint`][omni_blocks.checkpointing.resolve_checkpoint] turns a local path or a
  hub repository id into a local folder.
- A whole `OmniDiffusionModule`: [`save_module`][omni_blocks.checkpointing.save_module],
  [`load_module`][omni_blocks.checkpointing.load_module],
  [`load_module_weights`][omni_blocks.checkpointing.load_module_weights] (stage chaining),
  [`load_lightning_checkpoint`][omni_blocks.checkpointing.load_lightning_checkpoint] and
  [`push_module_to_hub`][omni_blocks.checkpointing.push_module_to_hub]. The module's methods
  of the same names call these.

How a block saves itself is the block's business, through two hooks: `to_config()` (or its
dataclass fields) records how to rebuild it, and a backbone with weights of its own layout
writes them with `save_pretrained(folder)` and reads them back with the class method
`from_saved(folder, init_args, device=...)`. Nothing here switches on a block's type.

Safety: only safetensors files are read by default. Pickled `pytorch_model.bin` files are
read only when the caller passes `allow_pickle=True`, and then with
`torch.load(weights_only=True)`. A configuration read from a folder or checkpoint is
untrusted input (see [`omni_blocks.config`][omni_blocks.config]).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import ModelHubMixin
from torch import Tensor, nn

from omni_blocks.config import REGISTRY, block_config, build_blocks, check_untrusted
from omni_blocks.vocab import VocabLayout

if TYPE_CHECKING:
    from omni_blocks.data.processor import TaskProcessor
    from omni_blocks.module import OmniDiffusionModule

__all__ = [
    "CONFIG_NAME",
    "LAYOUT_NAME",
    "PROCESSOR_NAME",
    "SAFE_INDEX",
    "SAFE_WEIGHTS",
    "PretrainedMixin",
    "load_lightning_checkpoint",
    "load_matching",
    "load_module",
    "load_module_weights",
    "load_state_dict",
    "parse_size",
    "push_module_to_hub",
    "read_lightning_checkpoint",
    "resolve_checkpoint",
    "save_module",
    "save_state_dict",
]

SAFE_WEIGHTS = "model.safetensors"
"""File name of an unsharded safetensors checkpoint."""

SAFE_INDEX = "model.safetensors.index.json"
"""File name of the index of a sharded safetensors checkpoint."""

CONFIG_NAME = "omni_blocks.json"
"""File of a `save_module` folder that records the module's blocks."""

LAYOUT_NAME = "layout.json"
"""File of a `save_module` folder that records the vocabulary layout."""

PROCESSOR_NAME = "processor.json"
"""File of a `save_module` folder that records the templates and tokenizers (a
[`TaskProcessor`][omni_blocks.data.processor.TaskProcessor])."""

SPEECH_WEIGHTS_NAME = "speech.safetensors"
"""The weights of a module's speech encoder and projector (`speech_encoder.*`,
`speech_projector.*`), beside the backbone's own files, which stay loadable by
`transformers` alone."""

_SPEECH_PARTS = ("speech_encoder", "speech_projector")

_PICKLE_WEIGHTS = "pytorch_model.bin"
_PICKLE_INDEX = "pytorch_model.bin.index.json"
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.md", "*.mvn"]


# ---------------------------------------------------------------------------------- the hub


def resolve_checkpoint(
    pretrained: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    allow_file: bool = False,
    force_download: bool = False,
) -> Path:
    """A local folder (or, with `allow_file`, a file) holding the checkpoint `pretrained`.

    Args:
        pretrained: a local folder (or file), or a hub repository id such as
            `"Dream-org/Dream-v0-Base-7B"`.
        revision: branch, tag or commit of a hub repository (ignored for local paths).
        allow_pickle: also download `*.bin` weights (they are never read unless this is
            True).
        cache_dir: hub cache folder (default: the `huggingface_hub` cache).
        token: hub token (default: the logged-in one).
        local_files_only: use the hub cache only, never the network.
        allow_file: accept a path to a single weights file.
        force_download: download again even what the cache holds.

    Raises:
        FileNotFoundError: `pretrained` is neither a local path nor a repository id.
        huggingface_hub.errors.HfHubHTTPError: (and the other hub errors) the download
            failed: unknown repository, no network, missing authentication.
    """
    path = Path(pretrained).expanduser()
    if path.is_dir() or (allow_file and path.is_file()):
        return path
    name = str(pretrained)
    if path.exists() or not re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        what = "folder or file" if allow_file else "folder"
        raise FileNotFoundError(
            f"{name!r} is neither a checkpoint {what} nor a hub repository id ('owner/name')"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = list(_HUB_PATTERNS)
    if allow_pickle:
        patterns += ["*.bin", "*.pt"]
    try:
        local = snapshot_download(
            name,
            revision=revision,
            allow_patterns=patterns,
            cache_dir=None if cache_dir is None else str(cache_dir),
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    except LocalEntryNotFoundError as err:
        # the hub's own error, with what it means here
        first = err.args[0] if err.args else str(err)
        err.args = (
            f"{first} ({name!r} is not in the local hub cache and downloading is off: the "
            "machine is offline, HF_HUB_OFFLINE=1 is set, or local_files_only=True)",
            *err.args[1:],
        )
        raise
    return Path(str(local))


# ---------------------------------------------------------------------------------- tensors


def _weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    if (folder / SAFE_INDEX).is_file():
        return _indexed(folder, SAFE_INDEX)
    if (folder / SAFE_WEIGHTS).is_file():
        return [folder / SAFE_WEIGHTS]
    pickled = (folder / _PICKLE_INDEX).is_file() or (folder / _PICKLE_WEIGHTS).is_file()
    if pickled and not allow_pickle:
        raise FileNotFoundError(
            f"{folder} holds only pickled weights ({_PICKLE_WEIGHTS}); they can run code when "
            "read, so they are refused unless you pass allow_pickle=True (or convert them to "
            "safetensors)"
        )
    if (folder / _PICKLE_INDEX).is_file():
        return _indexed(folder, _PICKLE_INDEX)
    if (folder / _PICKLE_WEIGHTS).is_file():
        return [folder / _PICKLE_WEIGHTS]
    raise FileNotFoundError(f"no {SAFE_WEIGHTS} or {SAFE_INDEX} in {folder}")


def _indexed(folder: Path, index_name: str) -> list[Path]:
    try:
        index = json.loads((folder / index_name).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / index_name} is not valid JSON: {err}") from err
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{folder / index_name} has no 'weight_map'")
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"shards listed in {index_name} are missing from {folder}: {missing}"
        )
    return [folder / f for f in files]


def load_state_dict(
    folder: str | os.PathLike[str],
    *,
    allow_pickle: bool = False,
    device: str | torch.device = "cpu",
    keys: Iterable[str] | None = None,
) -> dict[str, Tensor]:
    """Read every tensor of a checkpoint folder (single file or shards).

    Args:
        folder: a folder with `model.safetensors` or `model.safetensors.index.json`.
        allow_pickle: read `pytorch_model.bin` files when no safetensors exist (with
            `torch.load(weights_only=True)`).
        device: where the tensors are created.
        keys: read only these names (the others are skipped without being read).

    Raises:
        FileNotFoundError: no weights, or pickled weights without `allow_pickle`.
        ValueError: a weights file that is not valid safetensors (the message names it).
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    wanted = None if keys is None else set(keys)
    state: dict[str, Tensor] = {}
    for file in _weight_files(folder, allow_pickle):
        if file.suffix == ".safetensors":
            try:
                with safe_open(str(file), framework="pt", device=str(device)) as handle:
                    for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                        if wanted is None or name in wanted:
                            state[name] = handle.get_tensor(name)
            except (SafetensorError, OSError) as err:
                raise ValueError(f"{file} is not a readable safetensors file: {err}") from err
        else:
            loaded = torch.load(file, map_location=device, weights_only=True)
            state.update({k: v for k, v in loaded.items() if wanted is None or k in wanted})
    return state


def parse_size(size: int | str) -> int:
    """Bytes in a size given as an int or a string such as `"5GB"`, `"500MB"`, `"2GiB"`."""
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"a size must be positive, got {size}")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", size.upper())
    if match is None:
        raise ValueError(f"cannot read the size {size!r}; write for example '5GB' or '500MB'")
    number, unit = float(match.group(1)), match.group(2)
    base = 1024 if "I" in unit else 1000
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
    return max(1, int(number * base**power))


def save_state_dict(
    state: Mapping[str, Tensor],
    folder: str | os.PathLike[str],
    *,
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Write tensors as safetensors, sharded with an index when larger than `max_shard_size`.

    `huggingface_hub.save_torch_state_dict` writes the layout of `transformers`'
    `save_pretrained`: one `model.safetensors`, or `model-0000i-of-0000n.safetensors` shards
    listed by `model.safetensors.index.json` (tensors that share memory are written once).
    Stale weight files of an earlier save are removed first. Returns the written files.
    """
    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("model*.safetensors"), folder / SAFE_INDEX]:
        stale.unlink(missing_ok=True)
    state = {k: v.detach().to("cpu") for k, v in state.items()}
    save_torch_state_dict(
        state, folder, max_shard_size=parse_size(max_shard_size), metadata={"format": "pt"}
    )
    return sorted([*folder.glob("model*.safetensors"), *folder.glob(SAFE_INDEX)])


def load_matching(
    module: nn.Module, state: Mapping[str, Tensor], *, strict: bool, source: str
) -> None:
    """`module.load_state_dict(state)` with an error that names what does not fit.

    Raises:
        ValueError: mis-shaped tensors, or (with `strict`) missing / unexpected ones, or
            tensors of an integer dtype where the module holds floats.
    """
    own = module.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    kinds = [
        f"{k}: {v.dtype} vs {own[k].dtype}"
        for k, v in state.items()
        if k in own and own[k].is_floating_point() and not v.is_floating_point()
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong or kinds or (strict and (missing or unexpected)):
        raise ValueError(
            f"the weights of {source} do not fit this {type(module).__name__}: "
            f"{len(wrong)} shape mismatches {wrong[:3]}, {len(kinds)} integer tensors for "
            f"float parameters {kinds[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}; the previous stage must use "
            "the same backbone shape and layout"
        )
    module.load_state_dict(dict(state), strict=strict)


# ---------------------------------------------------------------------------------- modules


def save_module(
    module: OmniDiffusionModule,
    folder: str | os.PathLike[str],
    *,
    max_shard_size: int | str = "5GB",
    processor: TaskProcessor | None = None,
) -> Path:
    """Write a module as safetensors weights plus JSON configuration (nothing pickled).

    The folder holds the backbone in its own layout (`save_pretrained` of the backbone when
    it has one: for a native backbone Qwen2 / Dream `config.json` and `model.safetensors`,
    loadable by `NativeTransformer` and `transformers`; its state dict otherwise),
    `layout.json`, `omni_blocks.json` (every block as `class_path` / `init_args`; the sampler
    among them, which is the model's generation configuration), a model card (`README.md`)
    naming the blocks, and with `processor` the templates and tokenizers
    ([`TaskProcessor`][omni_blocks.data.processor.TaskProcessor]) that make one folder enough
    to generate. Returns the folder.

    Raises:
        SerializationError: a block whose configuration cannot be recorded.
    """
    from omni_blocks import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = module.to_config()
    if config["backbone"] is None:
        block_config(module.backbone)  # raises the explanatory error
    config.pop("layout")
    saver = getattr(module.backbone, "save_pretrained", None)
    if callable(saver):
        saver(folder)
    else:
        save_state_dict(module.backbone.state_dict(), folder, max_shard_size=max_shard_size)
    speech = {
        f"{part}.{key}": value.detach().contiguous().cpu()
        for part in _SPEECH_PARTS
        if getattr(module, part, None) is not None
        for key, value in getattr(module, part).state_dict().items()
    }
    if speech:
        from safetensors.torch import save_file

        save_file(speech, str(folder / SPEECH_WEIGHTS_NAME), metadata={"format": "pt"})
    module.layout.to_json(folder / LAYOUT_NAME)
    document = {"omni_blocks_version": __version__, "module": config}
    (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(_model_card(config, module.layout))
    if processor is not None:
        if processor.layout != module.layout:
            raise ValueError("the processor's templates are built on another layout")
        processor.save_pretrained(folder)
    return folder


def _model_card(config: Mapping[str, Any], layout: VocabLayout) -> str:
    rows = []
    for name, value in config.items():
        if isinstance(value, Mapping) and "class_path" in value:
            rows.append(f"| {name} | `{value['class_path']}` |")
    table = "\n".join(rows)
    return (
        "---\nlibrary_name: omni-blocks\ntags:\n- masked-diffusion\n- omni-blocks\n---\n\n"
        "# OmniDiffusionModule\n\n"
        "A masked discrete diffusion model saved with "
        "[omni_blocks](https://omni-blocks.readthedocs.io). Load it with\n\n"
        "```python\nfrom omni_blocks.module import OmniDiffusionModule\n\n"
        'model = OmniDiffusionModule.from_pretrained("<this folder or repo id>")\n```\n\n'
        f"Vocabulary: {layout.describe()}\n\n"
        f"| block | class |\n|---|---|\n{table}\n"
    )


def _read_module_config(folder: Path, source: str) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{source} has no {CONFIG_NAME}: it is not an OmniDiffusionModule folder "
            "(a bare backbone loads with NativeTransformer.from_pretrained)"
        )
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(document, Mapping) or not isinstance(document.get("module"), Mapping):
        raise ValueError(f"{path} holds no 'module' configuration")
    return dict(document["module"])


def load_module(
    cls: type[OmniDiffusionModule],
    pretrained: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    trust_class_paths: bool = False,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    **overrides: Any,
) -> OmniDiffusionModule:
    """Load a module written by `save_module` (a local folder or a hub repository id).

    The folder's `omni_blocks.json` is untrusted: its class paths must name omni_blocks'
    blocks (or classes registered in `omni_blocks.config.REGISTRY`) unless
    `trust_class_paths`, and it may never set a trust switch such as `trust_remote_code`.
    `overrides` are the caller's own and are not checked. A saved
    [`TaskProcessor`][omni_blocks.data.processor.TaskProcessor] is loaded into
    `module.processor`.

    Raises:
        FileNotFoundError: not a folder or repository, or no `omni_blocks.json` in it.
        UntrustedConfigError: a class path outside the registry or a trust switch.
        ValueError: weights that do not fit.
    """
    folder = resolve_checkpoint(
        pretrained,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
    )
    config = _read_module_config(folder, str(pretrained))
    check_untrusted(config, trust_class_paths=trust_class_paths, source=str(folder / CONFIG_NAME))
    config["layout"] = VocabLayout.from_json(folder / LAYOUT_NAME)
    backbone = overrides.pop("backbone", None)
    saved = config.pop("backbone", None)
    if backbone is None:
        if not isinstance(saved, Mapping):
            raise ValueError(f"{folder / CONFIG_NAME} records no backbone; pass backbone=...")
        backbone = _load_backbone(saved, folder, device, trust_class_paths)
    else:
        backbone.to(device)
        load_matching(
            backbone, load_state_dict(folder, device=device), strict=True, source=str(folder)
        )
    module = cls.from_config(config, backbone=backbone, **overrides)
    _load_speech(module, folder, device)
    if (folder / PROCESSOR_NAME).is_file():
        from omni_blocks.data.processor import TaskProcessor

        module.processor = TaskProcessor.from_pretrained(
            folder, module.layout, trust_class_paths=trust_class_paths
        )
    return module.to(device)


def _load_speech(module: nn.Module, folder: Path, device: str | torch.device) -> None:
    """Give the module's speech encoder and projector the folder's weights (all or none)."""
    parts = {p: getattr(module, p) for p in _SPEECH_PARTS if getattr(module, p, None) is not None}
    path = folder / SPEECH_WEIGHTS_NAME
    if not path.is_file():
        if parts:
            raise ValueError(
                f"{folder} records a speech encoder but holds no {SPEECH_WEIGHTS_NAME}"
            )
        return
    if not parts:
        raise ValueError(f"{path} holds speech weights but the module has no speech encoder")
    from safetensors.torch import load_file

    state = load_file(str(path), device=str(device))
    holder = nn.ModuleDict(parts)
    load_matching(holder, state, strict=True, source=str(path))


def _load_backbone(
    config: Mapping[str, Any], folder: Path, device: str | torch.device, trust: bool
) -> nn.Module:
    """The saved backbone of a `save_module` folder, through its class's `from_saved` hook
    when it has one, else built from its configuration and given the folder's weights."""
    path = str(config.get("class_path", ""))
    init_args = dict(config.get("init_args") or {})
    if trust:
        import importlib

        module_name, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
    else:
        cls = REGISTRY.resolve(path)
    from_saved = getattr(cls, "from_saved", None)
    if callable(from_saved):
        backbone = from_saved(folder, init_args, device=device)
    else:
        (backbone,) = build_blocks(_BackboneOnly, {"backbone": dict(config)}).values()
        load_matching(
            backbone, load_state_dict(folder, device=device), strict=True, source=str(folder)
        )
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{path} did not build a torch.nn.Module")
    return backbone.to(device)


class _BackboneOnly:
    """A signature with just the backbone, to build one with jsonargparse."""

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone


def read_lightning_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """A Lightning `.ckpt` file read with `torch.load(weights_only=True)` (plain data only).

    Raises:
        ValueError: a URL (read it yourself after checking the source), an unreadable file,
            or pickled objects in it.
    """
    text = str(path)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        raise ValueError(
            f"{text} is a URL; download the checkpoint yourself and pass the local file (a "
            "remote checkpoint is never unpickled)"
        )
    try:
        checkpoint = torch.load(Path(text), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(
            f"cannot read {text} with torch.load(weights_only=True): {err}. Lightning "
            "checkpoints hold only plain data when the module and data module record plain "
            "hyper-parameters; otherwise start from a save_pretrained folder"
        ) from err
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise ValueError(f"{text} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def load_module_weights(
    module: OmniDiffusionModule, source: str | os.PathLike[str], *, strict: bool = True
) -> None:
    """Copy weights into `module` from a checkpoint of the previous stage.

    Args:
        module: the module to fill.
        source: a Lightning `.ckpt` file (read with `torch.load(weights_only=True)`), a
            `save_module` folder, or a hub repository id of one.
        strict: require exactly this module's parameters.

    Raises:
        FileNotFoundError: nothing at `source`.
        ValueError: the weights do not fit this module (the message lists the missing,
            unexpected or mis-shaped tensors), or the `.ckpt` holds pickled objects.
    """
    path = Path(source).expanduser()
    if path.is_file() or re.match(r"^[a-z][a-z0-9+.-]*://", str(source)):
        state = dict(read_lightning_checkpoint(source)["state_dict"])
    else:
        saved = load_module(type(module), source, sampler=None)
        state = saved.state_dict()
    load_matching(module, state, strict=strict, source=str(source))


def load_lightning_checkpoint(
    cls: type[OmniDiffusionModule],
    checkpoint_path: str | os.PathLike[str],
    *,
    map_location: str | torch.device | None = None,
    strict: bool = True,
    trust_class_paths: bool = False,
    **overrides: Any,
) -> OmniDiffusionModule:
    """Rebuild a module from a Lightning checkpoint of its class.

    The blocks come from the checkpoint's hyper-parameters (plain JSON, untrusted like a
    saved folder's configuration), the weights from its `state_dict`.

    Raises:
        ValueError: no module hyper-parameters, or weights that do not fit.
        UntrustedConfigError: a class path outside the registry or a trust switch.
    """
    checkpoint = read_lightning_checkpoint(checkpoint_path)
    config = checkpoint.get("hyper_parameters")
    if not isinstance(config, Mapping) or "layout" not in config:
        raise ValueError(f"{checkpoint_path!s} records no OmniDiffusionModule hyper-parameters")
    check_untrusted(config, trust_class_paths=trust_class_paths, source=str(checkpoint_path))
    module = cls.from_config(config, **overrides)
    load_matching(module, checkpoint["state_dict"], strict=strict, source=str(checkpoint_path))
    return module.to(map_location or "cpu")


def push_module_to_hub(
    module: OmniDiffusionModule,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    branch: str | None = None,
    commit_message: str = "Upload OmniDiffusionModule",
) -> str:
    """`save_pretrained` into a temporary folder, then upload it (`ModelHubMixin.push_to_hub`:
    the repository is created when missing). Returns the URL of the commit."""
    url: str = module.push_to_hub(
        repo_id, private=private, token=token, branch=branch, commit_message=commit_message
    )
    return url


class PretrainedMixin(
    ModelHubMixin,
    library_name="omni-blocks",
    tags=["masked-diffusion", "omni-blocks"],
    docs_url="https://omni-blocks.readthedocs.io",
):
    """Hub conventions for `OmniDiffusionModule`, through `huggingface_hub.ModelHubMixin`.

    `save_pretrained(folder, processor=...)`, `from_pretrained(folder_or_repo, token=,
    revision=, cache_dir=, local_files_only=, force_download=)` and `push_to_hub(repo_id)`
    are the mixin's, on top of [`save_module`][omni_blocks.checkpointing.save_module] and
    [`load_module`][omni_blocks.checkpointing.load_module]; `load_weights` and
    `load_from_checkpoint` read Lightning checkpoints. Hub errors arrive as the hub's own
    exceptions.
    """

    processor: TaskProcessor | None = None
    """The templates and tokenizers saved with the module (None when there are none)."""

    def load_weights(self, source: str | os.PathLike[str], *, strict: bool = True) -> None:
        """Copy weights from a previous stage (see
        [`load_module_weights`][omni_blocks.checkpointing.load_module_weights])."""
        load_module_weights(self, source, strict=strict)  # type: ignore[arg-type]

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike[str],
        *,
        processor: TaskProcessor | None = None,
        max_shard_size: int | str = "5GB",
        **kwargs: Any,
    ) -> Path:
        """Write safetensors weights, the JSON configuration, a model card and (when given,
        or attached before) the processor; `kwargs` go to `ModelHubMixin.save_pretrained`
        (`push_to_hub=True, repo_id=...`). Returns the folder."""
        if processor is not None:
            self.processor = processor
        self._max_shard_size = max_shard_size
        ModelHubMixin.save_pretrained(self, Path(save_directory), **kwargs)
        return Path(save_directory)

    def _save_pretrained(self, save_directory: Path) -> None:
        save_module(
            self,  # type: ignore[arg-type]
            save_directory,
            max_shard_size=getattr(self, "_max_shard_size", "5GB"),
            processor=self.processor,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> Any:
        return load_module(
            cls,  # type: ignore[arg-type]
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **model_kwargs,
        )

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: str | torch.device | None = None,
        strict: bool = True,
        **overrides: Any,
    ) -> Any:
        """Rebuild a module from a Lightning checkpoint (see
        [`load_lightning_checkpoint`][omni_blocks.checkpointing.load_lightning_checkpoint])."""
        return load_lightning_checkpoint(
            cls,  # type: ignore[arg-type]
            checkpoint_path,
            map_location=map_location,
            strict=strict,
            **overrides,
        )
