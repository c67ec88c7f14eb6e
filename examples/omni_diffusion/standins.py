"""Tiny random stand-ins of the full recipe's inputs, in the same formats, for `--dry-run`.

Each function writes what the real recipe downloads or prepares, at toy size, so that the
stage configs run unchanged except for the paths that point at these files:

- `tiny_dream`: a Dream-format checkpoint folder (Dream's `config.json` fields,
  `model.safetensors` with Qwen2 / Dream key names, bfloat16 weights);
- `tiny_magvit`: a MAGVIT-v2 folder in the upstream key layout, 8,192 codes, 8x8 images
  (16 codes each);
- `tiny_glm4voice`: a GLM-4-Voice tokenizer folder (WhisperVQ `model.encoder.*` keys,
  16,384 codes, a Whisper feature extractor with 16 mel bins);
- `write_manifests`: JSONL manifests of synthetic examples for every task, with PNG
  images and WAV audio files (one WAV at 22.05 kHz, to go through resampling) or
  pre-tokenized codes (inline lists and `.npy` files).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omni_blocks.backbones import NativeTransformer
from omni_blocks.tokenizers import MagvitV2
from omni_blocks.vocab import VocabLayout

__all__ = [
    "MANIFESTS",
    "tiny_dream",
    "tiny_glm4voice",
    "tiny_magvit",
    "write_manifests",
]

MANIFESTS = "data/omni_diffusion"
"""Where the stage configs read their manifests (relative to the launch directory)."""

# Dream-7B's config.json keys that describe the file rather than the network.
_DREAM_KEYS: dict[str, Any] = {
    "architectures": ["DreamModel"],
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "model_type": "Dream",
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "pad_token_id": 151643,
    "mask_token_id": 151666,
    "hidden_act": "silu",
    "rope_scaling": None,
    "sliding_window": None,
    "use_sliding_window": False,
    "use_cache": True,
    "torch_dtype": "bfloat16",
}

_CAPTIONS = [
    "a red square on a blue background",
    "two green circles next to a tree",
    "a small yellow boat on the sea",
    "a white cat sleeping on a sofa",
]
_QUESTIONS = [
    ("what colour is the square", "red"),
    ("how many circles are there", "two"),
    ("what is on the sea", "a boat"),
    ("where is the cat", "on a sofa"),
]


def tiny_dream(folder: Path, *, vocab_size: int = 151_680, seed: int = 0) -> Path:
    """A random two-layer Dream-format checkpoint: `config.json` + `model.safetensors`.

    `vocab_size` covers Dream's 151,667 text ids (rounded up, as Dream pads its embedding),
    so loading it with the recipe's `vocab_size: 176264` grows the embedding as the real
    checkpoint's is grown.
    """
    torch.manual_seed(seed)
    net = NativeTransformer(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1_000_000.0,
        max_position_embeddings=4096,
    )
    net.to(torch.bfloat16).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for key in ("shift_logits", "is_causal"):  # written by omni_blocks, absent from Dream's
        config.pop(key, None)
    config.update(_DREAM_KEYS)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def tiny_magvit(folder: Path, *, seed: int = 0) -> Path:
    """A random MAGVIT-v2 (two levels, 13-bit LFQ = 8,192 codes) for 8x8 images (16 codes)."""
    torch.manual_seed(seed)
    model = MagvitV2(
        ch=32,
        encoder_ch_mult=(1, 1),
        encoder_num_res_blocks=(1, 1),
        decoder_ch_mult=(1, 1),
        decoder_num_res_blocks=(1, 1),
        resolution=8,
        z_channels=13,
        image_size=8,
    )
    return model.save_pretrained(folder)


def tiny_glm4voice(folder: Path, *, seed: int = 0) -> Path:
    """A random GLM-4-Voice tokenizer (16,384 codes, 12.5 Hz) with a tiny Whisper encoder."""
    import transformers

    from omni_blocks.tokenizers.glm4voice import WhisperVQEncoder

    torch.manual_seed(seed)
    config = transformers.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        num_mel_bins=16,
        max_source_positions=100,
        pooling_kernel_size=4,
        pooling_type="avg",
        pooling_position=1,
        quantize_position=2,
        quantize_vocab_size=16_384,
        quantize_causal_block_size=20,
        encoder_causal_convolution=True,
    )
    encoder = WhisperVQEncoder(config)
    extractor = transformers.WhisperFeatureExtractor(feature_size=16)
    return encoder.save_pretrained(folder, extractor)


def tiny_sensevoice(folder: Path, *, seed: int = 0) -> Path:
    """A random SenseVoiceSmall of two SAN-M blocks (width 16, two heads) in the layout of
    `FunAudioLLM/SenseVoiceSmall` (its CTC head included, as `model.safetensors`), and an
    `am.mvn` of its 560 feature shifts and scales."""
    from safetensors.torch import save_file

    from omni_blocks.speech import SenseVoiceEncoder

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    encoder = SenseVoiceEncoder(
        output_size=16, attention_heads=2, linear_units=32, num_blocks=2, tp_blocks=1
    )
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    state["ctc.ctc_lo.weight"] = 0.02 * torch.randn(64, 16)
    state["ctc.ctc_lo.bias"] = torch.zeros(64)
    save_file(state, str(folder / "model.safetensors"))
    shift = " ".join(f"{-10.0 - 0.001 * i:.6f}" for i in range(560))
    scale = " ".join(f"{0.2 + 0.0001 * i:.6f}" for i in range(560))
    (folder / "am.mvn").write_text(
        "<Nnet>\n<Splice> 560 560\n[ 0 ]\n<AddShift> 560 560\n"
        f"<LearnRateCoef> 0 [ {shift} ]\n<Rescale> 560 560\n"
        f"<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n"
    )
    return folder


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)  # not square: cropped
    Image.fromarray(pixels).save(path)


def _wav(path: Path, seconds: float, rate: int, seed: int) -> None:
    from omni_blocks.tokenizers.audio import write_wav

    t = torch.arange(int(seconds * rate)) / rate
    f0 = 120.0 + 40.0 * seed
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6))
    write_wav(path, 0.2 * torch.as_tensor(wave), rate)


def write_manifests(
    root: Path, layout: VocabLayout, *, image_tokens: int = 16, per_task: int = 4
) -> dict[str, Path]:
    """Manifests for every task under `root / MANIFESTS`, media beside them.

    Half of the examples of each task give media files (PNG, WAV), the other half
    pre-tokenized codes (inline lists, or `.npy` files for the speech of one task), so both
    ways of preparing data are read.

    Returns:
        Task name -> manifest path.
    """
    folder = root / MANIFESTS
    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def image(i: int) -> dict[str, Any]:
        if i % 2 == 0:
            name = f"image_{i}.png"
            _png(media / name, seed=i)
            return {"image": f"media/{name}"}
        return {"image_codes": rng.integers(0, layout.image_size, image_tokens).tolist()}

    def speech(i: int, key: str = "audio", heard: bool = False) -> dict[str, Any]:
        # speech the model hears goes through SenseVoice's front end: always a file
        if i % 2 == 0 or heard:
            name = f"{key}_{i}.wav"
            rate = 22_050 if i == 0 else 16_000  # one file goes through resampling
            _wav(media / name, seconds=0.3 + 0.1 * i, rate=rate, seed=i)
            return {"audio": f"media/{name}"}
        codes = rng.integers(0, layout.speech_size, 4 + i)
        if i == 1:
            np.save(media / f"codes_{key}_{i}.npy", codes)
            return {"speech_codes": f"media/codes_{key}_{i}.npy"}
        return {"speech_codes": codes.tolist()}

    rows: dict[str, list[dict[str, Any]]] = {task: [] for task in TASK_KEYS}
    for i in range(per_task):
        caption = _CAPTIONS[i % len(_CAPTIONS)]
        question, answer = _QUESTIONS[i % len(_QUESTIONS)]
        base = {"id": f"synthetic-{i}"}
        rows["t2i"].append({**base, "caption": caption, **image(i)})
        rows["caption"].append({**base, "caption": caption, **image(i)})
        rows["vqa"].append({**base, "question": question, "answer": answer, **image(i)})
        rows["asr"].append({**base, "text": caption, **speech(i, heard=True)})
        rows["tts"].append({**base, "text": caption, **speech(i)})
        rows["s2i"].append({**base, **speech(i, "spoken_caption", heard=True), **image(i)})
        rows["spoken_vqa"].append(
            {**base, "answer": answer, **speech(i, "spoken_question", heard=True), **image(i)}
        )
    out = {}
    for task, records in rows.items():
        path = folder / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        out[task] = path
    return out


TASK_KEYS = ("t2i", "caption", "vqa", "asr", "tts", "s2i", "spoken_vqa")
"""The tasks the stage configs train on (each has a manifest `<task>.jsonl`)."""
