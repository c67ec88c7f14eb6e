"""Draw docs/images/kv_cache_windows.png: what a step recomputes with each cache.

One row per cache (no cache, prefix cache, dual cache) over a sequence of prompt, finished
blocks, the current block and the masked blocks after it; recomputed positions are filled,
positions read from the cache are hatched.

Run from the repository root (the PNG is committed):

    PYTHONPATH=src python docs/scripts/plot_kv_cache.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle

OUT = Path(__file__).resolve().parents[1] / "images" / "kv_cache_windows.png"

# (label, width) of the parts of the sequence, left to right
PARTS = [("prompt", 8), ("block 1 (done)", 4), ("block 2 (now)", 4), ("blocks 3-4 (masked)", 8)]
# which parts each cache recomputes at a step inside block 2
RECOMPUTED = {
    "no cache": {0, 1, 2, 3},
    "prefix cache": {2, 3},
    "dual cache": {2},
}
COLORS = ["#bde0fe", "#cdeac0", "#ffc8dd", "#e9ecef"]


def main() -> None:
    fig, ax = plt.subplots(figsize=(8.0, 2.6))
    for row, (name, fresh) in enumerate(RECOMPUTED.items()):
        y = len(RECOMPUTED) - 1 - row
        x = 0
        for part, (label, width) in enumerate(PARTS):
            recomputed = part in fresh
            ax.add_patch(
                Rectangle(
                    (x, y + 0.1),
                    width,
                    0.8,
                    facecolor=COLORS[part] if recomputed else "white",
                    edgecolor="#555555",
                    hatch=None if recomputed else "///",
                )
            )
            if row == 0:
                ax.text(x + width / 2, len(RECOMPUTED) + 0.15, label, ha="center", fontsize=9)
            x += width
        ax.text(-0.5, y + 0.5, name, ha="right", va="center", fontsize=10)
    total = sum(w for _, w in PARTS)
    ax.set_xlim(-7, total + 0.5)
    ax.set_ylim(0, len(RECOMPUTED) + 0.6)
    ax.axis("off")
    ax.legend(
        handles=[
            Patch(facecolor="#ffc8dd", edgecolor="#555555", label="recomputed at every step"),
            Patch(facecolor="white", edgecolor="#555555", hatch="///", label="read from the cache"),
        ],
        loc="lower center",
        bbox_to_anchor=(0.55, -0.28),
        ncol=2,
        fontsize=9,
        frameon=False,
    )
    ax.set_title("A step inside block 2 (the cache is refreshed when a block starts)", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
