"""The GLM-4-Voice tokenizer adapter, on a tiny random WhisperVQ model saved in the upstream
layout (`model.encoder.*` keys, plus keys the loader must skip) and reloaded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from omni_blocks.tokenizers.base import ModalityTokenizer, SpeechTokenizer  # noqa: E402
from omni_blocks.tokenizers.glm4voice import (  # noqa: E402
    GLM4VOICE_VQ_DEFAULTS,
    GLM4VoiceTokenizer,
    SpeechDecoder,
    WhisperVQEncoder,
)
from omni_blocks.vocab import Modality  # noqa: E402

CODES = 64
MAX_POSITIONS = 100  # 100 positions x stride 2 x hop 160 = 2-s chunks (upstream: 1,500 = 30 s)


def tiny_config(**overrides: object) -> object:
    fields = {
        "d_model": 32,
        "encoder_layers": 4,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 64,
        "num_mel_bins": 16,
        "max_source_positions": MAX_POSITIONS,
        "pooling_kernel_size": 4,
        "pooling_type": "avg",
        "pooling_position": 2,
        "quantize_position": 3,
        "quantize_vocab_size": CODES,
        "quantize_causal_block_size": 20,  # 20 positions at 50 Hz = 0.4 s (upstream: 200 = 4 s)
        "encoder_causal_convolution": True,
    }
    fields.update(overrides)
    return transformers.WhisperConfig(**fields)


def speechy(seconds: float, seed: int, amplitude: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16_000)) / 16_000
    f0 = 100.0 + 50.0 * seed
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 12))
    return amplitude * (wave + 0.1 * torch.randn(t.shape, generator=g))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, WhisperVQEncoder]:
    torch.manual_seed(0)
    encoder = WhisperVQEncoder(tiny_config())
    folder = tmp_path_factory.mktemp("glm4voice")
    encoder.save_pretrained(folder, transformers.WhisperFeatureExtractor(feature_size=16))
    # Keys of the full upstream checkpoint that the encoder-only loader skips.
    state = load_file(str(folder / "model.safetensors"))
    state["model.encoder.layers.3.fc1.weight"] = torch.zeros(64, 32)  # beyond quantize_position
    state["model.encoder.layer_norm.weight"] = torch.ones(32)
    state["model.encoder.ema_count"] = torch.ones(CODES)
    state["model.decoder.embed_tokens.weight"] = torch.zeros(10, 32)
    state["proj_out.weight"] = torch.zeros(10, 32)
    save_file(state, str(folder / "model.safetensors"))
    return folder, encoder


@pytest.fixture(scope="module")
def tok(checkpoint: tuple[Path, WhisperVQEncoder]) -> GLM4VoiceTokenizer:
    return GLM4VoiceTokenizer(str(checkpoint[0]), batch_size=3)


def test_checkpoint_uses_upstream_key_names(checkpoint: tuple[Path, WhisperVQEncoder]) -> None:
    keys = set(load_file(str(checkpoint[0] / "model.safetensors")))
    for key in [
        "model.encoder.conv1.weight",
        "model.encoder.conv2.bias",
        "model.encoder.embed_positions.weight",
        "model.encoder.embed_positions2.weight",
        "model.encoder.codebook.weight",
        "model.encoder.layers.0.self_attn.k_proj.weight",
        "model.encoder.layers.2.self_attn_layer_norm.bias",
        "model.encoder.layers.2.fc2.weight",
    ]:
        assert key in keys
    assert "model.encoder.layers.0.self_attn.k_proj.bias" not in keys  # Whisper: no key bias


def test_reload_gives_the_same_weights(checkpoint: tuple[Path, WhisperVQEncoder]) -> None:
    folder, encoder = checkpoint
    loaded = WhisperVQEncoder.from_pretrained(folder)
    ours, theirs = encoder.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert len(loaded.layers) == 3 and loaded.codebook_size == CODES


def test_protocol_properties(tok: GLM4VoiceTokenizer) -> None:
    assert isinstance(tok, ModalityTokenizer) and isinstance(tok, SpeechTokenizer)
    assert tok.modality is Modality.SPEECH and tok.codebook_size == CODES
    assert tok.sample_rate == 16_000
    # conv1 stride 1 x conv2 stride 2 x pooling 4 x hop 160 = 1,280 samples: 12.5 Hz
    assert tok.samples_per_token == 1_280 and tok.frame_rate == 12.5
    assert tok.chunk_samples == MAX_POSITIONS * 2 * 160


def test_token_count_follows_the_upstream_stride_math(tok: GLM4VoiceTokenizer) -> None:
    lengths = [1, 1_279, 1_280, 1_281, 16_000, 40_000, 70_001]  # the last two span 2-s chunks
    waves = [speechy(n / 16_000, i) for i, n in enumerate(lengths)]
    codes = tok.encode(waves)
    assert [c.shape[0] for c in codes] == [math.ceil(n / 1_280) for n in lengths]
    for c in codes:
        assert c.dtype == torch.long and int(c.min()) >= 0 and int(c.max()) < CODES
    assert len(torch.cat(codes).unique()) > 1  # not a constant encoder


def test_encode_is_deterministic_and_batch_independent(tok: GLM4VoiceTokenizer) -> None:
    waves = [speechy(0.9, 1), speechy(0.3, 2), speechy(2.7, 3)]
    batched = tok.encode(waves)
    alone = [tok.encode(w) for w in waves]
    assert all(torch.equal(a, b) for a, b in zip(batched, alone, strict=True))
    stacked = tok.encode(torch.stack([waves[0], waves[0]]))
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (2, 12)
    assert torch.equal(stacked[1], batched[0])


def test_block_causal_attention_streams(tok: GLM4VoiceTokenizer) -> None:
    # 0.4-s attention blocks: codes of the blocks before the appended audio (the first
    # 0.8 s = 10 codes) ignore it (upstream's block-causal mask + causal convolutions; with
    # full attention the 4th code already changes). The appended audio is quieter, so Whisper's
    # per-utterance log-mel clamp (max - 8) does not move.
    head = speechy(1.0, 1)
    longer = torch.cat([head, speechy(1.0, 4, amplitude=0.05)])
    a, b = tok.encode(head), tok.encode(longer)
    assert torch.equal(a[:10], b[:10])


def test_input_errors(tok: GLM4VoiceTokenizer) -> None:
    with pytest.raises(ValueError, match="24000 Hz"):
        tok.encode(speechy(0.5, 1), sample_rate=24_000)
    with pytest.raises(ValueError, match="channels"):
        tok.encode([torch.zeros(2, 800)])
    with pytest.raises(TypeError, match="dtype"):
        tok.encode([torch.zeros(800, dtype=torch.int32)])
    with pytest.raises(ValueError, match="empty"):
        tok.encode([torch.zeros(0)])


class ToneDecoder:
    """A stand-in decoder: one 1,764-sample (80 ms at 22.05 kHz) tone per code."""

    sample_rate = 22_050

    def decode(self, codes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        t = torch.arange(1_764) / self.sample_rate
        return [
            torch.cat([torch.sin(2 * math.pi * (100 + 10 * int(c)) * t) for c in seq])
            for seq in codes
        ]


def test_decode_needs_a_decoder_and_checks_codes(checkpoint: tuple[Path, WhisperVQEncoder]) -> None:
    bare = GLM4VoiceTokenizer(str(checkpoint[0]))
    with pytest.raises(RuntimeError, match="no speech decoder"):
        bare.decode(torch.tensor([1, 2]))
    assert isinstance(ToneDecoder(), SpeechDecoder)
    tok = GLM4VoiceTokenizer(str(checkpoint[0]), decoder=ToneDecoder())
    codes = tok.encode([speechy(0.5, 1), speechy(0.2, 2)])
    waves = tok.decode(codes)
    assert [w.shape[0] for w in waves] == [c.shape[0] * 1_764 for c in codes]
    assert tok.decode(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2 * 1_764)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="outside"):
        tok.decode(torch.tensor([0, CODES]))
    with pytest.raises(TypeError, match="integer"):
        tok.decode([torch.tensor([0.5])])


def test_loading_errors(tmp_path: Path, checkpoint: tuple[Path, WhisperVQEncoder]) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        WhisperVQEncoder.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor a hub id"):
        GLM4VoiceTokenizer(str(tmp_path / "missing")).load()
    # A checkpoint lacking the codebook is refused, not silently left random.
    folder = tmp_path / "broken"
    WhisperVQEncoder(tiny_config()).save_pretrained(folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.encoder.codebook.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="codebook"):
        WhisperVQEncoder.from_pretrained(folder)
    with pytest.raises(ValueError, match="pooling_type"):
        WhisperVQEncoder(tiny_config(pooling_type="median"))
    with pytest.raises(TypeError, match="WhisperConfig"):
        WhisperVQEncoder({"d_model": 32})


def test_defaults_are_the_released_tokenizer_s() -> None:
    assert GLM4VOICE_VQ_DEFAULTS["quantize_vocab_size"] == 16_384
    assert GLM4VOICE_VQ_DEFAULTS["pooling_kernel_size"] == 4
    assert GLM4VOICE_VQ_DEFAULTS["quantize_position"] == 16
    # A config without the VQ fields gets the released tokenizer's values.
    encoder = WhisperVQEncoder(
        transformers.WhisperConfig(
            d_model=8,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=16,
            num_mel_bins=8,
            max_source_positions=8,
            quantize_position=2,
            pooling_position=1,
            quantize_vocab_size=None,
        )
    )
    assert encoder.codebook_size == 16_384 and encoder.frames_per_token == 8


@pytest.mark.parametrize("variant", ["tiny", "tiny_causal"])
def test_codes_are_glm4voices_own_on_its_checkpoint_layout(variant: str) -> None:
    """Golden: GLM-4-Voice's `load_quantize_encoder` + `extract_speech_token` on a tiny random
    model of the real layout (`tests/fixtures/glm4voice/`, see its `make_fixture.py`), with
    the released tokenizer's block-causal attention and with `quantize_causal_encoder`."""
    import json

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "glm4voice"
    expected = json.loads((fixture / "codes.json").read_text())["codes"][variant]
    waves = load_file(str(fixture / "waveforms.safetensors"))
    tok = GLM4VoiceTokenizer(str(fixture / variant))
    for i, codes in enumerate(expected):
        ours = tok.encode(waves[f"waveform.{i}"], sample_rate=16_000)
        assert ours.tolist() == codes, i
