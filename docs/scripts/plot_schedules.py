"""Draw the figures of docs/concepts/schedules-and-masking.md into docs/images/.

Run from the repository root (the PNGs are committed; re-run after changing a schedule):

    PYTHONPATH=src python docs/scripts/plot_schedules.py

The empirical points are measured with the library's own blocks, so the figures show what
the code does, not only what the equations say.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

from omni_blocks.masking import (
    AttenuatedTailPadMasking,
    FullSequenceMasking,
    SpanMasking,
    UniformMasking,
)
from omni_blocks.schedules import (
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    MaskGITPowerSchedule,
    PolynomialSchedule,
)
from omni_blocks.vocab import VocabLayout

OUT = Path(__file__).resolve().parent.parent / "images"

SCHEDULES = {
    "Linear (MDLM, LLaDA, Dream)": LinearSchedule(),
    "Cosine (MaskGIT)": CosineSchedule(),
    "Polynomial(exponent=2)": PolynomialSchedule(2.0),
    "MaskGITPower(exponent=2), 'square'": MaskGITPowerSchedule(2.0),
    "LogLinear(eps=0.05)": LogLinearSchedule(0.05),
    "Geometric(1e-4, 20)": GeometricSchedule(),
}


def plot_schedules() -> None:
    t = torch.linspace(0.0, 1.0, 401, dtype=torch.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, schedule in SCHEDULES.items():
        left.plot(t, schedule.alpha(t), label=name)
        inner = t[(t > 0.005) & (t < 0.995)]
        right.plot(inner, schedule.elbo_weight(inner), label=name)
    left.set(xlabel="time t", ylabel="alpha(t) = P(token still clean)", title="Noise schedules")
    left.legend(fontsize=8)
    right.set(
        xlabel="time t",
        ylabel="ELBO weight  -alpha'(t) / (1 - alpha(t))",
        yscale="log",
        title="ELBO weight of the masked cross-entropy",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "schedules.png", dpi=110)
    plt.close(fig)


def plot_tail_pad() -> None:
    layout = VocabLayout(text_size=100, speech_size=0, image_size=0)
    schedule = LinearSchedule()
    strategy = AttenuatedTailPadMasking()  # paper default: pad_mask_ratio = 0.6
    g = torch.Generator().manual_seed(0)
    batch, seq, n_pad = 64, 256, 96
    ids = torch.randint(0, 100, (batch, seq), generator=g)
    ids[:, seq - n_pad :] = layout.pad_id
    target_mask = torch.ones_like(ids, dtype=torch.bool)
    is_pad = ids == layout.pad_id

    t_line = torch.linspace(0, 1, 101)
    grid = torch.linspace(0.05, 0.95, 10)
    content_rate, pad_rate = [], []
    for t0 in grid:
        t = torch.full((batch,), float(t0))
        mask = strategy(ids, target_mask, t, schedule=schedule, layout=layout, generator=g).mask
        content_rate.append(float(mask[~is_pad].float().mean()))
        pad_rate.append(float(mask[is_pad].float().mean()))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(t_line, schedule.mask_prob(t_line), color="C0", label="content: mask_prob(t)")
    ax.plot(
        t_line,
        strategy.pad_mask_ratio * schedule.mask_prob(t_line),
        color="C3",
        label=f"pad: {strategy.pad_mask_ratio} * mask_prob(t)",
    )
    ax.scatter(grid, content_rate, color="C0", marker="o", s=18, label="measured (content)")
    ax.scatter(grid, pad_rate, color="C3", marker="s", s=18, label="measured (pad)")
    ax.axhline(0.5005, color="C0", ls=":", lw=1, label="upstream per-token t: content 0.5005")
    ax.axhline(0.3003, color="C3", ls=":", lw=1, label="upstream per-token t: pad 0.3003")
    ax.set(
        xlabel="time t (linear schedule)",
        ylabel="probability a token is masked",
        title="Attenuated tail-pad masking (pad_mask_ratio = 0.6)",
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "tail_pad_attenuation.png", dpi=110)
    plt.close(fig)


def plot_mask_patterns() -> None:
    layout = VocabLayout(text_size=100, speech_size=0, image_size=0)
    seq, prompt, n_pad = 96, 16, 24
    ids = torch.randint(0, 100, (1, seq), generator=torch.Generator().manual_seed(0))
    ids[:, seq - n_pad :] = layout.pad_id
    target_mask = (torch.arange(seq) >= prompt)[None]
    t = torch.tensor([0.5])
    strategies = {
        "UniformMasking": UniformMasking(),
        "AttenuatedTailPadMasking": AttenuatedTailPadMasking(),
        "SpanMasking(mean_span_length=8)": SpanMasking(8.0),
        "FullSequenceMasking": FullSequenceMasking(),
    }
    fig, axes = plt.subplots(len(strategies), 1, figsize=(10, 3.2), sharex=True)
    for ax, (name, strategy) in zip(axes, strategies.items(), strict=True):
        g = torch.Generator().manual_seed(3)
        mask = strategy(ids, target_mask, t, schedule=LinearSchedule(), layout=layout, generator=g)
        row = torch.zeros(seq)
        row[~target_mask[0]] = 1  # prompt
        row[ids[0] == layout.pad_id] = 2  # pad tail
        row[mask.mask[0]] = 3  # masked
        cmap = matplotlib.colors.ListedColormap(["#dfe7f2", "#9aa5b1", "#f6d7a7", "#1f3a93"])
        ax.imshow(row[None], aspect="auto", cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel(
        "position (grey: prompt, light: response, orange: pad tail, dark blue: [MASK]); t = 0.5"
    )
    fig.tight_layout()
    fig.savefig(OUT / "mask_patterns.png", dpi=110)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    plot_schedules()
    plot_tail_pad()
    plot_mask_patterns()
    print(f"wrote {sorted(p.name for p in OUT.glob('*.png'))} to {OUT}")


if __name__ == "__main__":
    main()
