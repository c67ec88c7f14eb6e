"""Writing the results: `report.md`, `images.png`, `quality_vs_nfe.png` and WAV samples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch
from einops import rearrange, repeat
from torch import Tensor

from omni_blocks.tokenizers.audio import write_wav

from .tokenizing import Tokenizers

MASKED_RGB = (0.55, 0.75, 0.95)  # light blue: a position still holding [MASK]


def _rgb(images: Tensor) -> Tensor:
    """`(n, 1, h, w)` grey in `[0, 1]` -> `(n, h, w, 3)`, white digit strokes on black."""
    return repeat(images.float().clamp(0, 1), "n 1 h w -> n h w c", c=3)


def partial_images(codes: Tensor, unmasked: Tensor, tokenizers: Tokenizers) -> Tensor:
    """RGB images `(n, 8, 8, 3)` showing only the codes flagged in `unmasked` (n, tokens)."""
    rgb = _rgb(tokenizers.image.decode(codes))
    g = tokenizers.image.grid_size
    p = tokenizers.image.patch_size
    shown = rearrange(unmasked, "n (h w) -> n h w", h=g)
    shown = repeat(shown, "n h w -> n (h p1) (w p2) 1", p1=p, p2=p)
    blue = torch.tensor(MASKED_RGB).expand_as(rgb)
    return torch.where(shown, rgb, blue)


def save_image_grid(
    path: Path,
    rows: Sequence[tuple[str, Tensor]],
    trajectories: Sequence[tuple[str, Tensor, Tensor]],
    tokenizers: Tokenizers,
) -> Path:
    """A grid of digit rows (label, `(10, 1, 8, 8)` images) and unmasking trajectories.

    Each trajectory is `(label, codes (tokens,), step (tokens,))` with the sampling step at
    which each code was unmasked; it is drawn as the image after every step, masked
    positions in light blue.
    """
    columns = 10
    steps = [int(step.max()) + 1 for _, _, step in trajectories]
    traj_cols = max(steps, default=0) + 1
    width = max(columns, traj_cols)
    n_rows = len(rows) + len(trajectories)
    fig, axes = plt.subplots(
        n_rows, width, figsize=(width * 0.75 + 2.2, n_rows * 0.8 + 0.3), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, (label, images) in enumerate(rows):
        rgb = images if images.shape[-1] == 3 else _rgb(images)
        for c, img in enumerate(rgb[:columns]):
            axes[r, c].imshow(img.numpy(), interpolation="nearest")
        axes[r, 0].text(-1.0, 3.5, label, ha="right", va="center", fontsize=8)
    for k, (label, codes, step) in enumerate(trajectories):
        r = len(rows) + k
        frames = [step < s for s in range(steps[k] + 1)]
        unmasked = torch.stack(frames)
        images = partial_images(repeat(codes, "t -> n t", n=len(frames)), unmasked, tokenizers)
        for c, img in enumerate(images):
            axes[r, c].imshow(img.numpy(), interpolation="nearest")
        axes[r, 0].text(-1.0, 3.5, label, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.2, right=0.99, top=0.98, bottom=0.02, wspace=0.08, hspace=0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_quality_plot(
    path: Path, sweep: dict[str, list[dict[str, Any]]], metrics: dict[str, str]
) -> Path:
    """Quality against forward passes: one panel per task, diffusion points and AR points."""
    tasks = list(sweep)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        diff = [row for row in sweep[task] if row["model"] == "diffusion"]
        ar = [row for row in sweep[task] if row["model"] == "autoregressive"]
        ax.plot([r["nfe"] for r in diff], [r["value"] for r in diff], "o-", label="diffusion")
        for r in diff:
            ax.annotate(
                r["setting"],
                (r["nfe"], r["value"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.plot(
            [r["nfe"] for r in ar],
            [r["value"] for r in ar],
            "s",
            color="C3",
            label="autoregressive",
        )
        ax.set_xscale("log", base=2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("forward passes per sample (NFE)", fontsize=8)
        ax.set_ylabel(metrics[task], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_wavs(folder: Path, waves: dict[str, Tensor | None], sample_rate: int) -> list[Path]:
    """Write each named waveform as `folder/name.wav` (skips empty outputs)."""
    paths = []
    for name, wave in waves.items():
        if wave is not None and wave.numel():
            peak = float(wave.abs().max()) or 1.0
            paths.append(write_wav(folder / f"{name}.wav", wave / max(peak, 1.0), sample_rate))
    return paths


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _first_per_digit(examples: Sequence[dict[str, Any]]) -> list[int]:
    """Index of the first example of each digit 0-9 (skipping absent digits)."""
    seen: dict[int, int] = {}
    for i, e in enumerate(examples):
        seen.setdefault(int(e.get("digit", -1)), i)
    return [seen[d] for d in range(10) if d in seen]


@dataclass
class Evaluation:
    """What the evaluation phases measured, for the report.

    Attributes:
        results: model -> task -> `TaskResult`.
        agreement: model -> the text / spoken prompt agreement of its images.
        test: task -> the held-out examples it was scored on.
        sweep: task -> rows of the sampling-steps sweep.
        training: run name -> its training log line.
        sensitivity: task -> model -> the mean KL (nats) of its predictions when the
            prompt's input is swapped for another example's.
        curves: model -> its learning curves (`curves.Curves`), measured while it trained.
        guidance: rows of the guidance-strength diagnostic (scale, t2i and s2i quality and
            NFE).
    """

    results: dict[str, dict[str, Any]]
    agreement: dict[str, dict[str, float]]
    test: dict[str, list[dict[str, Any]]]
    sweep: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)
    guidance: list[dict[str, Any]] = field(default_factory=list)


def write_report(out: Path, run: Any, data: Any, evaluation: Evaluation) -> dict[str, Any]:
    """Write `report.md`, `images.png`, `quality_vs_nfe.png`, `training_loss.png`,
    `quality_vs_steps.png`, `wavs/` and `results.json`.

    Args:
        out: the folder.
        run: the run's settings and clock (`run.Run`).
        data: the corpus, tokenizers and judges (`run.Data`).
        evaluation: the scores.
    """
    import os
    import time

    from .evaluation import as_images, image_codes, speech_waveforms

    args, preset, timings = run.args, run.preset, run.timings
    total_seconds = time.time() - run.started
    load = (run.load_at_start, os.getloadavg()[0])
    tokenizers, corpus, judges = data.tokenizers, data.corpus, data.judges
    corpus_summary = corpus.summary()
    results, agreement, sweep = evaluation.results, evaluation.agreement, evaluation.sweep
    test, training = evaluation.test, evaluation.training
    diffusion, autoregressive = results["diffusion"], results["autoregressive"]

    # images: one column per digit, and unmasking trajectories of text-to-image samples
    rows: list[tuple[str, Tensor]] = []
    test_images, test_labels = corpus.images("test")
    real = [int((test_labels == d).nonzero()[0, 0]) for d in range(10)]
    rows.append(("real (held out)", test_images[real]))
    for label, result in (
        ("text-to-image", diffusion["t2i"]),
        ("speech-to-image", diffusion["s2i"]),
        ("AR text-to-image", autoregressive["t2i"]),
    ):
        idx = _first_per_digit(test[result.task])
        images, _ = as_images([result.generation.outputs[i] for i in idx], tokenizers)
        rows.append((label, images))
    idx = _first_per_digit(test["inpainting"])
    inpaint = [test["inpainting"][i] for i in idx]
    known = torch.stack([e["known_mask"] for e in inpaint])
    codes = torch.stack([e["image_codes"] for e in inpaint])
    rows.append(("inpainting input", partial_images(codes, known, tokenizers)))
    outputs = [diffusion["inpainting"].generation.outputs[i] for i in idx]
    rows.append(("inpainted", as_images(outputs, tokenizers)[0]))
    trajectories = []
    gen = diffusion["t2i"].generation
    tokens = tokenizers.image.tokens_per_item
    if gen.trajectories:
        for i in _first_per_digit(test["t2i"])[:4]:
            codes_i = image_codes(gen.outputs[i], tokens)
            if codes_i is not None:
                step = gen.trajectories[i][:tokens]
                digit = int(test["t2i"][i]["digit"])
                trajectories.append((f"unmasking '{digit}'", codes_i, step))
    save_image_grid(out / "images.png", rows, trajectories, tokenizers)

    # speech samples
    waves: dict[str, Tensor | None] = {}
    for name, result in (
        ("diffusion", diffusion["tts"]),
        ("autoregressive", autoregressive["tts"]),
    ):
        idx = _first_per_digit(test["tts"])
        generated = speech_waveforms([result.generation.outputs[i] for i in idx], tokenizers)
        for i, wave in zip(idx, generated, strict=True):
            waves[f"tts_{name}_{test['tts'][i]['text']}"] = wave
    for i in _first_per_digit(test["tts"]):
        text = test["tts"][i]["text"]
        utterance = next(u for u in corpus.speech("test", "word") if u.text == text)
        waves[f"real_{utterance.text}_{utterance.voice.replace('+', '-')}"] = utterance.waveform
    wavs = save_wavs(out / "wavs", waves, tokenizers.speech.sample_rate)

    metrics = {task: rows_[0]["metric"] for task, rows_ in _metric_names(results, sweep).items()}
    save_quality_plot(out / "quality_vs_nfe.png", sweep, metrics)
    curves = evaluation.curves
    curve_files = []
    if curves:
        from .curves import plot_quality_vs_steps, plot_training_loss

        plot_training_loss(curves, out / "training_loss.png")
        lower_better = {t for t, r in diffusion.items() if "WER" in r.metric}
        plot_quality_vs_steps(curves, lower_better, out / "quality_vs_steps.png")
        curve_files = ["training_loss.png", "quality_vs_steps.png"]

    # the tables
    from .stats import interval

    main_rows = []
    for task, r in diffusion.items():
        a = autoregressive.get(task)
        main_rows.append(
            [
                task,
                r.metric,
                str(interval(r)),
                f"{r.nfe:.1f}",
                str(interval(a)) if a else "-",
                f"{a.nfe:.1f}" if a else "-",
                r.n,
            ]
        )
    sensitivity_rows = [
        [task, f"{v['diffusion']:.3f}", f"{v['autoregressive']:.3f}" if "autoregressive" in v
         else "-"]
        for task, v in evaluation.sensitivity.items()
    ]  # fmt: skip
    agreement_rows = [[k, v["same digit"], v["same codes"]] for k, v in agreement.items()]
    sweep_rows = [
        [task, row["model"], row["setting"], f"{row['nfe']:.1f}", row["value"]]
        for task, rows_ in sweep.items()
        for row in rows_
    ]
    train_rows = [
        [name, v["steps"], f"{v['seconds']:.0f}", v["final loss"]] for name, v in training.items()
    ]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    curve_rows = [
        [model, step, *(dict(c.quality[t]).get(step, "-") for t in sorted(c.quality))]
        for model, c in curves.items()
        for step in sorted({s for points in c.quality.values() for s, _ in points})
    ]
    verdict_rows = verdict(results, agreement)
    guidance_rows = [
        [g["scale"], g["t2i"], f"{g['t2i nfe']:.0f}", g["s2i"], f"{g['s2i nfe']:.0f}"]
        for g in evaluation.guidance
    ]
    guidance_section = (
        [
            f"Prompt dropout ({args.prompt_dropout} of the image tasks' training rows) and "
            "classifier-free guidance strength (a diagnostic: the recipe's scales are fixed in "
            "advance, speech-to-image at upstream's 2.0, the other tasks at 0), 8 steps, on the "
            "first held-out examples; the unconditional pass reads the empty prompt that prompt "
            "dropout trained on. Guidance doubles the forward passes.",
            markdown_table(["scale", "t2i", "NFE", "s2i", "NFE"], guidance_rows),
        ]
        if guidance_rows
        else []
    )
    curve_tasks = sorted({t for c in curves.values() for t in c.quality})
    curve_seconds = ", ".join(f"{m} {c.seconds:.0f} s" for m, c in curves.items())
    curve_section = (
        [
            "## Learning curves",
            "Both models measured while they train (the training itself is the same without "
            "the measurements; their time, included in the training times: "
            f"{curve_seconds}). Left: each model's loss per task on a fixed probe of "
            f"{preset.probe_examples} training examples per task, every {preset.curve_every} "
            "steps (the diffusion model's stage ends dashed; a task's loss before its stage "
            "is that of an untrained task). The two losses are different quantities "
            "(masked-token against next-token cross-entropy): compare shapes, not heights.",
            "![training loss per task](training_loss.png)",
            f"Held-out quality ({preset.curve_examples} examples per task, 8 sampling steps / "
            "greedy) against training steps: how much training each model needs for each "
            "task. `examples/mini_omni/budget.py` trains separate runs at other budgets "
            "(beyond this run's) for the compute multiple.",
            markdown_table(["model", "step", *curve_tasks], curve_rows),
            "![quality against training steps](quality_vs_steps.png)",
        ]
        if curves
        else []
    )
    sections = [
        "# Mini Omni-Diffusion: results",
        f"Preset `{args.preset}`: {preset.hidden_size}-wide, {preset.num_layers}-layer backbone, "
        f"batch {preset.batch_size}, {args.threads} CPU threads, seed {args.seed}. "
        f"**{total_seconds:.0f} s end to end** ({phases}; machine load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end). "
        "Written by `examples/mini_omni/run.py`.",
        "## Results",
        "Held-out digits and held-out voices. *Diffusion*: the Omni-Diffusion sampler with 8 "
        "steps (entropy order, greedy tokens, top-p 0.9). *Autoregressive*: the same backbone "
        f"with causal attention, trained for {preset.ar_steps} steps on the final stage's "
        f"mixture (diffusion: {preset.diffusion_steps} over its three stages), greedy "
        "decoding. NFE: forward passes per sample. Images and speech are scored by judges "
        "trained on real data only (see below). Inpainting is zero-shot: the model never "
        "trained on it. In brackets: 95% bootstrap intervals over the examples.",
        markdown_table(
            ["task", "metric", "diffusion", "NFE", "autoregressive", "NFE", "n"], main_rows
        ),
        "Issue 21's goals, one per row: *gap* is diffusion minus the baseline on the same "
        "examples, with a 95% paired bootstrap interval (for WER, lower is better: a gap "
        "above 0 is worse). *met*: yes when the goal holds on the means; 'not shown' when "
        "the means meet it but the interval does not exclude failing.",
        markdown_table(["goal", "diffusion", "target", "gap [95%]", "met"], verdict_rows),
        "Is the image drawn from a spoken prompt the one drawn from the same text prompt? "
        "(Paired prompts: 'draw a seven' written and spoken in a held-out voice.)",
        markdown_table(["model", "judged the same digit", "identical image codes"], agreement_rows),
        "Does the model listen to its prompt? Mean KL divergence (nats) between the "
        "predictions for the response's first position (the baseline: its first generated "
        "token; diffusion: every response position, fully masked, averaged) given the "
        "example's prompt and given another example's input (a different digit or sentence); "
        "near 0: the prompt is ignored.",
        markdown_table(["task", "diffusion", "autoregressive"], sensitivity_rows),
        "Zero-shot inpainting: the judge reads the right digit in "
        f"{diffusion['inpainting'].extra.get('known half alone', float('nan')):.3f} of the "
        "half images alone (bottom half blank), in "
        f"{diffusion['inpainting'].value:.3f} after completion with the text prompt, and in "
        f"{diffusion['inpainting, no prompt'].value:.3f} after completion without it.",
        "## Quality against forward passes",
        "Diffusion with 1 to N sampling steps and with Fast-dLLM's confidence threshold (every "
        "token above 0.9 at once), against the baseline's one token per forward pass.",
        markdown_table(["task", "model", "decoding", "NFE", "quality"], sweep_rows),
        "![quality against NFE](quality_vs_nfe.png)",
        *guidance_section,
        *curve_section,
        "## Images",
        "Rows: a real held-out digit of each class; the diffusion model's text-to-image and "
        "speech-to-image samples; the baseline's text-to-image; zero-shot inpainting (the "
        "bottom half of the code grid unknown, in blue) and its completion; unmasking "
        "trajectories of text-to-image (the image after each sampling step; blue: still "
        "`[MASK]`).",
        "![images](images.png)",
        "## Speech",
        "`wavs/`: each digit word spoken by both models (text-to-speech codes turned into "
        "audio by Griffin-Lim) and by a held-out espeak-ng voice: "
        + ", ".join(p.name for p in wavs)
        + ".",
        "## How it was measured",
        "Judges, fitted on real training data only and never shown generated data; their "
        "accuracy on real held-out data, and on real data passed through the tokenizers (the "
        "best a generator can reach):",
        markdown_table(["judge", "accuracy"], [[k, v] for k, v in judges.items()]),
        "Corpus: " + ", ".join(f"{v} {k}" for k, v in corpus_summary.items()) + ".",
        "Training (each diffusion stage starts from the previous one's weights):",
        markdown_table(["model, stage", "steps", "seconds", "final loss"], train_rows),
    ]
    text = "\n\n".join(sections) + "\n"
    (out / "report.md").write_text(text)
    report = {
        "preset": args.preset,
        "seconds": total_seconds,
        "timings": timings,
        "judges": judges,
        "training": training,
        "results": {
            model: {
                task: {
                    "metric": r.metric,
                    "value": r.value,
                    "nfe": r.nfe,
                    "n": r.n,
                    "interval": [interval(r).low, interval(r).high],
                    **r.extra,
                }
                for task, r in by_task.items()
            }
            for model, by_task in results.items()
        },
        "agreement": agreement,
        "verdict": [
            dict(zip(["goal", "diffusion", "target", "gap", "met"], row, strict=True))
            for row in verdict_rows
        ],
        "sensitivity": evaluation.sensitivity,
        "sweep": sweep,
        "guidance": evaluation.guidance,
        "curves": {model: c.as_dict() for model, c in curves.items()},
        "files": ["report.md", "images.png", "quality_vs_nfe.png", *curve_files]
        + [f"wavs/{p.name}" for p in wavs],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def verdict(
    results: dict[str, dict[str, Any]], agreement: dict[str, dict[str, float]]
) -> list[list[Any]]:
    """Issue 21's goals, each with the diffusion figure, its target, the gap and whether it
    is met: parity with the baseline per task (paired bootstrap), forward passes on image
    and speech generation, speech-to-image against text-to-image, prompt agreement, and
    zero-shot inpainting."""
    from .stats import paired_difference

    diffusion, autoregressive = results["diffusion"], results["autoregressive"]
    rows: list[list[Any]] = []
    for task, a in autoregressive.items():
        d = diffusion[task]
        gap = paired_difference(d, a)
        lower_better = bool(d.weights)  # WER
        sign = -1.0 if lower_better else 1.0
        met = sign * gap.mean >= 0
        sure = sign * (gap.high if lower_better else gap.low) >= 0
        verdict_ = ("yes" if sure else "not shown") if met else "no"
        rows.append([f"{task}: at least the baseline" + (" (WER)" if lower_better else ""),
                     f"{d.value:.3f}", f"{a.value:.3f}", str(gap), verdict_])  # fmt: skip
    for task in ("t2i", "s2i", "tts"):
        d, a = diffusion[task], autoregressive[task]
        rows.append([f"{task}: no more forward passes than the baseline", f"{d.nfe:.1f}",
                     f"{a.nfe:.1f}", "-", "yes" if d.nfe <= a.nfe else "no"])  # fmt: skip
    gap_s2i = diffusion["s2i"].value - diffusion["t2i"].value
    rows.append(["s2i within 0.05 of t2i", f"{diffusion['s2i'].value:.3f}",
                 f">= {diffusion['t2i'].value - 0.05:.3f}", f"{gap_s2i:+.3f}",
                 "yes" if gap_s2i >= -0.05 else "no"])  # fmt: skip
    same = agreement["diffusion"]["same digit"]
    rows.append(["same digit for paired written / spoken prompts", f"{same:.3f}", ">= 0.8",
                 f"{same - 0.8:+.3f}", "yes" if same >= 0.8 else "no"])  # fmt: skip
    inpaint = diffusion["inpainting"].value
    rows.append(["zero-shot inpainting", f"{inpaint:.3f}", ">= 0.85", f"{inpaint - 0.85:+.3f}",
                 "yes" if inpaint >= 0.85 else "no"])  # fmt: skip
    return rows


def _metric_names(
    results: dict[str, dict[str, Any]], sweep: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, str]]]:
    return {task: [{"metric": results["diffusion"][task].metric}] for task in sweep}
