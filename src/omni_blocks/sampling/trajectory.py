"""`render_trajectory`: a picture of the order in which a sampler unmasked positions.

[`SampleOutput.trajectory`][omni_blocks.sampling.base.SampleOutput] holds, per position, the
step at which it was unmasked (-1: never masked). Slice one row's target region and draw it:
as a grid for image tokens (`shape=(rows, cols)`), or as a strip for text, optionally with
the tokens written in the cells.

Needs matplotlib (in the `docs` and `dev` extras), which is why `omni_blocks.sampling` does
not import this module: `from omni_blocks.sampling.trajectory import render_trajectory`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from einops import rearrange
from jaxtyping import Int
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["render_trajectory"]


def render_trajectory(
    trajectory: Int[Tensor, " positions"],
    *,
    shape: tuple[int, int] | None = None,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    colorbar: bool = True,
) -> Figure:
    """Draw the unmasking order: each cell coloured by the step that unmasked it.

    Args:
        trajectory: the unmasking step of each position (one row of a `SampleOutput`'s
            trajectory, usually its target region); -1 cells (never masked) are grey.
        shape: `(rows, cols)` of an image-token grid; None draws one row (text).
        labels: text written in each cell (for example the decoded tokens); must have one
            entry per position.
        ax: draw into these axes; a new figure is made when None.
        title: the axes title.
        cmap: a matplotlib colormap name; early steps take its first colour.
        colorbar: add a colour bar labelled "step".

    Returns:
        The figure holding the drawing (save it with `figure.savefig(path)`).

    Raises:
        ValueError: `shape` does not match the number of positions, or `labels` has the
            wrong length.
    """
    steps = trajectory.detach().cpu().long()
    n = steps.numel()
    rows, cols = (1, n) if shape is None else shape
    if rows * cols != n:
        raise ValueError(f"shape {shape} holds {rows * cols} cells, the trajectory has {n}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries, the trajectory has {n}")
    grid = rearrange(steps.numpy(), "(r c) -> r c", r=rows, c=cols)
    if ax is None:
        width = min(12.0, max(3.0, 0.45 * cols + (1.2 if colorbar else 0.4)))
        height = max(1.2, min(8.0, 0.45 * rows + 0.8))
        figure = Figure(figsize=(width, height))
        ax = figure.add_subplot()
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    shown = np.ma.masked_less(grid, 0)
    colours = _colormap(cmap)
    image = ax.imshow(shown, cmap=colours, interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=10)
    if labels is not None:
        top = max(int(grid.max()), 1)
        for index, text in enumerate(labels):
            r, c = divmod(index, cols)
            dark = grid[r, c] >= 0 and grid[r, c] < 0.5 * top
            colour = "white" if dark else "black"
            ax.text(c, r, text, ha="center", va="center", fontsize=7, color=colour)
    if colorbar and bool((grid >= 0).any()):
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("step")
    return fig


def _colormap(name: str) -> Colormap:
    return colormaps[name].with_extremes(bad="#d0d0d0")
