"""Draw docs/images/speech_paths.png: one ASR example as the library builds it, with the
speech heard as discrete codes (`SpeechCodes`) and as a slot of encoder features
(`SpeechFeatures`, Omni-Diffusion's SenseVoice path).

The sequences are made by the real templates on a small layout; each position is a box
coloured by what it holds. Run from the repository root (the PNG is committed):

    PYTHONPATH=src python docs/scripts/plot_speech_paths.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Patch, Rectangle

from omni_blocks.data import AsrTemplate, ChatFormat, SpeechCodes, SpeechFeatures
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

OUT = Path(__file__).resolve().parents[1] / "images" / "speech_paths.png"
COLOURS = {
    "text": "#e9edc9",
    "marker": "#bde0fe",
    "code": "#cdb4db",
    "slot": "#ffc8a2",
    "target": "#ffafcc",
}


def kinds(seq, layout: VocabLayout) -> list[str]:
    out = []
    markers = {layout.begin_id(Modality.SPEECH), layout.end_id(Modality.SPEECH)}
    for i, token in enumerate(seq.ids.tolist()):
        if bool(seq.target_mask[i]):
            out.append("target")
        elif seq.slots is not None and bool(seq.slots[i]):
            out.append("slot")
        elif token in markers:
            out.append("marker")
        elif bool(layout.is_modality(torch.tensor(token), Modality.SPEECH)):
            out.append("code")
        else:
            out.append("text")
    return out


def main() -> None:
    words = ["transcribe", "the", "speech", "seven", "two"]
    text = TextTokenizer.train_bpe(words * 8, vocab_size=300, min_frequency=1)
    layout = VocabLayout(text.codebook_size, 64, 16, special_ids=text.special_ids)
    chat = ChatFormat(user_start="", user_end="", assistant_start="", bos=False)
    example = {
        "text": "seven",
        "speech_codes": torch.tensor([3, 17, 17, 40, 9, 22]),  # 12.5 codes a second
        "speech_features": torch.randn(5, 560),  # SenseVoice frames: 5 frames + 4 queries
    }
    rows = [
        ("speech as codes (SpeechCodes):\nthe ids are the speech", SpeechCodes()),
        ("speech as features (SpeechFeatures):\nthe encoder + projector fill the slot",
         SpeechFeatures(extra_positions=4)),
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(11, 3.2))
    width = 0
    for r, (label, speech) in enumerate(rows):
        seq = AsrTemplate(
            layout, text, chat=chat, speech_input=speech, instruction="transcribe"
        ).build(example)
        width = max(width, len(seq.ids))
        y = 1.6 * (len(rows) - 1 - r)
        ax.text(-0.3, y + 0.4, label, ha="right", va="center", fontsize=9)
        for i, kind in enumerate(kinds(seq, layout)):
            ax.add_patch(Rectangle((i, y), 0.9, 0.8, color=COLOURS[kind], ec="#555"))
    ax.set_xlim(-8.5, width + 0.5)
    ax.set_ylim(-0.4, 2.8)
    ax.axis("off")
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in COLOURS.items()],
        loc="lower center", ncol=5, bbox_to_anchor=(0.6, -0.18), frameon=False, fontsize=9,
    )  # fmt: skip
    ax.set_title("One ASR example, two ways to hear the speech", fontsize=11)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=130)
    print(OUT)


if __name__ == "__main__":
    main()
