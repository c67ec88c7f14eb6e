"""Draw docs/images/dataflow.png: the two data flows of omni_blocks, module by module.

Training: example -> template -> sequence -> collate -> mask -> backbone -> loss.
Generation: prompt -> plan -> score / penalise / choose -> tokens -> parse -> decode.

Run from the repository root (the PNG is committed; re-run after moving a step):

    PYTHONPATH=src python docs/scripts/plot_dataflow.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parents[1] / "images" / "dataflow.png"

TRAINING = [
    ("example", "a dict: text,\ncodes, ...", "#fefae0"),
    ("template", "data.templates\nTaskTemplate.build", "#e9edc9"),
    ("sequence", "data.sequence\nTaskSequence", "#e9edc9"),
    ("collate", "data.collate\n+ tail pads", "#e9edc9"),
    ("mask", "schedules, masking\nt, x_t", "#ffe5b4"),
    ("backbone", "backbones\nlogits", "#cdb4db"),
    ("loss", "loss\nCE on [MASK]", "#ffc8dd"),
]
GENERATION = [
    ("prompt", "TaskTemplate.prompt\n[MASK] target", "#e9edc9"),
    ("plan", "sampling.planners\nblocks, budgets", "#bde0fe"),
    ("choose", "scorers, penalties,\nchoice: confidence", "#bde0fe"),
    ("tokens", "sampling.sampler\nwrite chosen", "#bde0fe"),
    ("parse", "TaskTemplate.parse\ntext / codes", "#e9edc9"),
    ("decode", "tokenizers\npixels, audio", "#fefae0"),
]


def chain(
    ax: plt.Axes, y: float, steps: list[tuple[str, str, str]], title: str, owner: str
) -> None:
    """One row of boxes joined by arrows, with the row's title and the module that runs it."""
    width, gap = 1.42, 0.28
    x0 = 0.3
    ax.text(x0, y + 1.18, title, fontsize=11, weight="bold")
    ax.text(x0 + 2.6, y + 1.18, owner, fontsize=8.5, family="monospace", color="#444")
    for i, (name, where, colour) in enumerate(steps):
        x = x0 + i * (width + gap)
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                width,
                0.95,
                boxstyle="round,pad=0.02,rounding_size=0.08",
                fc=colour,
                ec="#333",
            )
        )
        ax.text(x + width / 2, y + 0.68, name, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(x + width / 2, y + 0.26, where, ha="center", va="center", fontsize=6.8)
        if i + 1 < len(steps):
            ax.add_patch(
                FancyArrowPatch(
                    (x + width + 0.02, y + 0.47),
                    (x + width + gap - 0.02, y + 0.47),
                    arrowstyle="-|>",
                    mutation_scale=12,
                    color="#333",
                )
            )


def main() -> None:
    fig, ax = plt.subplots(figsize=(12.6, 3.7))
    ax.set_xlim(0, 12.6)
    ax.set_ylim(0, 3.7)
    ax.axis("off")
    chain(ax, 2.1, TRAINING, "training", "OmniDiffusionModule.step (module.py)")
    owner = "generate (generation.py), loop in sampling/sampler.py"
    chain(ax, 0.2, GENERATION, "generation", owner)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=130, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
