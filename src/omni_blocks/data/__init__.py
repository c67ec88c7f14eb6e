"""Data for the offline miniature corpus: speech synthesised with espeak-ng."""

from omni_blocks.data.speech_synth import (
    DIGIT_WORDS,
    TEST_VOICES,
    TRAIN_VOICES,
    EspeakNotFoundError,
    SpokenWord,
    espeak_available,
    spoken_words,
    synthesize_speech,
)

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
