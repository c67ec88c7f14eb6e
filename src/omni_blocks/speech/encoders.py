"""Speech the model *hears*: front ends (waveform -> feature frames) and encoders (feature
frames -> vectors), the continuous path beside the discrete speech codes.

Omni-Diffusion reads the speech in its prompt through SenseVoiceSmall's encoder, not as
GLM-4-Voice codes (those are only for the speech it *says*): a front end turns the waveform
into feature frames in the data pipeline, an encoder network (part of the model, trained
with it) turns the frames into vectors, and a projector
([`omni_blocks.speech.projectors`][omni_blocks.speech.projectors]) maps them to the
backbone's embedding width, where they replace the embeddings of a *slot* of placeholder
positions between `<|begin_of_audio|>` and `<|end_of_audio|>`.

| block | side | what |
|---|---|---|
| `SpeechFrontEnd` | data | waveform -> `(frames, feature_size)` |
| `SpeechEncoder` | model | `(batch, frames, feature_size)` -> `(batch, positions, output_size)` |
| `LogMelFrontEnd`, `ConvSpeechEncoder` | both | a small trainable pair (the miniature's) |
| `SenseVoiceFrontEnd`, `SenseVoiceEncoder` | both | the paper's |

An encoder says how many slot positions `frames` feature frames give
([`slot_length`][omni_blocks.speech.encoders.SpeechEncoder.slot_length]); templates reserve
that many.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from omni_blocks.tokenizers.audio import LogMelSpectrogram, check_waveforms

__all__ = [
    "ConvSpeechEncoder",
    "EncodedSpeech",
    "FeatureFrames",
    "LogMelFrontEnd",
    "SpeechEncoder",
    "SpeechFrontEnd",
]

FeatureFrames = Float[Tensor, "frames features"]
"""One utterance's feature frames."""

EncodedSpeech = tuple[Float[Tensor, "batch positions width"], Int[Tensor, " batch"]]
"""An encoder's padded outputs and each row's valid length."""


class SpeechFrontEnd(ABC):
    """Waveform -> feature frames (runs in the data pipeline, not trained).

    Attributes:
        sample_rate: the rate the waveforms must have.
        feature_size: the width of a frame.
    """

    sample_rate: int
    feature_size: int

    @abstractmethod
    def features(self, waveform: Float[Tensor, " time"]) -> FeatureFrames:
        """The feature frames of one mono waveform in `[-1, 1]` at `sample_rate`."""

    def __call__(self, waveform: Tensor, sample_rate: int | None = None) -> FeatureFrames:
        """Check the waveform (mono, float, finite, the right rate), then `features`.

        Raises:
            ValueError: a wrong sample rate, more than one channel, or empty / non-finite
                audio.
            TypeError: not a float tensor.
        """
        rate = self.sample_rate if sample_rate is None else sample_rate
        waves, _ = check_waveforms(
            waveform, sample_rate=rate, expected_rate=self.sample_rate, name="waveform"
        )
        if len(waves) != 1:
            raise ValueError(
                f"a front end takes one mono waveform, (time,) or (1, time); got {len(waves)} "
                "(mix stereo down with wave.mean(dim=0), call once per utterance)"
            )
        return self.features(waves[0])


class SpeechEncoder(nn.Module, ABC):
    """Feature frames -> vectors, one per slot position (a trainable network).

    Attributes:
        feature_size: the width of the input frames.
        output_size: the width of the outputs (what a projector takes).
    """

    feature_size: int
    output_size: int

    @abstractmethod
    def slot_length(self, frames: int) -> int:
        """Outputs (slot positions) for an utterance of `frames` feature frames."""

    @abstractmethod
    def forward(
        self, features: Float[Tensor, "batch frames features"], lengths: Int[Tensor, " batch"]
    ) -> EncodedSpeech:
        """Encode padded frames; returns padded outputs and each row's output length."""

    def check(self, features: Tensor, lengths: Tensor) -> None:
        """Raise a clear error for frames of the wrong width or lengths that do not fit.

        Raises:
            ValueError: a feature width other than `feature_size`, or lengths outside
                `[1, frames]`.
        """
        if features.ndim != 3 or features.shape[-1] != self.feature_size:
            raise ValueError(
                f"{type(self).__name__} takes frames of {self.feature_size} features, (batch, "
                f"frames, {self.feature_size}); got shape {tuple(features.shape)}"
            )
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > features.shape[1]):
            raise ValueError(
                f"lengths must lie in [1, {features.shape[1]}]; got {lengths.tolist()}"
            )


