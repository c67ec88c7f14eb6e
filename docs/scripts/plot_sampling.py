"""Draw the unmasking-order figure of docs/concepts/sampling.md into docs/images/.

Run from the repository root (the PNG is committed; re-run after changing a sampler):

    PYTHONPATH=src python docs/scripts/plot_sampling.py

The "model" is the exact denoiser of scikit-learn's 8x8 digits (grey levels quantised to 4
image codes), conditioned on the label: a prompt of one text token ("3") followed by 64
masked image positions. Every panel uses the same denoiser; only the sampler's parts change.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from einops import rearrange
from sklearn.datasets import load_digits

from omni_blocks import Modality, VocabLayout
from omni_blocks.sampling import (
    BlockPlanner,
    EntropyScorer,
    MaskedDiffusionSampler,
    RandomScorer,
    SchedulePlanner,
    TailPenalty,
    ThresholdPlanner,
)
from omni_blocks.sampling.trajectory import render_trajectory
from omni_blocks.testing import MixtureDenoiser

OUT = Path(__file__).resolve().parent.parent / "images"
LEVELS = 4
STEPS = 16


def main() -> None:
    digits = load_digits()
    codes = torch.tensor(digits.images * LEVELS / 17.0).floor().long()  # (n, 8, 8) in [0, 4)
    labels = torch.tensor(digits.target)
    layout = VocabLayout(text_size=10, speech_size=0, image_size=LEVELS)
    image_ids = layout.to_global(rearrange(codes, "n h w -> n (h w)"), Modality.IMAGE)
    data = torch.cat([labels.unsqueeze(-1), image_ids], dim=-1)  # label token, then the image
    # logits shifted up like a trained LM's (positive for likely tokens), which is what the
    # tail penalty's sign-dependent rule assumes; the softmax does not see the shift
    model = MixtureDenoiser(
        data, mask_id=layout.mask_id, vocab_size=layout.vocab_size, logit_offset=10.0
    )

    prompt = torch.full((1, 65), layout.mask_id)
    prompt[0, 0] = 3  # "draw a 3"
    samplers = {
        "max-prob\n16 steps": MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=STEPS)),
        "entropy\n16 steps": MaskedDiffusionSampler(
            planner=SchedulePlanner(num_steps=STEPS), scorer=EntropyScorer()
        ),
        "random order\n16 steps": MaskedDiffusionSampler(
            planner=SchedulePlanner(num_steps=STEPS), scorer=RandomScorer()
        ),
        "max-prob + tail penalty\n(strength 3, 8 free)": MaskedDiffusionSampler(
            planner=SchedulePlanner(num_steps=STEPS),
            penalty=TailPenalty(strength=3.0, free_positions=8),
        ),
        "max-prob, blocks of 16\n(2 rows), 16 steps": MaskedDiffusionSampler(
            planner=BlockPlanner(SchedulePlanner(num_steps=STEPS), block_length=16)
        ),
        "max-prob, threshold 0.9": MaskedDiffusionSampler(planner=ThresholdPlanner(0.9)),
    }
    figure, axes = plt.subplots(
        2, len(samplers), figsize=(2.3 * len(samplers), 5.6), height_ratios=[1, 1]
    )
    for column, (name, sampler) in enumerate(samplers.items()):
        out = sampler(
            model,
            prompt,
            layout=layout,
            modality=Modality.IMAGE,
            generator=torch.Generator().manual_seed(0),
        )
        assert out.trajectory is not None
        render_trajectory(
            out.trajectory[0, 1:],
            shape=(8, 8),
            ax=axes[0, column],
            title=f"{name}\nNFE {out.nfe}",
            colorbar=False,
        )
        drawn = layout.to_local(out.ids[0, 1:], Modality.IMAGE)
        axes[1, column].imshow(rearrange(drawn, "(h w) -> h w", h=8), cmap="gray_r")
        verdict = "a data image" if bool(model.matches(out.ids)[0]) else "not in the data"
        axes[1, column].set_title(verdict, fontsize=9)
        axes[1, column].set_xticks([])
        axes[1, column].set_yticks([])
    figure.suptitle(
        "Unmasking order (top: step at which each pixel token was written, dark = early) "
        "and the sample (bottom)",
        fontsize=10,
    )
    figure.tight_layout(h_pad=2.0)
    OUT.mkdir(exist_ok=True)
    figure.savefig(OUT / "sampling_trajectory.png", dpi=110)
    print(f"wrote {OUT / 'sampling_trajectory.png'}")


if __name__ == "__main__":
    main()
