from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from omni_blocks.tokenizers.audio import (
    LogMelSpectrogram,
    check_waveforms,
    griffin_lim,
    load_audio,
    mel_filterbank,
    read_wav,
    resample,
    write_wav,
)


def tone(freqs: list[float], seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return sum(torch.sin(2 * math.pi * f * t) for f in freqs).float() / len(freqs)  # type: ignore[return-value]


def test_mel_filterbank_matches_whisper_feature_extractor() -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    for n_freqs, n_mels, rate in [(201, 80, 16_000), (201, 128, 16_000), (257, 40, 22_050)]:
        ours = mel_filterbank(n_freqs, n_mels, rate)
        ref = audio_utils.mel_filter_bank(
            num_frequency_bins=n_freqs,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=rate / 2,
            sampling_rate=rate,
            norm="slaney",
            mel_scale="slaney",
        )
        assert ours.shape == (n_freqs, n_mels)
        # torchaudio computes the filters in float32 (the hand-written ones it replaced, in
        # float64, agreed with Whisper's to 1e-8 and with torchaudio's to 7e-8)
        assert torch.allclose(ours.double(), torch.from_numpy(ref), atol=2e-7)


def test_mel_filterbank_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(257, 80, 16_000, f_max=9_000.0)
    with pytest.raises(ValueError, match="n_mels"):
        mel_filterbank(257, 0, 16_000)


@pytest.mark.parametrize(("orig", "new"), [(22_050, 16_000), (16_000, 22_050), (48_000, 16_000)])
def test_resample_keeps_a_tone(orig: int, new: int) -> None:
    x = tone([440.0, 1_234.0], 0.5, orig)
    y = resample(x, orig, new)
    assert y.shape == (math.ceil(x.shape[0] * new / orig),)
    expected = tone([440.0, 1_234.0], 0.5, new)[: y.shape[0]]
    inner = slice(100, -100)  # the edges see the zero padding
    assert (y[inner] - expected[inner]).abs().max() < 2e-3


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    x = tone([7_000.0], 0.5, 22_050)  # above the 4 kHz Nyquist of 8 kHz
    y = resample(x, 22_050, 8_000)
    assert y[200:-200].abs().max() < 0.02


def test_resample_batches_and_identity() -> None:
    x = torch.randn(2, 3, 1_000)
    y = resample(x, 16_000, 8_000)
    assert y.shape == (2, 3, 500)
    assert torch.allclose(y[1, 2], resample(x[1, 2], 16_000, 8_000), atol=1e-6)
    assert torch.equal(resample(x, 16_000, 16_000), x)
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16_000)


def test_log_mel_shapes_and_griffin_lim_inversion() -> None:
    spec = LogMelSpectrogram(sample_rate=16_000, n_fft=512, hop_length=160, n_mels=80)
    # A voiced-speech-like signal: 39 harmonics of 150 Hz falling as 1/k, plus a little noise.
    t = torch.arange(10_240) / 16_000
    x = sum(torch.sin(2 * math.pi * 150 * k * t + k) / k for k in range(1, 40)) * 0.3
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    log_mel = spec(x)
    assert log_mel.shape == (spec.num_frames(x.shape[0]), 80) == (64, 80)
    assert spec(torch.stack([x, x])).shape == (2, 64, 80)
    wave = spec.invert(log_mel, n_iter=32)
    assert wave.shape == x.shape
    error = (spec(wave) - log_mel).abs().mean()
    spread = (log_mel - log_mel.mean()).abs().mean()
    assert error < 0.15 * spread, (float(error), float(spread))  # measured: 0.087 vs 1.01
    assert torch.equal(spec.invert(log_mel, n_iter=4), spec.invert(log_mel, n_iter=4))


def test_griffin_lim_checks_its_input() -> None:
    with pytest.raises(ValueError, match="frequency bins"):
        griffin_lim(torch.rand(10, 100), n_fft=512, hop_length=160)
    with pytest.raises(ValueError, match="momentum"):
        griffin_lim(torch.rand(10, 257), n_fft=512, hop_length=160, momentum=1.0)


def test_wav_round_trip_and_load_audio(tmp_path: Path) -> None:
    x = tone([440.0], 0.25, 22_050) * 0.8
    stereo = torch.stack([x, -x * 0.5])
    path = write_wav(tmp_path / "sub" / "a.wav", stereo, 22_050)
    wave, rate = read_wav(path)
    assert rate == 22_050 and wave.shape == stereo.shape and wave.dtype == torch.float32
    assert (wave - stereo).abs().max() < 1e-4  # 16-bit PCM
    mono = load_audio(path, sample_rate=16_000)
    assert mono.shape == (math.ceil(x.shape[0] * 16_000 / 22_050),)
    assert load_audio(path, 22_050, mono=False).shape == stereo.shape
    with pytest.raises(FileNotFoundError, match="no audio file"):
        read_wav(tmp_path / "missing.wav")


def test_missing_soundfile_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(ImportError, match=r"omni-blocks\[audio\]"):
        read_wav(tmp_path / "a.wav")


def test_check_waveforms_accepts_the_documented_shapes() -> None:
    items, single = check_waveforms(torch.zeros(100), sample_rate=16_000, expected_rate=16_000)
    assert single and len(items) == 1
    items, single = check_waveforms(torch.zeros(3, 1, 50), sample_rate=16_000, expected_rate=16_000)
    assert not single and [w.shape for w in items] == [(50,)] * 3
    items, _ = check_waveforms(
        [torch.zeros(10, dtype=torch.float64), torch.zeros(1, 20)],
        sample_rate=16_000,
        expected_rate=16_000,
    )
    assert [w.shape for w in items] == [(10,), (20,)] and items[0].dtype == torch.float32


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ([torch.zeros(2, 100)], ValueError, "2 channels"),
        (torch.zeros(1, 2, 100), ValueError, "mono"),
        ([torch.zeros(100, dtype=torch.int16)], TypeError, "int16"),
        ([torch.zeros(0)], ValueError, "empty"),
        ([torch.tensor([0.0, float("nan")])], ValueError, "NaN"),
        (torch.zeros(1, 1, 1, 10), ValueError, "shape"),
        ([], ValueError, "empty list"),
        ([[0.0, 1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_check_waveforms_errors(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_waveforms(value, sample_rate=16_000, expected_rate=16_000)  # type: ignore[arg-type]


def test_check_waveforms_rejects_a_wrong_sample_rate() -> None:
    with pytest.raises(ValueError, match=r"22050 Hz.*16000 Hz.*resample"):
        check_waveforms(torch.zeros(10), sample_rate=22_050, expected_rate=16_000)


def test_missing_torchaudio_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchaudio", None)
    with pytest.raises(ImportError, match=r"omni-blocks\[audio\]"):
        resample(torch.zeros(100), 16_000, 8_000)
