"""Offline speech: synthesise spoken words with the `espeak-ng` command-line synthesiser.

The offline miniature corpus needs speech without downloads; `espeak-ng` (a formant
synthesiser, `apt-get install espeak-ng`) makes intelligible words in many voices and at many
speeds, which is enough to train and test the small speech tokenizer and the speech tasks
(ASR, TTS, spoken prompts) of the miniature recipe.

```python
from mini_omni.speech_synth import espeak_available, synthesize_speech

if espeak_available():
    wave = synthesize_speech("seven", voice="en+f2", speed=150)   # float32, 16 kHz, mono
```
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from omni_blocks.tokenizers.audio import _soundfile, resample

__all__ = [
    "DIGIT_WORDS",
    "TEST_VOICES",
    "TRAIN_VOICES",
    "EspeakNotFoundError",
    "SpokenWord",
    "espeak_available",
    "spoken_words",
    "synthesize_speech",
]

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
"""The ten spoken digit words of the miniature corpus."""

TRAIN_VOICES: tuple[str, ...] = ("en+m1", "en+m3", "en+f2", "en-us+m2", "en+f4", "en-us+f3")
"""espeak-ng voices (language + variant) used for training."""

TEST_VOICES: tuple[str, ...] = ("en+m7", "en-us+f1")
"""espeak-ng voices held out from training, to measure generalisation to unseen speakers."""

_ESPEAK_RATE = 22_050  # espeak-ng always writes 22.05 kHz


class EspeakNotFoundError(RuntimeError):
    """The `espeak-ng` executable is not installed (or not on `PATH`)."""


def espeak_available(executable: str = "espeak-ng") -> bool:
    """Whether the `espeak-ng` executable can be found on `PATH`."""
    return shutil.which(executable) is not None


@functools.lru_cache(maxsize=4096)
def _espeak_samples(text: str, voice: str, speed: int, pitch: int, executable: str) -> np.ndarray:
    path = shutil.which(executable)
    if path is None:
        raise EspeakNotFoundError(
            f"the speech synthesiser {executable!r} was not found on PATH; install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)"
        )
    result = subprocess.run(
        [path, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout"],
        input=text.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise ValueError(
            f"espeak-ng failed for voice={voice!r}, speed={speed}, pitch={pitch}: {message} "
            "(list voices with `espeak-ng --voices`; variants are written like 'en+f2')"
        )
    data, rate = _soundfile().read(io.BytesIO(result.stdout), dtype="float32")
    if rate != _ESPEAK_RATE:  # pragma: no cover - espeak-ng's fixed output rate
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, expected {_ESPEAK_RATE}")
    return np.asarray(data, dtype=np.float32)


def _trim(wave: Tensor, threshold: float, margin: int) -> Tensor:
    loud = torch.nonzero(wave.abs() > threshold).flatten()
    if loud.numel() == 0:
        return wave
    start = max(int(loud[0]) - margin, 0)
    stop = min(int(loud[-1]) + 1 + margin, wave.shape[0])
    return wave[start:stop]


def synthesize_speech(
    text: str,
    *,
    voice: str = "en+m3",
    speed: int = 150,
    pitch: int = 50,
    sample_rate: int = 16_000,
    trim: bool = True,
    executable: str = "espeak-ng",
) -> Float[Tensor, " time"]:
    """Speak `text` with espeak-ng; a mono float32 waveform in `[-1, 1]`.

    Args:
        text: what to say (sent on standard input, so it may start with '-').
        voice: an espeak-ng voice, optionally with a variant: `"en"`, `"en-us"`, `"en+f2"`,
            `"en+m7"` (see `espeak-ng --voices` and `--voices=variant`).
        speed: words per minute (espeak-ng's `-s`; 80 to 450).
        pitch: base pitch 0 to 99 (espeak-ng's `-p`).
        sample_rate: output rate; espeak-ng writes 22.05 kHz, resampled in torch.
        trim: cut leading and trailing silence (below 1e-3), keeping 30 ms on each side;
            espeak-ng appends about 0.4 s of silence to every utterance.
        executable: name or path of the espeak-ng binary.

    Raises:
        EspeakNotFoundError: espeak-ng is not installed.
        ValueError: empty text, or espeak-ng rejected the voice or settings.
    """
    if not text.strip():
        raise ValueError("text to synthesise is empty")
    if not 80 <= speed <= 450:
        raise ValueError(f"speed must lie in [80, 450] words per minute, got {speed}")
    if not 0 <= pitch <= 99:
        raise ValueError(f"pitch must lie in [0, 99], got {pitch}")
    wave = torch.from_numpy(_espeak_samples(text, voice, speed, pitch, executable).copy())
    if trim:
        wave = _trim(wave, threshold=1e-3, margin=int(0.03 * _ESPEAK_RATE))
    return resample(wave, _ESPEAK_RATE, sample_rate)


@dataclass(frozen=True)
class SpokenWord:
    """One synthesised utterance and how it was made."""

    text: str
    voice: str
    speed: int
    waveform: Float[Tensor, " time"]
    sample_rate: int


def spoken_words(
    words: Iterable[str] = DIGIT_WORDS,
    voices: Iterable[str] = TRAIN_VOICES,
    speeds: Iterable[int] = (130, 170),
    *,
    sample_rate: int = 16_000,
) -> list[SpokenWord]:
    """Every word in every voice at every speed (word-major order), synthesised by espeak-ng.

    With the defaults: 10 digits x 6 voices x 2 speeds = 120 utterances of about 0.4-0.7 s.
    Results are cached per process, so calling it again is cheap.
    """
    voices, speeds = list(voices), list(speeds)
    return [
        SpokenWord(
            text=word,
            voice=voice,
            speed=speed,
            waveform=synthesize_speech(word, voice=voice, speed=speed, sample_rate=sample_rate),
            sample_rate=sample_rate,
        )
        for word in words
        for voice in voices
        for speed in speeds
    ]
