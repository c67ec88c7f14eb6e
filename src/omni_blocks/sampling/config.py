"""`to_config`: a block as the `class_path` / `init_args` dict LightningCLI reads.

Handy to turn a preset into YAML for a config file:

```python
import yaml
from omni_blocks.sampling import llada_sampler, to_config

print(yaml.safe_dump({"model": {"sampler": to_config(llada_sampler())}}, sort_keys=False))
```
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

__all__ = ["to_config"]


def to_config(block: object) -> Any:
    """The LightningCLI (jsonargparse) config of a dataclass block, recursively.

    Dataclass instances become `{"class_path": ..., "init_args": {...}}`; numbers, strings,
    booleans, None, enums (by value), lists and dicts are kept as they are.

    Raises:
        TypeError: a value that a YAML config cannot hold (for example a tensor).
    """
    if dataclasses.is_dataclass(block) and not isinstance(block, type):
        cls = type(block)
        init_args = {
            f.name: to_config(getattr(block, f.name)) for f in dataclasses.fields(block) if f.init
        }
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
    if isinstance(block, enum.Enum):
        return block.value
    if block is None or isinstance(block, (bool, int, float, str)):
        return block
    if isinstance(block, (list, tuple)):
        return [to_config(item) for item in block]
    if isinstance(block, dict):
        return {str(key): to_config(value) for key, value in block.items()}
    raise TypeError(f"cannot write {type(block).__name__} ({block!r}) into a config")
