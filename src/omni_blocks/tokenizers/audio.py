"""Audio helpers: WAV I/O, resampling, log-mel spectrograms, Griffin-Lim, input checks.

The signal processing is torchaudio's (imported when first used; install it with
`pip install "omni-blocks[audio]"`):

- [`read_wav`][omni_blocks.tokenizers.audio.read_wav] /
  [`write_wav`][omni_blocks.tokenizers.audio.write_wav] /
  [`load_audio`][omni_blocks.tokenizers.audio.load_audio]: audio files through `soundfile`;
- [`resample`][omni_blocks.tokenizers.audio.resample]: `torchaudio.functional.resample`
  (band-limited, Hann-windowed sinc);
- [`mel_filterbank`][omni_blocks.tokenizers.audio.mel_filterbank]:
  `torchaudio.functional.melscale_fbanks` with Slaney's scale and normalisation (the filters
  of librosa and Whisper's feature extractor);
- [`LogMelSpectrogram`][omni_blocks.tokenizers.audio.LogMelSpectrogram]: waveform -> log-mel
  frames (`torchaudio.transforms.Spectrogram`), and back through a non-negative
  least-squares mel inversion plus
- [`griffin_lim`][omni_blocks.tokenizers.audio.griffin_lim]: `torchaudio.functional.griffinlim`
  (fast Griffin-Lim with momentum), seeded;
- [`check_waveforms`][omni_blocks.tokenizers.audio.check_waveforms]: the input checks every
  speech tokenizer shares (mono, floating point, non-empty, finite, right sample rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from omni_blocks._optional import require

__all__ = [
    "MAX_PEAK",
    "LogMelSpectrogram",
    "check_waveforms",
    "griffin_lim",
    "load_audio",
    "mel_filterbank",
    "read_wav",
    "resample",
    "write_wav",
]


def _torchaudio() -> ModuleType:
    return require("torchaudio", "audio processing (resampling, spectrograms, Griffin-Lim)")


def _soundfile() -> ModuleType:
    return require("soundfile", "reading and writing audio files")


# ---------------------------------------------------------------------------- file I/O
def read_wav(path: str | Path) -> tuple[Float[Tensor, "channels time"], int]:
    """Read an audio file (WAV, FLAC, OGG, ... anything `soundfile` reads).

    Args:
        path: the file to read.

    Returns:
        `(waveform, sample_rate)`: a float32 tensor of shape `(channels, time)` with samples
        in `[-1, 1]`, and the file's sample rate in Hz.

    Raises:
        ImportError: `soundfile` is not installed (the message names the `audio` extra).
        FileNotFoundError: `path` does not exist.
    """
    sf = _soundfile()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no audio file at {str(path)!r}")
    data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    waveform = torch.from_numpy(data).T.contiguous()
    return waveform, int(sample_rate)


def write_wav(
    path: str | Path,
    waveform: Float[Tensor, "*channels time"],
    sample_rate: int,
    *,
    subtype: str = "PCM_16",
) -> Path:
    """Write a waveform to a WAV file (16-bit PCM by default).

    Args:
        path: destination; parent folders are created.
        waveform: `(time,)` for mono or `(channels, time)`; samples are clipped to `[-1, 1]`.
        sample_rate: sample rate in Hz.
        subtype: a `soundfile` subtype (`"PCM_16"`, `"FLOAT"`, ...).

    Returns:
        The path written.
    """
    sf = _soundfile()
    if waveform.ndim > 2:
        raise ValueError(
            f"write_wav takes (time,) or (channels, time); got shape {tuple(waveform.shape)}"
        )
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = waveform.detach().float().clamp(-1.0, 1.0).cpu()
    if data.ndim == 2:
        data = data.T
    sf.write(str(path), data.numpy(), sample_rate, subtype=subtype)
    return path


def load_audio(
    path: str | Path, sample_rate: int = 16_000, *, mono: bool = True
) -> Float[Tensor, "*channels time"]:
    """Read an audio file, mix it down to mono (if asked) and resample it to `sample_rate`.

    Args:
        path: the file to read.
        sample_rate: the rate to resample to (16 kHz for GLM-4-Voice and the small tokenizer).
        mono: average the channels into one `(time,)` waveform; with `False` the result keeps
            its `(channels, time)` shape.
    """
    waveform, rate = read_wav(path)
    if mono:
        waveform = waveform.mean(dim=0)
    return resample(waveform, rate, sample_rate)


# ---------------------------------------------------------------------------- resampling
def resample(
    waveform: Float[Tensor, "*batch time"],
    orig_freq: int,
    new_freq: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> Float[Tensor, "*batch new_time"]:
    """Band-limited resampling: `torchaudio.functional.resample` with a Hann-windowed sinc.

    Args:
        waveform: samples along the last dimension.
        orig_freq: the input rate in Hz.
        new_freq: the output rate in Hz.
        lowpass_filter_width: zero crossings of the sinc kept on each side (sharper cut-off
            when larger, slower).
        rolloff: cut-off as a fraction of the lower Nyquist frequency (< 1 avoids aliasing).

    Returns:
        `ceil(time * new_freq / orig_freq)` samples along the last dimension.

    Raises:
        ValueError: a rate that is not positive, `rolloff` outside `(0, 1]` or
            `lowpass_filter_width < 1`.
        ImportError: torchaudio is not installed (the message names the extra).
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if not 0.0 < rolloff <= 1.0:
        raise ValueError(f"rolloff must lie in (0, 1], got {rolloff}")
    if lowpass_filter_width < 1:
        raise ValueError(f"lowpass_filter_width must be >= 1, got {lowpass_filter_width}")
    if orig_freq == new_freq:
        return waveform.clone()
    functional = _torchaudio().functional
    out: Tensor = functional.resample(
        waveform,
        orig_freq,
        new_freq,
        lowpass_filter_width=lowpass_filter_width,
        rolloff=rolloff,
        resampling_method="sinc_interp_hann",
    )
    return out


