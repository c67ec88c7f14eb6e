"""The `omni-blocks` command: LightningCLI over `OmniDiffusionModule`.

```text
omni-blocks fit --config stage1.yaml
omni-blocks fit --config stage2.yaml          # model.init_from: <stage 1 checkpoint>
omni-blocks fit --config stage1.yaml --ckpt_path last.ckpt   # resume stage 1
omni-blocks fit --config stage1.yaml --print_config          # the full, resolved config
```

The `model` section holds the arguments of
[`OmniDiffusionModule`][omni_blocks.module.OmniDiffusionModule]; every block is chosen by
`class_path` / `init_args`. The `data` section names any `LightningDataModule` by
`class_path` (the library's is `omni_blocks.data.OmniDataModule`). The `trainer` section is
Lightning's: devices, `strategy: ddp` or `fsdp`, `precision: bf16-mixed`, callbacks, and so
on, so the same file runs on a laptop CPU and on a GPU cluster.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from omni_blocks.module import OmniDiffusionModule

__all__ = ["OmniCLI", "cli", "main"]


class OmniCLI(LightningCLI):
    """LightningCLI with `OmniDiffusionModule` as the model and any data module.

    A checkpoint given with `--ckpt_path` is always read with `weights_only=True` (plain
    data, never unpickled objects), and a URL is refused: download it yourself, from a
    source you trust.
    """

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        path = kwargs.get("ckpt_path")
        if isinstance(path, str) and re.match(r"^[a-z][a-z0-9+.-]*://", path):
            raise ValueError(
                f"--ckpt_path {path} is a URL; download the checkpoint and pass the local file "
                "(a remote checkpoint is never unpickled)"
            )
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            kwargs["weights_only"] = True
        return kwargs


def cli(args: list[str] | dict[str, Any] | None = None, *, run: bool = True) -> OmniCLI:
    """Build (and by default run) the command line; `args` replaces `sys.argv[1:]`.

    Returns the `LightningCLI` object (its `model`, `datamodule`, `trainer`), which tests
    and notebooks can inspect.
    """
    return OmniCLI(
        OmniDiffusionModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def main() -> None:
    """Entry point of the `omni-blocks` script."""
    cli()


if __name__ == "__main__":
    main()
