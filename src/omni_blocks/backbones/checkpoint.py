"""Reading and writing checkpoints in the Hugging Face layout, and growing embeddings.

A checkpoint is a folder with a `config.json` and its weights, either one
`model.safetensors` or shards listed by `model.safetensors.index.json` (the layout of
Dream-7B on the hub and of `transformers`' `save_pretrained`). A checkpoint name that is not
a local folder is downloaded from the Hugging Face hub with `huggingface_hub`.

Safety: only safetensors files are read by default. Pickled `pytorch_model.bin` files are
read only when the caller passes `allow_pickle=True`, and then with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "SAFE_INDEX",
    "SAFE_WEIGHTS",
    "grow_rows",
    "load_state_dict",
    "parse_size",
    "resolve_checkpoint",
    "save_state_dict",
]

SAFE_WEIGHTS = "model.safetensors"
"""File name of an unsharded safetensors checkpoint."""

SAFE_INDEX = "model.safetensors.index.json"
"""File name of the index of a sharded safetensors checkpoint."""

_PICKLE_WEIGHTS = "pytorch_model.bin"
_PICKLE_INDEX = "pytorch_model.bin.index.json"


def resolve_checkpoint(
    pretrained: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """A local folder holding the checkpoint `pretrained`.

    Args:
        pretrained: a local folder, or a hub repository id such as
            `"Dream-org/Dream-v0-Base-7B"`.
        revision: branch, tag or commit of a hub repository (ignored for folders).
        allow_pickle: also download `*.bin` weights (they are never read unless this is
            True).
        cache_dir: hub cache folder (default: the `huggingface_hub` cache).

    Raises:
        FileNotFoundError: `pretrained` is neither a folder nor a repository id, or the
            download failed (no network, unknown repository; the error says which).
    """
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path
    name = str(pretrained)
    if path.exists() or not re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        raise FileNotFoundError(
            f"{name!r} is neither a checkpoint folder nor a hub repository id ('owner/name')"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    if allow_pickle:
        patterns.append("*.bin")
    try:
        local = snapshot_download(
            name,
            revision=revision,
            allow_patterns=patterns,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as err:  # network, authentication, unknown repository
        raise FileNotFoundError(
            f"could not download {name!r} (revision {revision!r}) from the Hugging Face hub: "
            f"{type(err).__name__}: {err}"
        ) from err
    return Path(local)


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
    index = json.loads((folder / index_name).read_text())
    weight_map = index.get("weight_map")
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
    """
    from safetensors import safe_open

    folder = Path(folder)
    wanted = None if keys is None else set(keys)
    state: dict[str, Tensor] = {}
    for file in _weight_files(folder, allow_pickle):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt", device=str(device)) as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if wanted is None or name in wanted:
                        state[name] = handle.get_tensor(name)
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

    The layout is that of `transformers`' `save_pretrained`: one `model.safetensors`, or
    `model-0000i-of-0000n.safetensors` shards listed by `model.safetensors.index.json`.
    Tensors must not share memory (drop tied copies first). Returns the written files.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("model*.safetensors"), folder / SAFE_INDEX]:
        stale.unlink(missing_ok=True)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, Tensor]] = [{}]
    sizes = [0]
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and sizes[-1] + nbytes > limit:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor.detach().to("cpu").contiguous()
        sizes[-1] += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(folder / SAFE_WEIGHTS), metadata=metadata)
        return [folder / SAFE_WEIGHTS]
    written: list[Path] = []
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, name))
        written.append(folder / name)
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (folder / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*written, folder / SAFE_INDEX]


@torch.no_grad()
def grow_rows(weight: Float[Tensor, "rows dim"], new_rows: int) -> Float[Tensor, "new_rows dim"]:
    """`weight` with `new_rows` rows: old rows copied bit for bit, new rows = their mean.

    The mean of the existing rows is the usual initialisation for new vocabulary entries
    (it keeps the new tokens' logits near the average logit instead of random), computed in
    float32 and cast back. Shrinking keeps the first `new_rows` rows.

    Raises:
        ValueError: `new_rows < 1`.
    """
    if new_rows < 1:
        raise ValueError(f"new_rows must be positive, got {new_rows}")
    old_rows = weight.shape[0]
    if new_rows <= old_rows:
        return weight[:new_rows].clone()
    out = torch.empty(new_rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
    out[:old_rows] = weight
    out[old_rows:] = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return out
