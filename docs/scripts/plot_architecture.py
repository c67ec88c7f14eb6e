"""Draw docs/images/architecture.png: how the blocks of omni_blocks fit together.

Run from the repository root (the PNG is committed; re-run after renaming a block):

    PYTHONPATH=src python docs/scripts/plot_architecture.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

OUT = Path(__file__).resolve().parents[1] / "images" / "architecture.png"

# Token colours, one per modality (also used in the sequence strip).
COLOURS = {
    "text": "#8ecae6",
    "image": "#ffb703",
    "speech": "#90be6d",
    "special": "#d9d9d9",
    "mask": "#555555",
    "pad": "#f4f4f4",
}


def box(
    ax: plt.Axes, x: float, y: float, w: float, h: float, title: str, sub: str, fc: str
) -> None:
    """A rounded block with a bold title and the implementing names underneath."""
    ax.add_patch(
        FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=fc, ec="#333")
    )
    ax.text(x + w / 2, y + h * 0.66, title, ha="center", va="center", fontsize=10, weight="bold")
    ax.text(x + w / 2, y + h * 0.3, sub, ha="center", va="center", fontsize=7.5, family="monospace")


def arrow(
    ax: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str = ""
) -> None:
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.2, color="#333")
    )
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(mx + 0.05, my, label, fontsize=7.5, style="italic", va="center")


def sequence_strip(ax: plt.Axes, x0: float, y0: float) -> None:
    """One unified sequence: a spoken-VQA prompt (speech + image + text) then the target."""
    cells = (
        ["special"]
        + ["text"] * 3
        + ["special"]
        + ["speech"] * 5
        + ["special"]
        + ["special"]
        + ["image"] * 6
        + ["special"]
        + ["text", "mask", "text", "mask", "mask", "mask"]
        + ["pad", "mask", "pad"]
    )
    width = 0.2
    for i, kind in enumerate(cells):
        ax.add_patch(
            Rectangle((x0 + i * width, y0), width, 0.32, fc=COLOURS[kind], ec="#666", lw=0.5)
        )
    n_prompt = len(cells) - 9
    ax.annotate(
        "",
        xy=(x0, y0 - 0.08),
        xytext=(x0 + n_prompt * width, y0 - 0.08),
        arrowprops={"arrowstyle": "<->", "lw": 0.8},
    )
    ax.text(x0 + n_prompt * width / 2, y0 - 0.22, "prompt (never masked)", ha="center", fontsize=8)
    ax.annotate(
        "",
        xy=(x0 + n_prompt * width, y0 - 0.08),
        xytext=(x0 + len(cells) * width, y0 - 0.08),
        arrowprops={"arrowstyle": "<->", "lw": 0.8},
    )
    label = "target (target_mask)"
    ax.text(x0 + (n_prompt + 4.5) * width, y0 - 0.22, label, ha="center", fontsize=8)
    legend_x = x0 + len(cells) * width + 0.25
    for j, kind in enumerate(["text", "speech", "image", "special", "mask", "pad"]):
        ax.add_patch(
            Rectangle(
                (legend_x, y0 + 0.3 - j * 0.13), 0.12, 0.1, fc=COLOURS[kind], ec="#666", lw=0.5
            )
        )
        ax.text(legend_x + 0.17, y0 + 0.35 - j * 0.13, kind, fontsize=7, va="center")


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 6.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6.2)
    ax.axis("off")

    # Row 1: modality tokenizers into the vocabulary layout.
    box(ax, 0.2, 5.0, 2.3, 0.9, "text tokenizer", "TextTokenizer\n(Qwen2 BPE)", COLOURS["text"])
    box(
        ax,
        2.8,
        5.0,
        2.3,
        0.9,
        "speech tokenizer",
        "GLM4VoiceTokenizer\nMelVQSpeechTokenizer",
        COLOURS["speech"],
    )
    box(ax, 5.4, 5.0, 2.3, 0.9, "image tokenizer", "MagvitV2\nPatchVQTokenizer", COLOURS["image"])
    box(
        ax,
        8.2,
        5.0,
        2.6,
        0.9,
        "VocabLayout",
        "local codes <-> global ids\nmask / pad / begin / end",
        "#e9edc9",
    )
    for x in (1.35, 3.95, 6.55):
        arrow(ax, (x, 5.0), (x + 0.01, 4.72))
    arrow(ax, (8.2, 5.45), (7.75, 5.45))

    # Row 2: the unified sequence built by a task template.
    ax.text(
        0.3, 4.48, "task template (data/): one unified token sequence", fontsize=9, weight="bold"
    )
    sequence_strip(ax, 0.3, 4.0)

    # Row 3: training (left) and sampling (right).
    box(
        ax,
        0.2,
        1.9,
        2.4,
        1.0,
        "noise schedule",
        "alpha(t), mask_prob(t)\ntime distribution: t ~ U[0,1]",
        "#fefae0",
    )
    box(
        ax,
        2.9,
        1.9,
        2.4,
        1.0,
        "mask strategy",
        "AttenuatedTailPadMasking\nUniform / Span",
        "#fefae0",
    )
    box(ax, 5.6, 1.9, 2.4, 1.0, "backbone", "NativeTransformer\nHFBackbone (Dream)", "#cdb4db")
    box(
        ax, 5.6, 0.3, 2.4, 1.0, "loss", "masked_diffusion_loss\n(CE on masked positions)", "#ffc8dd"
    )
    box(
        ax,
        8.4,
        1.9,
        2.4,
        1.0,
        "sampler",
        "scorer + penalty + planner\nMaskedDiffusionSampler",
        "#bde0fe",
    )
    box(
        ax,
        8.4,
        0.3,
        2.4,
        1.0,
        "OmniDiffusionModule",
        "Lightning: fit / generate\nconfigs choose every block",
        "#e2ece9",
    )
    arrow(ax, (2.6, 2.4), (2.9, 2.4), "")
    arrow(ax, (5.3, 2.4), (5.6, 2.4), "")
    arrow(ax, (6.8, 1.9), (6.8, 1.3), "logits")
    arrow(ax, (8.0, 2.55), (8.4, 2.55), "")
    arrow(ax, (8.4, 2.25), (8.0, 2.25), "")
    ax.text(8.02, 2.72, "logits", fontsize=7, style="italic")
    ax.text(8.02, 2.02, "ids", fontsize=7, style="italic")
    arrow(ax, (4.0, 3.55), (4.0, 2.95), "clean ids, target_mask")
    arrow(ax, (9.6, 3.55), (9.6, 2.95), "prompt + [MASK] target")
    ax.text(0.2, 3.2, "training", fontsize=9, weight="bold")
    ax.text(8.4, 3.2, "generation", fontsize=9, weight="bold")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=130, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