class LogMelFrontEnd(SpeechFrontEnd):
    """Log-mel frames (a small front end for experiments; the miniature's).

    Args:
        sample_rate: the waveforms' rate.
        n_mels: mel bands (the frame width).
        hop_length: samples between frames.
        n_fft: FFT size.
    """

    def __init__(
        self, sample_rate: int = 16_000, n_mels: int = 40, hop_length: int = 160, n_fft: int = 400
    ) -> None:
        self.sample_rate = sample_rate
        self.feature_size = n_mels
        self.hop_length = hop_length
        self.n_fft = n_fft
        self._spectrogram = LogMelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
        )

    def features(self, waveform: Float[Tensor, " time"]) -> FeatureFrames:
        mel = self._spectrogram(waveform)
        if mel.shape[0] == 0:
            raise ValueError(
                f"the waveform ({waveform.numel()} samples) is shorter than one frame "
                f"({self.hop_length} samples)"
            )
        return mel


class ConvSpeechEncoder(SpeechEncoder):
    """A small trainable encoder: strided 1-D convolutions, then transformer layers.

    `stride` frames become one output position (`slot_length = ceil(frames / stride)`);
    sinusoidal positions are added before the transformer layers.

    Args:
        feature_size: input frame width (the front end's).
        output_size: output width.
        stride: frames per output position (a power of two: one conv of stride 2 per halving).
        num_layers: transformer layers.
        num_heads: attention heads.
        dropout: dropout in the transformer layers.

    Raises:
        ValueError: a stride that is not a power of two, or sizes below 1.
    """

    def __init__(
        self,
        feature_size: int = 40,
        output_size: int = 128,
        stride: int = 4,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two; got {stride}")
        if feature_size < 1 or output_size < 1 or num_layers < 0:
            raise ValueError("feature_size and output_size must be >= 1, num_layers >= 0")
        self.feature_size, self.output_size, self.stride = feature_size, output_size, stride
        self.num_layers, self.num_heads, self.dropout = num_layers, num_heads, dropout
        convs: list[nn.Module] = [nn.Conv1d(feature_size, output_size, 3, padding=1), nn.GELU()]
        for _ in range(int(math.log2(stride))):
            convs += [nn.Conv1d(output_size, output_size, 3, stride=2, padding=1), nn.GELU()]
        self.convs = nn.Sequential(*convs)
        layer = nn.TransformerEncoderLayer(
            output_size,
            num_heads,
            4 * output_size,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(output_size)

    def slot_length(self, frames: int) -> int:
        return math.ceil(frames / self.stride)

    def forward(
        self, features: Float[Tensor, "batch frames features"], lengths: Int[Tensor, " batch"]
    ) -> EncodedSpeech:
        self.check(features, lengths)
        h = self.convs(features.transpose(1, 2)).transpose(1, 2)
        out_lengths = torch.div(lengths + self.stride - 1, self.stride, rounding_mode="floor")
        positions = torch.arange(h.shape[1], device=h.device)
        h = h + _sinusoids(positions, self.output_size).to(h)
        pad = positions[None, :] >= out_lengths[:, None]
        h = self.layers(h, src_key_padding_mask=pad)
        return self.norm(h), out_lengths


def _sinusoids(positions: Tensor, width: int) -> Tensor:
    half = width // 2
    scale = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions[:, None].float() * scale[None, :]
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return torch.nn.functional.pad(out, (0, width - 2 * half))