# ---------------------------------------------------------------------------- mel scale
def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Float[Tensor, "freqs mels"]:
    """Triangular mel filters with Slaney's scale and area normalisation.

    `torchaudio.functional.melscale_fbanks(..., norm="slaney", mel_scale="slaney")`: the
    filters of librosa's default `librosa.filters.mel` and of Whisper's feature extractor.

    Args:
        n_freqs: number of STFT bins, `n_fft // 2 + 1`.
        n_mels: number of mel bands.
        sample_rate: sample rate in Hz.
        f_min: lowest frequency in Hz.
        f_max: highest frequency in Hz (default: Nyquist).

    Returns:
        A `(n_freqs, n_mels)` float32 matrix; `mel = magnitude @ filterbank`.

    Raises:
        ValueError: fewer than 2 bins or 1 band, or a frequency range outside
            `[0, sample_rate / 2]`.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"need n_freqs >= 2 and n_mels >= 1, got {n_freqs}, {n_mels}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    functional = _torchaudio().functional
    filters: Tensor = functional.melscale_fbanks(
        n_freqs, f_min, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )
    return filters.float()


# ---------------------------------------------------------------------------- validation
MAX_PEAK = 1.5
"""The largest sample magnitude `check_waveforms` accepts: audio is in `[-1, 1]`; a little
clipping passes, audio in another scale (int16 values as floats) does not."""


def check_waveforms(
    waveforms: object,
    *,
    sample_rate: int,
    expected_rate: int,
    name: str = "waveforms",
) -> tuple[list[Tensor], bool]:
    """Validate speech input and split it into a list of mono float waveforms.

    Accepted shapes: one waveform `(time,)`; a batch `(batch, time)` or `(batch, 1, time)` of
    equal-length waveforms; or a list of `(time,)` / `(1, time)` waveforms of any lengths.

    Args:
        waveforms: the input (anything: this is the function that checks it).
        sample_rate: the rate the caller says the audio has.
        expected_rate: the rate the tokenizer needs.
        name: how error messages call the input.

    Returns:
        `(items, single)`: the waveforms as 1-D float tensors, and whether the input was a
        single `(time,)` waveform.

    Raises:
        ValueError: wrong sample rate (resample first), more than one channel (mix down
            first), empty or non-finite audio, samples far outside `[-1, 1]`, or an
            unsupported shape.
        TypeError: not a tensor, or not floating point (integer PCM must be scaled to
            `[-1, 1]` first).
    """
    if sample_rate != expected_rate:
        raise ValueError(
            f"{name} have sample rate {sample_rate} Hz but this tokenizer needs "
            f"{expected_rate} Hz; convert with "
            f"omni_blocks.tokenizers.audio.resample(wave, {sample_rate}, {expected_rate})"
        )
    single = False
    items: list[Any]
    if isinstance(waveforms, Tensor):
        if waveforms.ndim == 1:
            items, single = [waveforms], True
        elif waveforms.ndim == 2:
            items = list(waveforms.unbind(0))
        elif waveforms.ndim == 3:
            if waveforms.shape[1] != 1:
                raise ValueError(
                    f"{name} must be mono: a (batch, channels, time) tensor needs channels == 1, "
                    f"got {waveforms.shape[1]} channels (shape {tuple(waveforms.shape)}); "
                    "mix down with wave.mean(dim=1)"
                )
            items = list(waveforms[:, 0].unbind(0))
        else:
            raise ValueError(
                f"{name} must be (time,), (batch, time) or (batch, 1, time); got shape "
                f"{tuple(waveforms.shape)}"
            )
    elif isinstance(waveforms, Sequence) and not isinstance(waveforms, str):
        items = list(waveforms)
        if not items:
            raise ValueError(f"{name} is an empty list; pass at least one waveform")
    else:
        raise TypeError(f"{name} must be a torch.Tensor or a list of them, got {type(waveforms)}")

    out: list[Tensor] = []
    for i, wave in enumerate(items):
        if not isinstance(wave, Tensor):
            raise TypeError(
                f"{name}[{i}] must be a torch.Tensor, got {type(wave).__name__}; "
                "convert numpy arrays with torch.from_numpy"
            )
        if wave.ndim == 2:
            if wave.shape[0] != 1:
                raise ValueError(
                    f"{name}[{i}] has {wave.shape[0]} channels (shape {tuple(wave.shape)}) but "
                    "speech tokenizers take mono audio; mix down with wave.mean(dim=0)"
                )
            wave = wave[0]
        elif wave.ndim != 1:
            raise ValueError(
                f"{name}[{i}] must be (time,) or (1, time), got shape {tuple(wave.shape)}"
            )
        if not wave.dtype.is_floating_point:
            raise TypeError(
                f"{name}[{i}] has dtype {wave.dtype}; speech tokenizers take floating-point "
                "samples in [-1, 1] (for int16 PCM use wave.float() / 32768)"
            )
        if wave.numel() == 0:
            raise ValueError(f"{name}[{i}] is empty (0 samples)")
        if not bool(torch.isfinite(wave).all()):
            raise ValueError(f"{name}[{i}] contains NaN or infinite samples")
        peak = float(wave.abs().max())
        if peak > MAX_PEAK:
            raise ValueError(
                f"{name}[{i}] peaks at {peak:.4g}, but samples must lie in [-1, 1] (a little "
                "clipping is tolerated); scale the audio (int16 PCM: divide by 32768)"
            )
        out.append(wave.float())
    return out, single


# ---------------------------------------------------------------------------- spectrograms
def griffin_lim(
    magnitude: Float[Tensor, "*batch frames freqs"],
    *,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    n_iter: int = 32,
    momentum: float = 0.99,
    length: int | None = None,
    seed: int = 0,
) -> Float[Tensor, "*batch time"]:
    """Recover a waveform from an STFT magnitude by fast Griffin-Lim.

    `torchaudio.functional.griffinlim` (Perraudin, Balazs & Søndergaard, "A fast Griffin-Lim
    algorithm", 2013; `momentum=0` is the original Griffin & Lim 1984) with a Hann window and
    random initial phases drawn from `seed`, so the result is deterministic.

    Args:
        magnitude: `|STFT|` with frames first, as produced by
            [`LogMelSpectrogram.magnitude`][omni_blocks.tokenizers.audio.LogMelSpectrogram.magnitude].
        n_fft: FFT size (`freqs == n_fft // 2 + 1`).
        hop_length: hop between frames in samples.
        win_length: Hann window length (default `n_fft`).
        n_iter: number of iterations.
        momentum: the fast Griffin-Lim momentum in `[0, 1)`.
        length: length of the output waveform (default: what the frames span).
        seed: seed of the initial phases.

    Raises:
        ValueError: a magnitude whose last dimension is not `n_fft // 2 + 1`, or a momentum
            outside `[0, 1)`.
    """
    if magnitude.shape[-1] != n_fft // 2 + 1:
        raise ValueError(
            f"magnitude has {magnitude.shape[-1]} frequency bins, n_fft={n_fft} needs "
            f"{n_fft // 2 + 1}"
        )
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    functional = _torchaudio().functional
    win_length = n_fft if win_length is None else win_length
    window = torch.hann_window(win_length, dtype=magnitude.dtype, device=magnitude.device)
    spec = rearrange(magnitude, "... frames freqs -> ... freqs frames")
    if length is None:
        length = (spec.shape[-1] - 1) * hop_length
    devices = [magnitude.device] if magnitude.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # torchaudio draws the phases globally
        torch.manual_seed(seed)
        wave: Tensor = functional.griffinlim(
            spec,
            window=window,
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            power=1.0,
            n_iter=n_iter,
            momentum=momentum,
            length=length,
            rand_init=True,
        )
    return wave


class LogMelSpectrogram:
    """Waveform -> log-mel frames, and an approximate inverse (NNLS + Griffin-Lim).

    Frames: a centred STFT with a Hann window and zero padding gives `1 + time // hop_length`
    frames; as in Whisper's feature extractor the last one is dropped, so a waveform of
    `k * hop_length` samples gives exactly `k` frames. Features are
    `log(max(magnitude @ mel_filterbank, floor))` (natural log of the *magnitude* mel
    spectrum; a fixed floor, so features never depend on the rest of a batch).

    Args:
        sample_rate: sample rate in Hz.
        n_fft: FFT size.
        hop_length: hop between frames in samples (160 = 10 ms at 16 kHz).
        n_mels: number of mel bands.
        win_length: Hann window length (default `n_fft`).
        f_min: lowest mel frequency in Hz.
        f_max: highest mel frequency in Hz (default: Nyquist).
        floor: magnitude floor before the log (1e-5: -100 dB).
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 80,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        floor: float = 1e-5,
    ) -> None:
        if hop_length < 1 or n_fft < 2:
            raise ValueError(f"need hop_length >= 1 and n_fft >= 2, got {hop_length}, {n_fft}")
        if floor <= 0:
            raise ValueError(f"floor must be positive, got {floor}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.win_length = n_fft if win_length is None else win_length
        if not 1 <= self.win_length <= n_fft:
            raise ValueError(f"win_length must lie in [1, n_fft={n_fft}], got {self.win_length}")
        self.f_min = f_min
        self.f_max = f_max
        self.floor = floor
        self.filterbank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
        self.stft = _torchaudio().transforms.Spectrogram(
            n_fft=n_fft,
            win_length=self.win_length,
            hop_length=hop_length,
            power=1.0,  # magnitude
            center=True,
            pad_mode="constant",
        )

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for a waveform of `num_samples` samples (`num_samples // hop`)."""
        return num_samples // self.hop_length

    def magnitude(
        self, waveform: Float[Tensor, "*batch time"]
    ) -> Float[Tensor, "*batch frames freqs"]:
        """`|STFT|` of `waveform`, frames first, last frame dropped (see the class doc)."""
        flat = rearrange(waveform.float(), "... time -> (...) time")
        spec = self.stft.to(flat.device)(flat)
        mag = rearrange(spec[..., :-1], "b freqs frames -> b frames freqs")
        return mag.reshape(*waveform.shape[:-1], *mag.shape[-2:])

    def __call__(
        self, waveform: Float[Tensor, "*batch time"]
    ) -> Float[Tensor, "*batch frames mels"]:
        """Log-mel features of `waveform`, frames first."""
        mel = self.magnitude(waveform) @ self.filterbank.to(waveform.device)
        return torch.log(mel.clamp(min=self.floor))

    def mel_to_magnitude(
        self, log_mel: Float[Tensor, "*batch frames mels"], n_iter: int = 50
    ) -> Float[Tensor, "*batch frames freqs"]:
        """Invert the mel projection: the non-negative least-squares STFT magnitude.

        Solves `min_{S >= 0} ||S F - M||^2` (F: the filterbank, M: `exp(log_mel)`) with
        Lee & Seung's multiplicative updates `S <- S * (M F^T) / (S F F^T)`, started from
        `M F^+` clipped to be positive. Mel bands are wider than STFT bins, so this cannot
        restore detail finer than a band; it does keep every bin non-negative, unlike the
        plain pseudo-inverse.
        """
        fb = self.filterbank.to(log_mel.device)
        mel = torch.exp(log_mel.float())
        spec = (mel @ torch.linalg.pinv(fb)).clamp(min=1e-8)
        target = mel @ fb.T
        gram = fb @ fb.T
        for _ in range(n_iter):
            spec = spec * target / (spec @ gram).clamp(min=1e-12)
        return spec

    def invert(
        self,
        log_mel: Float[Tensor, "*batch frames mels"],
        *,
        n_iter: int = 32,
        momentum: float = 0.99,
        seed: int = 0,
    ) -> Float[Tensor, "*batch time"]:
        """A waveform whose log-mel spectrogram approximates `log_mel` (`frames * hop` samples).

        The inverse is approximate twice over: the mel projection drops detail within a band
        (see [`mel_to_magnitude`][omni_blocks.tokenizers.audio.LogMelSpectrogram.mel_to_magnitude])
        and Griffin-Lim estimates a phase (see
        [`griffin_lim`][omni_blocks.tokenizers.audio.griffin_lim]). It is deterministic.
        """
        mag = self.mel_to_magnitude(log_mel)
        frames = mag.shape[-2]
        # Re-append one frame (a copy of the last) for the one `magnitude` dropped.
        mag = torch.cat([mag, mag[..., -1:, :]], dim=-2)
        return griffin_lim(
            mag,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            n_iter=n_iter,
            momentum=momentum,
            length=frames * self.hop_length,
            seed=seed,
        )
