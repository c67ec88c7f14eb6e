"""The `omni-blocks` command: LightningCLI over `OmniDiffusionModule`, and two tools.

```text
omni-blocks fit --config stage1.yaml
omni-blocks fit --config stage2.yaml          # model.init_from: <stage 1 checkpoint>
omni-blocks fit --config stage1.yaml --ckpt_path last.ckpt   # resume stage 1
omni-blocks fit --config stage1.yaml --print_config          # the full, resolved config
omni-blocks validate / test --config toy.yaml --ckpt_path checkpoints/last.ckpt
omni-blocks predict --config toy.yaml --ckpt_path checkpoints/last.ckpt   # writes outputs
omni-blocks generate --model FOLDER_OR_HUB_ID --task t2i --example '{"caption": "a seven"}' \
    --out samples/                            # PNG / WAV / JSON per example
omni-blocks recipes list                      # the configs that ship with the package
omni-blocks recipes copy omni_diffusion recipe/
```

The `model` section holds the arguments of
[`OmniDiffusionModule`][omni_blocks.module.OmniDiffusionModule]; every block is chosen by
`class_path` / `init_args`. The `data` section names any `LightningDataModule` by
`class_path` (the library's is `omni_blocks.data.OmniDataModule`). The `trainer` section is
Lightning's: devices, `strategy: ddp` or `fsdp`, `precision: bf16-mixed`, callbacks, and so
on, so the same file runs on a laptop CPU and on a GPU cluster.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from omni_blocks.generation import GenerationWriter, generate, write_output
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.recipes import copy_recipe, list_recipes

__all__ = ["OmniCLI", "cli", "generate_command", "main", "recipes_command"]

_TOOLS = """
Besides LightningCLI's subcommands:
  omni-blocks generate -h   generate with a saved model (PNG / WAV / JSON per example)
  omni-blocks recipes -h    list or copy the configs that ship with the package
"""


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

    def before_predict(self) -> None:
        """Write the generations to `<log dir>/predictions` unless a writer is configured."""
        callbacks: list[Any] = getattr(self.trainer, "callbacks", [])
        if not any(isinstance(c, GenerationWriter) for c in callbacks):
            root = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            callbacks.append(GenerationWriter(root / "predictions"))


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
        parser_kwargs={"epilog": _TOOLS, "formatter_class": argparse.RawDescriptionHelpFormatter},
        args=args,
        run=run,
    )


def generate_command(argv: list[str]) -> list[dict[str, Any]]:
    """`omni-blocks generate`: load a saved model and its processor, generate, write files.

    Returns the records written (one per example; also in `<out>/outputs.jsonl`).
    """
    parser = argparse.ArgumentParser(
        prog="omni-blocks generate",
        description="Generate with a model saved by save_pretrained(..., processor=...).",
    )
    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id")
    parser.add_argument("--task", required=True, help="the task name (t2i, asr, tts, ...)")
    parser.add_argument(
        "--example",
        action="append",
        default=[],
        help="one example as JSON (text fields, code lists, image / audio file paths); repeat",
    )
    parser.add_argument("--examples", type=Path, help="a JSONL manifest of examples")
    parser.add_argument("--out", type=Path, required=True, help="folder to write to")
    parser.add_argument(
        "--target-length",
        type=int,
        default=None,
        help="positions to generate (end token and tail pads included); image tasks "
        "default to the image's codes, text and speech tasks need it",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    module = OmniDiffusionModule.from_pretrained(
        args.model, revision=args.revision, device=args.device
    )
    processor = module.processor
    if processor is None:
        parser.error(
            f"{args.model} was saved without a processor (templates and tokenizers): save it "
            "with module.save_pretrained(folder, processor=datamodule.processor)"
        )
    if module.sampler is None:
        parser.error(f"{args.model} has no sampler in its configuration")
    from omni_blocks.data.manifest import read_manifest

    records: list[dict[str, Any]] = [json.loads(e) for e in args.example]
    base = Path(".")
    if args.examples is not None:
        records += read_manifest(args.examples)
        base = args.examples.parent
    if not records:
        parser.error("give at least one --example or an --examples file")
    try:
        template = processor.template(args.task)
    except KeyError as err:
        parser.error(str(err.args[0]))
    examples = [processor.example(r, base=base) for r in records]
    result = generate(
        module.backbone,
        module.layout,
        module.sampler,
        template,
        examples,
        args.target_length,
        generator=torch.Generator(args.device).manual_seed(args.seed),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        # a sampler that may write other modalities' ids is parsed as upstream parses
        lenient_parse=not getattr(module.sampler, "restrict_to_modality", True),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with (args.out / "outputs.jsonl").open("w") as listing:
        for index, output in enumerate(result.outputs):
            stem = args.out / f"{index:05d}-{args.task}"
            record = write_output(stem, args.task, output, processor)
            record["nfe"] = result.nfe[index]
            listing.write(json.dumps({"file": stem.name, **record}) + "\n")
            written.append(record)
    print(f"wrote {len(written)} output(s) to {args.out}")
    return written


def recipes_command(argv: list[str]) -> None:
    """`omni-blocks recipes list | copy NAME DEST`: the configs that ship with the package."""
    parser = argparse.ArgumentParser(
        prog="omni-blocks recipes", description=recipes_command.__doc__
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every recipe and its files")
    copy = commands.add_parser("copy", help="copy a recipe (or one file) to edit it")
    copy.add_argument(
        "name", help="a recipe (omni_diffusion) or one file (omni_diffusion/stage1.yaml)"
    )
    copy.add_argument("destination", type=Path)
    copy.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, files in list_recipes().items():
            print(f"{name}: {', '.join(files)}")
        return
    try:
        written = copy_recipe(args.name, args.destination, overwrite=args.overwrite)
    except (KeyError, FileExistsError) as err:
        parser.error(str(err.args[0]) if err.args else str(err))
    print(f"copied {args.name} to {written}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `omni-blocks` script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "generate":
        generate_command(argv[1:])
    elif argv and argv[0] == "recipes":
        recipes_command(argv[1:])
    else:
        cli(argv)


if __name__ == "__main__":
    main()
