"""The full Omni-Diffusion recipe: three stage configs, their dry run, and generation.

The recipe itself is the three LightningCLI configs that ship with the package
(`omni_blocks/recipes/omni_diffusion/`: Dream-7B + MAGVIT-v2 + GLM-4-Voice), run one after
the other from one directory on a GPU node:

```bash
omni-blocks recipes copy omni_diffusion recipe/
omni-blocks fit --config recipe/stage1.yaml
omni-blocks fit --config recipe/stage2.yaml   # init_from stage 1
omni-blocks fit --config recipe/stage3.yaml   # init_from stage 2
```

This script adds two things around them:

```bash
# offline, on a CPU: the three configs end to end with tiny random stand-ins of the same
# formats (a Dream-format checkpoint, MAGVIT-v2 and GLM-4-Voice tokenizers, manifests),
# two optimiser steps per stage chained through init_from, then one generation per task
python examples/omni_diffusion/run.py --dry-run

# generation with a trained checkpoint and upstream's per-task sampler settings
python examples/omni_diffusion/run.py generate --task t2i \\
    --example '{"caption": "a lighthouse at dusk"}' \\
    --ckpt checkpoints/omni_diffusion/stage3/last.ckpt --out outputs/
```

The dry run changes the configs only through the command line's own overrides (paths of
the stand-ins, a CPU trainer, two steps, four sampling steps), and runs in a temporary
directory so that the configs' relative paths (manifests, checkpoints, logs) resolve there:
stage 2 really starts from the `last.ckpt` stage 1 wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from omni_blocks.cli import OmniCLI, cli
from omni_blocks.data import InpaintingTemplate, ManifestDataModule, TaskTemplate
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.recipes import recipe_path
from omni_blocks.sampling import MaskedDiffusionSampler, omni_diffusion_sampler
from omni_blocks.vocab import Modality

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # standins.py sits next to this script
    sys.path.insert(0, str(HERE))

import standins  # noqa: E402

CONFIGS = recipe_path("omni_diffusion")  # the stage configs, shipped with the package
STAGES = ("stage1", "stage2", "stage3")
CHECKPOINTS = "checkpoints/omni_diffusion"
"""Where the configs' ModelCheckpoint writes (relative to the launch directory)."""


@dataclass(frozen=True)
class GenerationSetting:
    """How one task is generated (upstream `tools/inference.py`).

    Args:
        target_length: positions of the response (None: the template's default, for
            images `image_tokens + 1`).
        num_steps: sampling steps.
        position_penalty: `max_position_penalty` (2.0 for images: the tail penalty).
        guidance_scale: classifier-free guidance (`cfg`).
    """

    target_length: int | None
    num_steps: int
    position_penalty: float = 1.0
    guidance_scale: float = 0.0

    def sampler(self, max_steps: int | None = None) -> MaskedDiffusionSampler:
        steps = self.num_steps if max_steps is None else min(self.num_steps, max_steps)
        return omni_diffusion_sampler(
            steps, position_penalty=self.position_penalty, guidance_scale=self.guidance_scale
        )


GENERATION: dict[str, GenerationSetting] = {
    "t2i": GenerationSetting(None, 260, position_penalty=2.0),
    "s2i": GenerationSetting(None, 260, position_penalty=2.0, guidance_scale=2.0),
    "inpainting": GenerationSetting(None, 260, position_penalty=2.0),  # as t2i: guess
    "spoken_vqa": GenerationSetting(128, 128),
    "vqa": GenerationSetting(64, 64),
    "caption": GenerationSetting(64, 64),  # as VQA: guess (upstream has no caption demo)
    "asr": GenerationSetting(50, 25),
    "tts": GenerationSetting(50, 25),
}
"""Upstream's settings per task: response positions, steps, tail penalty, CFG.

Images take `image_tokens + 1` positions (the codes and `[end_image]`; upstream asks for
260). Upstream's `entropy-penalty` (a repetition penalty for images and spoken VQA) is not
reproduced (see `omni_diffusion_sampler`)."""


