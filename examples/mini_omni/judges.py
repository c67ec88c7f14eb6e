"""Judges: classifiers trained on REAL data only, which score generated images and speech.

- `DigitJudge`: logistic regression on the 64 pixels of the real training digits; it reads
  which digit a generated (text-to-image, speech-to-image, inpainted) image shows.
- `SpokenWordJudge`: logistic regression on time-normalised log-mel features of the real
  espeak-ng training utterances of the ten digit words; it reads which word a text-to-speech
  waveform says (intelligibility). Its held-out accuracy is measured on voices it never heard.

Neither judge ever sees generated data: they are fitted once on the real corpus and then only
`predict`. Their accuracy on real held-out data (and on real data passed through the
tokenizers, the best a generator can do) is reported next to the scores they give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from omni_blocks.tokenizers.audio import LogMelSpectrogram


@dataclass
class DigitJudge:
    """Which digit an 8x8 image in `[0, 1]` shows; fitted on real training digits only."""

    model: Pipeline

    @classmethod
    def fit(cls, images: Tensor, labels: Tensor, seed: int = 0) -> DigitJudge:
        """Fit on real images `(n, 1, 8, 8)` with their labels."""
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.5, max_iter=2000, random_state=seed)
        )
        model.fit(_pixels(images), labels.numpy())
        return cls(model)

    def predict(self, images: Tensor) -> Tensor:
        """Predicted digits `(n,)`."""
        return torch.from_numpy(self.model.predict(_pixels(images))).long()

    def accuracy(self, images: Tensor, labels: Tensor) -> float:
        """Fraction of `images` judged to show their label."""
        return float((self.predict(images) == labels).float().mean())


def _pixels(images: Tensor) -> np.ndarray:
    return rearrange(images.float().clamp(0, 1), "n c h w -> n (c h w)").numpy()


class SpokenWordFeatures:
    """A fixed-size description of an utterance: its log-mel image resized to `frames` steps.

    Leading and trailing quiet frames are cut (TTS outputs may start or end with silence),
    each band is mean-normalised over the utterance (removes loudness and channel offsets),
    then the time axis is linearly resampled to `frames` steps.
    """

    def __init__(self, n_mels: int = 32, frames: int = 12, sample_rate: int = 16_000) -> None:
        self.mel = LogMelSpectrogram(sample_rate=sample_rate, n_mels=n_mels)
        self.frames = frames

    def __call__(self, waveforms: Sequence[Tensor]) -> np.ndarray:
        """Features `(n, n_mels * frames + 1)` of `n` mono waveforms."""
        rows = []
        for wave in waveforms:
            logmel = self.mel(wave.float().flatten())  # (frames, mels)
            energy = logmel.mean(dim=1)
            loud = torch.nonzero(energy > energy.max() - 6.0).flatten()  # within ~50 dB
            if loud.numel() >= 2:
                logmel = logmel[int(loud[0]) : int(loud[-1]) + 1]
            logmel = logmel - logmel.mean(dim=0, keepdim=True)
            resized = F.interpolate(
                rearrange(logmel, "t m -> 1 m t"), size=self.frames, mode="linear"
            )
            length = torch.tensor([np.log(max(len(loud), 1))])  # how long the word lasts
            rows.append(torch.cat([resized.flatten(), length]))
        return torch.stack(rows).numpy()


@dataclass
class SpokenWordJudge:
    """Which digit word a waveform says; fitted on real espeak-ng training voices only."""

    model: Pipeline
    features: SpokenWordFeatures

    @classmethod
    def fit(
        cls, waveforms: Sequence[Tensor], digits: Sequence[int], seed: int = 0
    ) -> SpokenWordJudge:
        """Fit on real utterances of digit words and their digits."""
        features = SpokenWordFeatures()
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, random_state=seed)
        )
        model.fit(features(waveforms), np.asarray(digits))
        return cls(model, features)

    def predict(self, waveforms: Sequence[Tensor]) -> Tensor:
        """Predicted digits `(n,)`."""
        return torch.from_numpy(self.model.predict(self.features(waveforms))).long()

    def accuracy(self, waveforms: Sequence[Tensor], digits: Sequence[int]) -> float:
        """Fraction of `waveforms` judged to say their digit word."""
        return float((self.predict(waveforms) == torch.tensor(list(digits))).float().mean())
