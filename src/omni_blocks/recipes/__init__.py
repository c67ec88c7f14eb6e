"""Recipes that ship with the package: ready-to-run LightningCLI configs.

```text
omni-blocks recipes list                       # every recipe and its files
omni-blocks recipes copy omni_diffusion recipe/ # copy one to edit it
omni-blocks fit --config recipe/stage1.yaml
```

| recipe | files | what |
|---|---|---|
| `omni_diffusion` | `stage1.yaml` to `stage3.yaml` | the paper's three stages on Dream-7B |

(the *Full recipe* tutorial walks through them).

The files lie inside the installed package ([`recipe_path`][omni_blocks.recipes.recipe_path]
finds them), so a wheel carries them; copy one before editing it.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

__all__ = ["copy_recipe", "list_recipes", "recipe_path"]


def _root() -> Path:
    return Path(str(importlib.resources.files(__name__)))


def list_recipes() -> dict[str, list[str]]:
    """Every recipe and its config files, by name."""
    return {
        folder.name: sorted(p.name for p in folder.glob("*.yaml"))
        for folder in sorted(_root().iterdir())
        if folder.is_dir() and any(folder.glob("*.yaml"))
    }


def recipe_path(name: str) -> Path:
    """The folder of recipe `name` (or the file, for `"recipe/file.yaml"`) inside the package.

    Raises:
        KeyError: no such recipe or file (the message lists what there is).
    """
    recipe, _, file = name.partition("/")
    recipes = list_recipes()
    if recipe not in recipes:
        raise KeyError(f"no recipe {recipe!r}; there are {sorted(recipes)}")
    if file and file not in recipes[recipe]:
        raise KeyError(f"recipe {recipe!r} has no {file!r}; it has {recipes[recipe]}")
    return _root() / recipe / file if file else _root() / recipe


def copy_recipe(name: str, destination: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Copy recipe `name` (a folder, or `"recipe/file.yaml"`) into `destination`.

    Returns the folder (or file) written.

    Raises:
        KeyError: no such recipe.
        FileExistsError: a file would be overwritten (pass `overwrite=True`).
    """
    source = recipe_path(name)
    destination = Path(destination)
    files = [source] if source.is_file() else sorted(source.glob("*.yaml"))
    destination.mkdir(parents=True, exist_ok=True)
    targets = [destination / f.name for f in files]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass overwrite=True (--overwrite) to replace")
    for file, target in zip(files, targets, strict=True):
        shutil.copyfile(file, target)
    return targets[0] if source.is_file() else destination
