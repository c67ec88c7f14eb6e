from __future__ import annotations

import pytest
import torch
from mini_omni.speech_synth import (
    DIGIT_WORDS,
    TEST_VOICES,
    TRAIN_VOICES,
    EspeakNotFoundError,
    espeak_available,
    spoken_words,
    synthesize_speech,
)

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_missing_executable_is_a_clear_error() -> None:
    assert not espeak_available("no-such-espeak-binary")
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        synthesize_speech("one", executable="no-such-espeak-binary")


def test_bad_arguments_are_rejected_before_synthesis() -> None:
    with pytest.raises(ValueError, match="empty"):
        synthesize_speech("  ")
    with pytest.raises(ValueError, match="speed"):
        synthesize_speech("one", speed=10)
    with pytest.raises(ValueError, match="pitch"):
        synthesize_speech("one", pitch=100)


def test_held_out_voices_are_not_training_voices() -> None:
    assert not set(TRAIN_VOICES) & set(TEST_VOICES)
    assert len(DIGIT_WORDS) == 10


@needs_espeak
def test_synthesize_speech_makes_trimmed_deterministic_16khz_audio() -> None:
    wave = synthesize_speech("seven", voice="en+m3", speed=150)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert 0.3 * 16_000 < wave.shape[0] < 1.0 * 16_000
    assert 0.1 < float(wave.abs().max()) <= 1.0
    assert torch.equal(wave, synthesize_speech("seven", voice="en+m3", speed=150))
    untrimmed = synthesize_speech("seven", voice="en+m3", speed=150, trim=False)
    assert untrimmed.shape[0] > wave.shape[0] + 0.2 * 16_000  # espeak-ng's trailing silence
    at_22k = synthesize_speech("seven", voice="en+m3", speed=150, sample_rate=22_050)
    assert abs(at_22k.shape[0] / wave.shape[0] - 22_050 / 16_000) < 0.01


@needs_espeak
def test_voices_and_speeds_change_the_audio() -> None:
    a = synthesize_speech("three", voice="en+m3", speed=150)
    b = synthesize_speech("three", voice="en+f2", speed=150)
    slow = synthesize_speech("three", voice="en+m3", speed=100)
    assert not torch.equal(a[: b.shape[0]], b[: a.shape[0]])
    assert slow.shape[0] > a.shape[0] * 1.2


@needs_espeak
def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="voice='xx-nonexistent'"):
        synthesize_speech("one", voice="xx-nonexistent")


@needs_espeak
def test_spoken_words_enumerates_every_combination() -> None:
    words = spoken_words(["one", "two"], voices=TEST_VOICES, speeds=(140,))
    assert [(w.text, w.voice) for w in words] == [
        ("one", TEST_VOICES[0]),
        ("one", TEST_VOICES[1]),
        ("two", TEST_VOICES[0]),
        ("two", TEST_VOICES[1]),
    ]
    assert all(w.sample_rate == 16_000 and w.speed == 140 for w in words)
