"""Levers of the miniature's diffusion training, measured side by side on stage 1.

Each variant trains a fresh diffusion model of the `mini` size on stage 1's mixture
(text-to-image, captioning, VQA) for the same steps, data order and seed, then scores
captioning, VQA and text-to-image on the same held-out examples with 8 sampling steps and
one-shot (1 step), each with a 95% bootstrap interval. What is varied is how training
corrupts a row:

| variant | mask strategy | time distribution |
|---|---|---|
| per-row time | `AttenuatedTailPadMasking(0.6)` | `AntitheticTime` (the recipe before) |
| per-token time | `PerTokenTimeMasking(0.6)` (upstream's rule) | (unused) |
| per-row, 25% / 50% fully masked | `AttenuatedTailPadMasking(0.6)` | `FullMaskShareTime` |

    PYTHONPATH=src python examples/mini_omni/levers.py --steps 400 --out outputs/levers

Writes `levers.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mini_omni.presets import PRESETS
from mini_omni.run import (
    LR_SCHEDULE,
    OPTIMIZER,
    STAGES,
    Run,
    backbone,
    diffusion_generate,
    fit,
    parse_args,
    prepare_data,
    sampler,
)
from mini_omni.stats import interval
from mini_omni.tasks import balanced_subset
from omni_blocks.masking import AttenuatedTailPadMasking, PerTokenTimeMasking
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.schedules import AntitheticTime, FullMaskShareTime, LinearSchedule

VARIANTS: dict[str, dict[str, Any]] = {
    "per-row time": {"mask": AttenuatedTailPadMasking(0.6), "time": AntitheticTime()},
    "per-token time": {"mask": PerTokenTimeMasking(0.6), "time": AntitheticTime()},
    "per-row, 25% fully masked": {
        "mask": AttenuatedTailPadMasking(0.6), "time": FullMaskShareTime(0.25)},
    "per-row, 50% fully masked": {
        "mask": AttenuatedTailPadMasking(0.6), "time": FullMaskShareTime(0.5)},
}  # fmt: skip
TASKS = ("caption", "vqa", "t2i")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("outputs/levers"))
    own, rest = parser.parse_known_args(argv)
    args = parse_args(rest)
    run = Run(args=args, preset=PRESETS[args.preset])
    torch.set_num_threads(args.threads)
    data = prepare_data(run)
    stage = STAGES[0]
    results: dict[str, Any] = {"steps": own.steps, "variants": {}}
    for name in own.variants:
        variant = VARIANTS[name]
        torch.manual_seed(run.seed)
        started = time.time()
        module = OmniDiffusionModule(
            backbone=backbone(data.tokenizers, run.preset),
            layout=data.tokenizers.layout,
            schedule=LinearSchedule(),
            time_distribution=variant["time"],
            mask_strategy=variant["mask"],
            sampler=sampler(8),
            optimizer=OPTIMIZER,
            lr_schedule=LR_SCHEDULE,
            normalization="sequence",
            seed=run.seed,
        )
        fit(run, data, module, stage.mixture, own.steps)
        seconds = time.time() - started
        row: dict[str, Any] = {"train_seconds": seconds}
        for steps in (8, 1):
            generate = diffusion_generate(module, sampler(steps), run.seed)
            for task in TASKS:
                examples = balanced_subset(data.tasks.test[task], own.examples)
                length = data.tasks.target_lengths[task]
                result = data.score(
                    task, examples, generate(task, data.templates[task], examples, length)
                )
                row[f"{task}, {steps} steps"] = interval(result).as_dict()
        results["variants"][name] = row
        print(
            name,
            {k: round(v["mean"], 3) for k, v in row.items() if isinstance(v, dict)},
            flush=True,
        )
    own.out.mkdir(parents=True, exist_ok=True)
    (own.out / "levers.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
