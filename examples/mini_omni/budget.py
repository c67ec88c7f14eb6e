"""Quality against training compute, both models: the compute multiple parity would take.

`run.py` gives both models the same 2,600 optimiser steps (preset `mini`). This trains the
causal baseline for fractions of that budget (its final-stage mixture, the same batch,
learning-rate schedule and seed) and the diffusion model for multiples of it (every stage's
steps multiplied, the same mixtures), scores every task on the same held-out examples as
`run.py` with 95% bootstrap intervals, and draws quality against training steps for both
models in one picture per task. Where the two curves cross is the compute multiple at which
diffusion reaches the baseline; where they do not, the table says so.

    python examples/mini_omni/budget.py --baseline-steps 325 650 1300 2600 \\
        --diffusion-multiples 1 2 4 --out outputs/budget

Each run is a separate training with its own learning-rate schedule (not a checkpoint of a
longer run), so every point is what that budget buys. Writes `budget.md`, `budget.json` and
`budget.png` in `--out`.
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

from mini_omni.evaluation import GenerateFn
from mini_omni.presets import PRESETS
from mini_omni.run import (
    SHARED_TASKS,
    Data,
    Run,
    autoregressive_generate,
    diffusion_generate,
    parse_args,
    prepare_data,
    task_samplers,
    test_sets,
    train_baseline,
    train_diffusion,
)
from mini_omni.stats import interval


def score_all(run: Run, data: Data, generate: GenerateFn) -> dict[str, Any]:
    """Every shared task on `run.py`'s held-out examples, with its 95% interval."""
    test = test_sets(run, data)
    scores: dict[str, Any] = {}
    for task in SHARED_TASKS:
        length = data.tasks.target_lengths[task]
        generation = generate(task, data.templates[task], test[task], length)
        scores[task] = interval(data.score(task, test[task], generation)).as_dict()
    return scores


def crossing(points: dict[str, list[dict[str, Any]]], task: str) -> str:
    """The smallest diffusion budget that reaches the baseline's full-budget figure on `task`
    (WER: no higher), as a multiple of the baseline's steps, or how far the largest falls short."""
    lower_better = task == "asr"
    full = max(points["autoregressive"], key=lambda p: p["steps"])
    target = full["scores"][task]["mean"]
    for p in sorted(points["diffusion"], key=lambda p: p["steps"]):
        value = p["scores"][task]["mean"]
        if (value <= target) if lower_better else (value >= target):
            return f"{p['steps'] / full['steps']:g}x"
    best = max(points["diffusion"], key=lambda p: p["steps"])
    gap = best["scores"][task]["mean"] - target
    return f"> {best['steps'] / full['steps']:g}x (gap {gap:+.3f})"


def plot(points: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Quality against training steps, one panel per task, both models, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SHARED_TASKS), figsize=(3.0 * len(SHARED_TASKS), 3.0))
    for ax, task in zip(axes, SHARED_TASKS, strict=True):
        for model, colour in (("diffusion", "tab:blue"), ("autoregressive", "tab:orange")):
            rows = sorted(points[model], key=lambda p: p["steps"])
            if not rows:
                continue
            x = [p["steps"] for p in rows]
            y = [p["scores"][task]["mean"] for p in rows]
            low = [p["scores"][task]["mean"] - p["scores"][task]["low"] for p in rows]
            high = [p["scores"][task]["high"] - p["scores"][task]["mean"] for p in rows]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=colour, label=model)
        ax.set_xscale("log", base=2)
        ax.set_title(task + (" (WER)" if task == "asr" else ""))
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("quality")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-steps", type=int, nargs="*", default=[325, 650, 1300, 2600])
    parser.add_argument(
        "--diffusion-multiples",
        type=float,
        nargs="*",
        default=[1, 2, 4],
        help="diffusion budgets as multiples of the preset's stage steps",
    )
    own, rest = parser.parse_known_args(argv)
    args = parse_args(rest)
    preset = PRESETS[args.preset]
    torch.set_num_threads(args.threads)
    data = prepare_data(Run(args=args, preset=preset))
    points: dict[str, list[dict[str, Any]]] = {"autoregressive": [], "diffusion": []}
    for steps in own.baseline_steps:
        run = Run(args=args, preset=replace(preset, ar_steps=steps))
        model, _ = train_baseline(run, data)
        scores = score_all(run, data, autoregressive_generate(model))
        points["autoregressive"].append({"steps": steps, "seconds": run.timings[
            "autoregressive training"], "scores": scores})  # fmt: skip
    for k in own.diffusion_multiples:
        stages = tuple(max(1, round(k * s)) for s in preset.stage_steps)
        run = Run(args=args, preset=replace(preset, stage_steps=stages))  # type: ignore[arg-type]
        module, _ = train_diffusion(run, data)
        scores = score_all(
            run, data, diffusion_generate(module, task_samplers(data, 8, run.guided), run.seed)
        )
        points["diffusion"].append({"steps": sum(stages), "seconds": run.timings[
            "diffusion training"], "scores": scores})  # fmt: skip

    args.out.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"preset": args.preset, "seed": args.seed, **points}
    rows = []
    for model, runs in points.items():
        for p in sorted(runs, key=lambda p: p["steps"]):
            cells = " | ".join(str(_ci(p["scores"][t])) for t in SHARED_TASKS)
            share = p["steps"] / preset.ar_steps
            rows.append(f"| {model} | {p['steps']} ({share:g}x) | {p['seconds']:.0f} | {cells} |")
    header = "| model | training steps | seconds | " + " | ".join(SHARED_TASKS) + " |"
    table = "\n".join([header, "|" + "---|" * (len(SHARED_TASKS) + 3), *rows])
    text = (
        f"# Quality against training steps\n\nPreset `{args.preset}`, seed {args.seed}; "
        f"`run.py` gives each model {preset.ar_steps} steps (1x). Diffusion: 8 sampling "
        "steps; the baseline: greedy. ASR: word error rate (lower is better). In brackets: "
        "95% bootstrap intervals over the examples.\n\n"
        f"{table}\n\n![quality against training steps](budget.png)\n"
    )
    if points["autoregressive"] and points["diffusion"]:
        out["parity"] = {t: crossing(points, t) for t in SHARED_TASKS}
        cells = " | ".join(out["parity"][t] for t in SHARED_TASKS)
        text += (
            "\nThe smallest diffusion budget that reaches the baseline's largest-budget figure "
            "(mean over the examples), as a multiple of the baseline's steps:\n\n"
            f"| {' | '.join(SHARED_TASKS)} |\n|{'---|' * len(SHARED_TASKS)}\n| {cells} |\n"
        )
        plot(points, args.out / "budget.png")
    (args.out / "budget.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "budget.md").write_text(text)
    print(text, flush=True)
    return out


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:.3f} [{d['low']:.2f}, {d['high']:.2f}]"


if __name__ == "__main__":
    main()