# ------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block in `path` (the configs' relative paths resolve there)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """Hide this script's own arguments from LightningCLI (which warns about them)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def load_stage(
    config: str | Path, overrides: Sequence[str] = (), ckpt: str | Path | None = None
) -> OmniCLI:
    """The model and data of a stage config (not fitted), with a checkpoint's weights."""
    with bare_argv():
        run = cli(["--config", str(config), *overrides], run=False)
    if ckpt is not None:
        run.model.load_weights(ckpt)
    return run


def task_templates(data: ManifestDataModule) -> dict[str, TaskTemplate]:
    """The data module's templates, plus zero-shot inpainting (built on text-to-image)."""
    templates = dict(data.templates)
    t2i = templates.get("t2i")
    if t2i is not None:
        templates["inpainting"] = InpaintingTemplate(
            t2i.layout,
            t2i.tokenizer,
            instruction=t2i.instruction,
            image_tokens=t2i.image_tokens,  # type: ignore[attr-defined]
            max_length=t2i.max_length,
            chat=t2i.chat,
        )
    return templates


def inpainting_example(example: Mapping[str, Any]) -> dict[str, Any]:
    """A text-to-image example with the left half of its image codes known."""
    codes = torch.as_tensor(example["image_codes"])
    side = round(codes.numel() ** 0.5)
    known = torch.zeros(side, side, dtype=torch.bool)
    known[:, : side // 2] = True
    return {**example, "known_mask": known.reshape(-1)}


def save_output(
    output: Any, task: str, template: TaskTemplate, data: ManifestDataModule, out: Path
) -> Path:
    """Write a generated output: text as `.txt`, images as `.png`, speech codes as `.npy`.

    Speech codes stay codes: waveforms need GLM-4-Voice's decoder (flow matching + HiFT),
    which omni_blocks wraps but does not ship (`GLM4VoiceTokenizer(decoder=...)`).
    """
    out.mkdir(parents=True, exist_ok=True)
    if template.target_modality is Modality.TEXT:
        path = out / f"{task}.txt"
        path.write_text(str(output) + "\n")
        return path
    codes = torch.as_tensor(output).long()
    if template.target_modality is Modality.IMAGE and data.image_tokenizer is not None:
        tokens = int(data.image_tokenizer.tokens_per_item)
        # An image that ended early cannot be decoded; one whose end slot holds another
        # code instead of [end_image] is decoded from its first `tokens` codes.
        if codes.numel() >= tokens:
            from PIL import Image

            pixels = data.image_tokenizer.decode(codes[None, :tokens])[0]
            array = (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            path = out / f"{task}.png"
            Image.fromarray(array).save(path)
            return path
    path = out / f"{task}.npy"
    np.save(path, codes.numpy())
    return path


def generate(
    module: OmniDiffusionModule,
    data: ManifestDataModule,
    task: str,
    examples: Sequence[Mapping[str, Any]],
    *,
    max_steps: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> list[Any]:
    """Generate `task`'s output for each example with upstream's settings for the task.

    Args:
        module: the trained model.
        data: the stage's data module (templates, tokenizers).
        task: a task name of [`GENERATION`][].
        examples: template examples (strings and local codes).
        max_steps: cap on the sampling steps (the dry run uses 4).
        max_length: cap on the response positions of text and speech tasks.
        seed: seed of the sampler's draws.
    """
    templates = task_templates(data)
    if task not in templates:
        raise ValueError(f"unknown task {task!r}; this config has {sorted(templates)}")
    setting = GENERATION[task]
    length = setting.target_length
    if length is not None and max_length is not None:
        length = min(length, max_length)
    generator = torch.Generator(device=module.device).manual_seed(seed)
    return module.generate(
        templates[task],
        examples,
        target_length=length,
        sampler=setting.sampler(max_steps),
        generator=generator,
        lenient_parse=True,  # upstream's sampler is not restricted to the task's modality
    )


def read_example(
    data: ManifestDataModule, task: str, record: Mapping[str, Any], base: Path
) -> dict[str, Any]:
    """A manifest-style record (files or codes) -> a template example, with the data's
    tokenizers."""
    from omni_blocks.data import load_example

    template = data.templates[task]
    hears = Modality.SPEECH in template.input_modalities
    features_key = template.speech_input.features_key if hears else None
    return load_example(
        record,
        base=base,
        image_tokenizer=data.image_tokenizer,
        speech_tokenizer=data.speech_tokenizer,
        name=f"{task} example",
        speech_front_end=data.speech_front_end,
        features_key=features_key,
        speech_codes=template.target_modality is Modality.SPEECH or (hears and not features_key),
    )


# ------------------------------------------------------------------------------ dry run
def dry_run_overrides(models: Path, *, steps: int = 2, sample_steps: int = 4) -> list[str]:
    """Command-line overrides that point a stage config at the stand-ins in `models`."""
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        f"--trainer.max_steps={steps}",
        "--trainer.accumulate_grad_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--model.backbone.init_args.pretrained={models / 'dream'}",
        f"--model.sampler.init_args.planner.init_args.num_steps={sample_steps}",
        f"--data.init_args.image_tokenizer.init_args.pretrained={models / 'magvitv2'}",
        "--data.init_args.image_tokenizer.init_args.image_size=8",
        f"--data.init_args.speech_tokenizer.init_args.path={models / 'glm-4-voice-tokenizer'}",
        f"--model.speech_encoder.init_args.pretrained={models / 'sensevoice'}",
        "--model.speech_encoder.init_args.attention_heads=2",
        "--model.speech_encoder.init_args.allow_pickle=false",
        "--model.speech_projector.init_args.input_size=16",
        "--model.speech_projector.init_args.hidden_size=32",
        f"--data.init_args.speech_front_end.init_args.cmvn={models / 'sensevoice' / 'am.mvn'}",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
    ]


@dataclass
class DryRunReport:
    """What a dry run did: per stage its steps, last loss and time; per task its output."""

    stages: dict[str, dict[str, Any]]
    outputs: dict[str, Path]
    seconds: float

    def table(self) -> str:
        lines = ["| stage | steps | last loss | init_from | seconds |", "|---|---|---|---|---|"]
        for name, s in self.stages.items():
            lines.append(
                f"| {name} | {s['steps']} | {s['loss']:.3f} | {s['init_from'] or '-'} | "
                f"{s['seconds']:.1f} |"
            )
        lines += ["", "| task | output |", "|---|---|"]
        lines += [f"| {task} | {path.name} |" for task, path in self.outputs.items()]
        lines += ["", f"total: {self.seconds:.1f} s"]
        return "\n".join(lines)


def dry_run(
    workdir: Path, *, steps: int = 2, sample_steps: int = 4, progress: bool = True
) -> DryRunReport:
    """Fit the three stage configs for `steps` steps each on stand-ins, then generate.

    Writes the stand-ins under `workdir/models`, the manifests under
    `workdir/data/omni_diffusion`, and runs each stage with `workdir` as the working
    directory, so checkpoints land in `workdir/checkpoints/omni_diffusion/stageN/` where
    the next stage's `init_from` finds them. Finally checks that stage 3's `last.ckpt`
    holds the fitted weights and generates one output per task (the trained tasks and
    zero-shot inpainting) into `workdir/outputs`, with upstream's per-task settings capped
    at `sample_steps` steps and 8 positions for text and speech.

    Raises:
        RuntimeError: a stage did not train `steps` steps or wrote no `last.ckpt`, or a task
            produced no output.
    """
    from omni_blocks.vocab import VocabLayout

    start = time.perf_counter()
    workdir = Path(workdir).resolve()
    models = workdir / "models"
    standins.tiny_dream(models / "dream")
    standins.tiny_magvit(models / "magvitv2")
    standins.tiny_glm4voice(models / "glm-4-voice-tokenizer")
    standins.tiny_sensevoice(models / "sensevoice")
    standins.write_manifests(workdir, VocabLayout.omni_diffusion(), image_tokens=16)
    overrides = dry_run_overrides(models, steps=steps, sample_steps=sample_steps)
    report = DryRunReport(stages={}, outputs={}, seconds=0.0)
    with working_directory(workdir):
        for stage in tqdm(STAGES, desc="dry run: stages", disable=not progress):
            began = time.perf_counter()
            with bare_argv():
                run = cli(["fit", "--config", str(CONFIGS / f"{stage}.yaml"), *overrides])
            last = Path(CHECKPOINTS) / stage / "last.ckpt"
            if run.trainer.global_step != steps or not last.is_file():
                raise RuntimeError(
                    f"{stage}: trained {run.trainer.global_step} of {steps} steps; "
                    f"last.ckpt {'exists' if last.is_file() else 'is missing'}"
                )
            report.stages[stage] = {
                "steps": run.trainer.global_step,
                "loss": float(run.trainer.callback_metrics["train/loss"]),
                "init_from": run.model.init_from,
                "seconds": time.perf_counter() - began,
            }
        # Generation uses stage 3 as fitted; its last.ckpt holds the same weights (checked),
        # which is what `generate` loads with load_stage(config, ckpt=...).
        state = torch.load(
            Path(CHECKPOINTS) / "stage3" / "last.ckpt", map_location="cpu", weights_only=True
        )["state_dict"]
        model = run.model
        if any(not torch.equal(v.cpu(), state[k]) for k, v in model.state_dict().items()):
            raise RuntimeError("stage3/last.ckpt differs from the fitted stage 3 model")
        data = run.datamodule
        assert isinstance(data, ManifestDataModule)
        datasets = dict(zip(data.train.names, data.train.datasets, strict=True))
        tasks = [*datasets, "inpainting"]
        templates = task_templates(data)
        for task in tqdm(tasks, desc="dry run: generate", disable=not progress):
            source = datasets["t2i" if task == "inpainting" else task]
            example = source.example(0)
            if task == "inpainting":
                example = inpainting_example(example)
            (output,) = generate(model, data, task, [example], max_steps=sample_steps, max_length=8)
            report.outputs[task] = save_output(
                output, task, templates[task], data, workdir / "outputs"
            )
    missing = sorted(set(tasks) - set(report.outputs))
    if missing:
        raise RuntimeError(f"no output for {missing}")
    report.seconds = time.perf_counter() - start
    return report


# ------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="offline end-to-end check")
    parser.add_argument("--keep", type=Path, help="dry run: work in this folder and keep it")
    sub = parser.add_subparsers(dest="command")
    gen = sub.add_parser("generate", help="generate with a trained checkpoint")
    gen.add_argument("--task", required=True, choices=sorted(GENERATION))
    gen.add_argument(
        "--example",
        required=True,
        help="a manifest-style JSON record (strings, image/audio paths or codes)",
    )
    gen.add_argument("--ckpt", required=True, type=Path, help="a stage's last.ckpt")
    gen.add_argument("--config", type=Path, default=CONFIGS / "stage3.yaml")
    gen.add_argument("--out", type=Path, default=Path("outputs/omni_diffusion"))
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen.add_argument("--max-steps", type=int, help="cap on the task's sampling steps")
    gen.add_argument("overrides", nargs="*", help="config overrides, e.g. --data.init_args...")
    args, extra = parser.parse_known_args(argv)

    if args.dry_run:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            report = dry_run(args.keep)
        else:
            with tempfile.TemporaryDirectory(prefix="omni_diffusion_dry_run_") as tmp:
                report = dry_run(Path(tmp))
        print(report.table())
        return 0
    if args.command == "generate":
        run = load_stage(args.config, [*args.overrides, *extra], ckpt=args.ckpt)
        module = run.model.to(args.device)
        data = run.datamodule
        assert isinstance(data, ManifestDataModule)
        example = read_example(data, args.task, json.loads(args.example), Path.cwd())
        if args.task == "inpainting":
            example = inpainting_example(example)
        (output,) = generate(module, data, args.task, [example], max_steps=args.max_steps)
        path = save_output(output, args.task, task_templates(data)[args.task], data, args.out)
        print(output if isinstance(output, str) else f"wrote {path}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
