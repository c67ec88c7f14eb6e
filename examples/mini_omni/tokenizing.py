"""The miniature's tokenizers and unified vocabulary, trained on the training split only.

- images: [`PatchVQTokenizer`][omni_blocks.tokenizers.PatchVQTokenizer], 2x2 patches against
  a k-means codebook: an 8x8 digit becomes 16 tokens (the stand-in for MAGVIT-v2);
- speech: [`MelVQSpeechTokenizer`][omni_blocks.tokenizers.MelVQSpeechTokenizer], one k-means
  code per 80 ms of log-mel frames (12.5 Hz, the stand-in for GLM-4-Voice);
- text: a small byte-level BPE trained on the corpus text (the stand-in for Qwen2's BPE).

The `VocabLayout` then puts text, speech and image codes in one id space, with Dream's
special-token roles: `<|endoftext|>` ends and pads, `<|mask|>` is the absorbing state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from omni_blocks.tokenizers import MelVQSpeechTokenizer, PatchVQTokenizer, TextTokenizer
from omni_blocks.vocab import VocabLayout

from .corpus import Corpus, all_texts


@dataclass
class Tokenizers:
    """The three tokenizers and the layout that joins their codebooks."""

    text: TextTokenizer
    image: PatchVQTokenizer
    speech: MelVQSpeechTokenizer
    layout: VocabLayout

    def encode_images(self, images: Tensor) -> Tensor:
        """Images `(n, 1, 8, 8)` -> local image codes `(n, 16)`."""
        return self.image.encode(images)

    def encode_speech(self, waveforms: list[Tensor]) -> list[Tensor]:
        """Waveforms -> local speech codes, one `(tokens,)` tensor each."""
        codes = self.speech.encode(list(waveforms))
        assert isinstance(codes, list)
        return codes


def build_tokenizers(
    corpus: Corpus,
    workdir: Path,
    *,
    image_codes: int = 64,
    speech_codes: int = 128,
    text_vocab: int = 384,
    extra_texts: Sequence[str] = (),
    progress: bool = False,
) -> Tokenizers:
    """Train (or load from `workdir/tokenizers`) the tokenizers on the training split.

    The BPE sees the corpus text plus `extra_texts` (instructions, chat markers), repeated so
    that every word clears the minimum merge frequency.
    """
    folder = workdir / "tokenizers" / f"img{image_codes}-sp{speech_codes}"
    if (folder / "image").exists() and (folder / "speech").exists():
        image = PatchVQTokenizer.load(folder / "image")
        speech = MelVQSpeechTokenizer.load(folder / "speech")
    else:
        torch.manual_seed(0)
        image = PatchVQTokenizer(image_size=8, patch_size=2, codebook_size=image_codes)
        image.fit(corpus.train_images, progress=progress)
        speech = MelVQSpeechTokenizer(codebook_size=speech_codes)
        speech.fit([u.waveform for u in corpus.speech("train")], progress=progress)
        image.save(folder / "image")
        speech.save(folder / "speech")
    # BPE training is deterministic and takes milliseconds: no cache needed.
    text = TextTokenizer.train_bpe([*all_texts(), *extra_texts] * 4, vocab_size=text_vocab)
    layout = VocabLayout(
        text_size=text.codebook_size,
        speech_size=speech.codebook_size,
        image_size=image.codebook_size,
        special_ids=text.special_ids,
    )
    return Tokenizers(text=text, image=image, speech=speech, layout=layout)
