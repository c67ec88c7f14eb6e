"""Quality against training compute: the causal baseline trained on a fraction of the budget.

`run.py` gives both models the same 2,600 optimiser steps. This trains the baseline alone
for fewer steps (its final-stage mixture, the same batch, learning-rate schedule and seed)
and scores every task on the same held-out examples with 95% bootstrap intervals, so the
report's diffusion figures can be placed on the baseline's curve: when the baseline at a
quarter of the steps already beats the diffusion model at the full budget, diffusion needs
more than four times the compute for that task.

    PYTHONPATH=src python examples/mini_omni/budget.py --steps 325 650 1300 \\
        --out outputs/budget

Writes `budget.md` and `budget.json` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mini_omni.presets import PRESETS
from mini_omni.run import Run, autoregressive_generate, parse_args, prepare_data, train_baseline
from mini_omni.stats import interval
from mini_omni.tasks import TASKS, balanced_subset


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[325, 650, 1300])
    own, rest = parser.parse_known_args(argv)
    args = parse_args(rest)
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    data = prepare_data(Run(args=args, preset=preset))
    tasks = [t for t in TASKS if t != "inpainting"]
    out: dict[str, Any] = {"preset": args.preset, "seed": args.seed, "full": preset.ar_steps}
    rows = []
    for steps in own.steps:
        run = Run(args=args, preset=replace(preset, ar_steps=steps))
        torch.manual_seed(run.seed)
        model, _ = train_baseline(run, data)
        generate = autoregressive_generate(model)
        scores: dict[str, Any] = {}
        for task in tasks:
            examples = balanced_subset(data.tasks.test[task], preset.eval_examples)
            length = data.tasks.target_lengths[task]
            generation = generate(task, data.templates[task], examples, length)
            scores[task] = interval(data.score(task, examples, generation)).as_dict()
        out[str(steps)] = scores
        cells = " | ".join(f"{scores[t]['mean']:.3f}" for t in tasks)
        rows.append(f"| {steps} ({steps / preset.ar_steps:.2f}x) | {cells} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budget.json").write_text(json.dumps(out, indent=2) + "\n")
    header = "| baseline steps | " + " | ".join(tasks) + " |"
    table = "\n".join([header, "|" + "---|" * (len(tasks) + 1), *rows])
    (args.out / "budget.md").write_text(
        f"# The causal baseline at a fraction of the budget\n\nPreset `{args.preset}`, seed "
        f"{args.seed}; the full budget is {preset.ar_steps} steps. ASR: word error rate.\n\n"
        f"{table}\n"
    )
    print(table, flush=True)
    return out


if __name__ == "__main__":
    main()
