"""Measure the small speech tokenizer on espeak-ng spoken digits (CPU).

Trains `MelVQSpeechTokenizer` on the training voices, then reports on held-out voices:
fit time, encode/decode speed, the normalised log-mel error of decoded codes (vs. predicting
the mean spectrum), the log-mel error after Griffin-Lim, and how often re-encoding the
decoded waveform gives back the same codes. With `--plot PATH` it also draws the original
and reconstructed mel spectrograms of one held-out word (the figure in the docs).

    python benchmarks/speech_tokenizer.py [--codebook-size 256] [--plot docs/images/x.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from mini_omni.speech_synth import (
    TEST_VOICES,
    TRAIN_VOICES,
    espeak_available,
    spoken_words,
)

from omni_blocks.tokenizers.speech_vq import MelVQSpeechTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codebook-size", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--plot", type=Path, default=None, help="write the mel figure here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not espeak_available():
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")

    start = time.perf_counter()
    train = spoken_words(voices=TRAIN_VOICES, speeds=(130, 170))
    test = spoken_words(voices=TEST_VOICES, speeds=(150,))
    seconds = sum(w.waveform.shape[0] for w in train) / 16_000
    print(
        f"data: {len(train)} training utterances ({seconds:.1f} s, voices {TRAIN_VOICES}), "
        f"{len(test)} held-out ({TEST_VOICES}); synthesis {time.perf_counter() - start:.1f} s"
    )
    header = "codes | fit s | train nMSE | held-out nMSE | mean-spectrum nMSE | after GL | agree"
    print(header)
    print("-" * len(header))
    last = None
    for size in args.codebook_size:
        tok = MelVQSpeechTokenizer(codebook_size=size)
        start = time.perf_counter()
        tok.fit([w.waveform for w in train])
        fit_s = time.perf_counter() - start
        train_err = error(tok, [w.waveform for w in train])[0]
        test_err, base, gl_err, agree = error(tok, [w.waveform for w in test], waveform=True)
        print(
            f"{size:5d} | {fit_s:5.1f} | {train_err:10.3f} | {test_err:13.3f} | "
            f"{base:18.3f} | {gl_err:8.3f} | {agree:5.3f}"
        )
        last = tok
    assert last is not None
    waves = [w.waveform for w in test]
    start = time.perf_counter()
    codes = last.encode(waves)
    enc_s = time.perf_counter() - start
    start = time.perf_counter()
    last.decode(codes)
    dec_s = time.perf_counter() - start
    audio_s = sum(w.shape[0] for w in waves) / 16_000
    print(
        f"speed (codebook {last.codebook_size}): encode {audio_s / enc_s:.0f}x real time, "
        f"decode with {last.griffin_lim_iters} Griffin-Lim iterations {audio_s / dec_s:.0f}x "
        f"real time"
    )
    print(
        "nMSE: mean squared log-mel error per band, in units of the band's training variance; "
        "'after GL': of the decoded waveform's log-mel vs the original; 'agree': fraction of "
        "codes unchanged by decode -> encode of the waveform"
    )
    if args.plot is not None:
        plot(last, test[[w.text for w in test].index("seven")], args.plot)


def error(
    tok: MelVQSpeechTokenizer, waves: list[torch.Tensor], waveform: bool = False
) -> tuple[float, float, float, float]:
    """Mean nMSE of decoded codes, of the mean spectrum, after Griffin-Lim; code agreement."""
    assert tok.mean is not None and tok.std is not None
    codes = tok.encode(waves)
    assert isinstance(codes, list)
    errs, base, gl, agree = [], [], [], []
    for wave, c in zip(waves, codes, strict=True):
        target = tok.log_mel(wave)
        recon = tok.decode_features([c])[0]
        errs.append(float(((recon - target) / tok.std).square().mean()))
        base.append(float(((tok.mean - target) / tok.std).square().mean()))
        if waveform:
            audio = tok.decode(c)
            assert isinstance(audio, torch.Tensor)
            gl.append(float(((tok.log_mel(audio) - target) / tok.std).square().mean()))
            again = tok.encode(audio)
            assert isinstance(again, torch.Tensor)
            agree.append(float((again == c).float().mean()))

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return mean(errs), mean(base), mean(gl), mean(agree)


def plot(tok: MelVQSpeechTokenizer, word: object, path: Path) -> None:
    """Original log-mel, decoded codes' log-mel, and the Griffin-Lim waveform's log-mel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wave = word.waveform  # type: ignore[attr-defined]
    codes = tok.encode(wave)
    assert isinstance(codes, torch.Tensor)
    original = tok.log_mel(wave)
    decoded = tok.decode_features([codes])[0]
    audio = tok.decode(codes)
    assert isinstance(audio, torch.Tensor)
    resynth = tok.log_mel(audio)
    panels = [
        (original, f"original: '{word.text}', held-out voice {word.voice}"),  # type: ignore[attr-defined]
        (decoded, f"decoded from {codes.shape[0]} codes (12.5 Hz, codebook {tok.codebook_size})"),
        (resynth, "after Griffin-Lim (log-mel of the decoded waveform)"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 6.5), sharex=True)
    lo, hi = float(original.min()), float(original.max())
    for ax, (mel, title) in zip(axes, panels, strict=True):
        image = ax.imshow(
            mel.T.numpy(), origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma"
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel band")
        for k in range(1, codes.shape[0]):
            ax.axvline(k * tok.frames_per_token - 0.5, color="white", lw=0.3, alpha=0.5)
    axes[-1].set_xlabel("frame (10 ms); white lines: 80 ms code boundaries")
    fig.colorbar(image, ax=axes, shrink=0.6, label="log magnitude")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
