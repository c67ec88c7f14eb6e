"""Writing the results: `report.md`, `images.png`, `quality_vs_nfe.png` and WAV samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from einops import rearrange, repeat  # noqa: E402
from torch import Tensor  # noqa: E402

from omni_blocks.tokenizers.audio import write_wav  # noqa: E402

from .tokenizing import Tokenizers  # noqa: E402

MASKED_RGB = (0.55, 0.75, 0.95)  # light blue: a position still holding [MASK]


def _rgb(images: Tensor) -> Tensor:
    """`(n, 1, h, w)` grey in `[0, 1]` -> `(n, h, w, 3)`, white digit strokes on black."""
    return repeat(images.float().clamp(0, 1), "n 1 h w -> n h w c", c=3)


def partial_images(
    codes: Tensor, unmasked: Tensor, tokenizers: Tokenizers
) -> Tensor:
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
        for c, img in enumerate(_rgb(images)[:columns]):
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
            ax.annotate(r["setting"], (r["nfe"], r["value"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.plot([r["nfe"] for r in ar], [r["value"] for r in ar], "s", color="C3",
                label="autoregressive")
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
