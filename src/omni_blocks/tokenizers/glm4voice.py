"""GLM-4-Voice's speech tokenizer (12.5 Hz, 16,384 codes) and the speech-decoder protocol.

Omni-Diffusion generates speech as GLM-4-Voice tokens (`THUDM/glm-4-voice-tokenizer`): the
first 16 layers of a Whisper-large-v3 encoder with a causal convolution stem, average pooling
by 4 after layer 16 and nearest-neighbour vector quantisation into a 16,384-entry codebook.
This module re-implements that inference path on top of transformers' `WhisperEncoderLayer`
and `WhisperFeatureExtractor`, with the upstream parameter names, so the published weights
load unchanged:

| upstream (`speech_tokenizer/modeling_whisper.py`, `WhisperVQEncoder`) | here |
|---|---|
| `conv1`, `conv2` (causal when `encoder_causal_convolution`), GELU | same names |
| `embed_positions` (learned, 1,500 x 1,280) | same |
| `layers.0` ... `layers.{quantize_position - 1}` (WhisperEncoderLayer) | same |
| `pooling_layer` (AvgPool1d(4) after layer `pooling_position`) | same |
| `codebook` (Embedding(16384, 1280)), nearest entry by squared L2 | same |
| `embed_positions2`, `ema_count`, `ema_weight` (training / later layers) | kept or ignored |

Code rate: `conv1` stride 1 x `conv2` stride 2 x pooling 4 x hop 160 = 1,280 samples per code,
i.e. 16,000 / 1,280 = 12.5 codes per second (`speech_tokenizer/utils.py`,
`extract_speech_token`: `stride = conv1.stride * conv2.stride * pooling_kernel_size *
hop_length`). Audio is cut into 30-s chunks (the encoder's 1,500 positions), padded to a
multiple of the stride, and codes at padded positions are dropped using the feature
extractor's attention mask subsampled by 2 then by 4, as upstream and as Omni-Diffusion's
`tokenizer_sensevoice_glm4voice.py` do.

Where we differ: upstream resamples any input rate on the fly with torchaudio; here a wrong
rate is an error naming [`resample`][omni_blocks.tokenizers.audio.resample], so a mistake is
never silent. Only the inference path (no EMA codebook training) is implemented.

The speech *decoder* (GLM-4-Voice-Decoder: a CosyVoice flow-matching model plus a HiFT
vocoder, 22.05 kHz) is out of scope;
[`SpeechDecoder`][omni_blocks.tokenizers.glm4voice.SpeechDecoder] is the protocol a wrapper
around it implements (see `docs/tokenizers/speech.md`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from omni_blocks.tokenizers.audio import check_waveforms
from omni_blocks.vocab import Modality

__all__ = [
    "GLM4VOICE_VQ_DEFAULTS",
    "GLM4VoiceTokenizer",
    "SpeechDecoder",
    "WhisperVQEncoder",
]

GLM4VOICE_VQ_DEFAULTS: dict[str, Any] = {
    "pooling_kernel_size": 4,
    "pooling_type": "avg",
    "pooling_position": 16,
    "quantize_vocab_size": 16_384,
    "quantize_position": 16,
    "quantize_causal_block_size": 200,
    "quantize_causal_encoder": False,
    "quantize_encoder_only": True,
    "encoder_causal_convolution": True,
    "encoder_causal_attention": False,
}
"""The VQ fields of `THUDM/glm-4-voice-tokenizer`'s `config.json` (a `WhisperConfig` with
extra fields); used for any field a config lacks."""

_PREFIXES = ("model.encoder.", "encoder.")
_IGNORED = ("layer_norm.", "ema_count", "ema_weight")
_WEIGHTS = "model.safetensors"


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the GLM-4-Voice tokenizer needs `transformers` (Whisper encoder layers and feature "
            "extractor); install the hf extra: pip install 'omni-blocks[hf]'"
        ) from err
    return transformers


@runtime_checkable
class SpeechDecoder(Protocol):
    """Speech codes -> waveforms: the detokenizer a speech tokenizer hands generation to.

    GLM-4-Voice decodes its 12.5 Hz codes with GLM-4-Voice-Decoder (`THUDM/glm-4-voice-decoder`:
    `config.yaml`, `flow.pt`, `hift.pt`): a CosyVoice flow-matching model maps codes to 80-band
    mel frames and a HiFT vocoder maps those to 22,050 Hz audio (`flow_inference.py`,
    `AudioDecoder.token2wav`). A wrapper around it implements this protocol (example in
    `docs/tokenizers/speech.md`); so does
    [`MelVQSpeechTokenizer`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer] for its own
    codes.
    """

    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz of the decoded waveforms (GLM-4-Voice-Decoder: 22,050)."""
        ...

    def decode(self, codes: Sequence[Tensor]) -> list[Tensor]:
        """One `(tokens,)` integer tensor per utterance -> one `(time,)` float waveform each."""
        ...


class _CausalConv1d(nn.Conv1d):
    """A Conv1d that pads `dilation * (kernel - 1)` zeros on the left only (upstream
    `CausalConv1d`): output frame `t` sees input frames up to `t * stride`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.left_padding = self.dilation[0] * (kernel_size - 1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(nn.functional.pad(x, (self.left_padding, 0)))


class WhisperVQEncoder(nn.Module):
    """GLM-4-Voice's quantising Whisper encoder, inference path, upstream parameter names.

    mel `(batch, n_mels, frames)` -> GELU(conv1) -> GELU(conv2, stride 2) -> + learned positions
    -> `quantize_position` Whisper encoder layers (pooling by `pooling_kernel_size` after layer
    `pooling_position`) -> nearest codebook entry by squared Euclidean distance.

    Attention: with `quantize_causal_block_size = B` (GLM-4-Voice: 200 frames at 50 Hz, i.e.
    4 s) a frame sees every frame of its own block and of earlier blocks (upstream
    `get_block_causal_attention_mask`; `B / pooling_kernel_size` after pooling); padded frames
    are never attended to. With `encoder_causal_attention` or `quantize_causal_encoder` (off
    in the released tokenizer) every layer is plainly causal, without block or padding mask,
    as upstream's SDPA path with `is_causal` is.

    Args:
        config: a transformers `WhisperConfig` carrying the VQ fields of
            [`GLM4VOICE_VQ_DEFAULTS`][omni_blocks.tokenizers.glm4voice.GLM4VOICE_VQ_DEFAULTS]
            (missing ones take those defaults).
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        transformers = _import_transformers()
        from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

        if not isinstance(config, transformers.WhisperConfig):
            raise TypeError(f"config must be a transformers.WhisperConfig, got {type(config)}")
        for name, default in GLM4VOICE_VQ_DEFAULTS.items():
            if getattr(config, name, None) is None:
                setattr(config, name, default)
        if getattr(config, "_attn_implementation", None) is None:
            config._attn_implementation = "sdpa"
        self.config = config
        self.pooling_kernel_size: int = int(config.pooling_kernel_size)
        self.pooling_position: int = int(config.pooling_position)
        self.quantize_position: int = int(config.quantize_position)
        if not 1 <= self.pooling_position <= self.quantize_position:
            raise ValueError(
                f"need 1 <= pooling_position <= quantize_position, got {self.pooling_position} "
                f"and {self.quantize_position}"
            )
        if config.pooling_type not in ("avg", "max"):
            raise ValueError(f"pooling_type must be 'avg' or 'max', got {config.pooling_type!r}")
        d, mels = config.d_model, config.num_mel_bins
        if config.encoder_causal_convolution:
            self.conv1: nn.Conv1d = _CausalConv1d(mels, d, kernel_size=3)
            self.conv2: nn.Conv1d = _CausalConv1d(d, d, kernel_size=3, stride=2)
        else:
            self.conv1 = nn.Conv1d(mels, d, kernel_size=3, padding=1)
            self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_source_positions, d)
        self.layers = nn.ModuleList(
            WhisperEncoderLayer(config) for _ in range(self.quantize_position)
        )
        pool = nn.AvgPool1d if config.pooling_type == "avg" else nn.MaxPool1d
        self.pooling_layer = pool(kernel_size=self.pooling_kernel_size)
        self.codebook = nn.Embedding(config.quantize_vocab_size, d)
        # Position table added after quantisation, used only by the layers that follow the
        # quantiser in the full model; kept so that checkpoints load key for key.
        self.embed_positions2 = nn.Embedding(
            math.ceil(config.max_source_positions / self.pooling_kernel_size), d
        )
        self.eval()

    @property
    def codebook_size(self) -> int:
        """Number of codes (16,384 for GLM-4-Voice)."""
        return int(self.codebook.num_embeddings)

    @property
    def frames_per_token(self) -> int:
        """Mel frames per code: conv strides times the pooling kernel (8 for GLM-4-Voice)."""
        return int(self.conv1.stride[0] * self.conv2.stride[0]) * self.pooling_kernel_size

    def _attention_bias(self, valid: Tensor, block: int | None, dtype: torch.dtype) -> Tensor:
        seq = valid.shape[1]
        idx = torch.arange(seq, device=valid.device)
        if self.config.encoder_causal_attention or getattr(
            self.config, "quantize_causal_encoder", False
        ):
            # upstream's causal layers (WhisperVQEncoderLayer(is_causal=True)) run SDPA with
            # is_causal and no mask: neither blocks nor padding
            causal = (idx[None, :] <= idx[:, None])[None].expand(valid.shape[0], -1, -1)
            bias = torch.zeros(causal.shape, dtype=dtype, device=valid.device)
            return bias.masked_fill(~causal, torch.finfo(dtype).min)[:, None]
        allowed = valid[:, None, :].expand(-1, seq, -1)
        if block is not None:
            blocks = idx // max(block, 1)
            allowed = allowed & (blocks[None, :] <= blocks[:, None])[None]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
        bias = bias.masked_fill(~allowed, torch.finfo(dtype).min)
        return bias[:, None]

    @torch.no_grad()
    def forward(
        self,
        input_features: Float[Tensor, "batch mels frames"],
        attention_mask: Int[Tensor, "batch frames"] | Bool[Tensor, "batch frames"],
    ) -> tuple[Int[Tensor, "batch tokens"], Bool[Tensor, "batch tokens"]]:
        """Codes and their validity (False at padding) for a batch of mel features.

        Args:
            input_features: Whisper log-mel features (`WhisperFeatureExtractor` output).
            attention_mask: 1 at real frames, 0 at padding (frame level).
        """
        if input_features.shape[1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features have {input_features.shape[1]} mel bins, the encoder expects "
                f"{self.config.num_mel_bins}"
            )
        stride = int(self.conv1.stride[0] * self.conv2.stride[0])
        valid = attention_mask.bool()[:, ::stride]
        hidden = nn.functional.gelu(self.conv1(input_features))
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)
        seq = hidden.shape[1]
        if seq > self.config.max_source_positions:
            raise ValueError(
                f"{seq} encoder positions exceed max_source_positions="
                f"{self.config.max_source_positions}; feed at most "
                f"{self.config.max_source_positions * stride} frames per chunk"
            )
        if valid.shape[1] != seq:
            raise ValueError(f"attention_mask gives {valid.shape[1]} positions, conv gives {seq}")
        hidden = hidden + self.embed_positions.weight[:seq]
        block = self.config.quantize_causal_block_size
        bias = self._attention_bias(valid, block, hidden.dtype)
        for idx, layer in enumerate(self.layers):
            hidden = layer(hidden, bias)
            if idx + 1 == self.pooling_position:
                k = self.pooling_kernel_size
                hidden = hidden.transpose(1, 2)
                if hidden.shape[-1] % k:
                    hidden = nn.functional.pad(hidden, (0, k - hidden.shape[-1] % k))
                hidden = self.pooling_layer(hidden).transpose(1, 2)
                valid = valid[:, ::k]
                bias = self._attention_bias(
                    valid, None if block is None else block // k, hidden.dtype
                )
        flat = hidden.reshape(-1, hidden.shape[-1])
        codebook = self.codebook.weight
        distances = torch.addmm(
            flat.square().sum(dim=1, keepdim=True) + codebook.square().sum(dim=1),
            flat,
            codebook.T,
            alpha=-2.0,
        )
        codes = distances.argmin(dim=1).reshape(hidden.shape[0], hidden.shape[1])
        return codes, valid

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, folder: str | Path, feature_extractor: Any = None) -> Path:
        """Write `config.json` and `model.safetensors` in the upstream layout.

        Keys are prefixed `model.encoder.` as in `THUDM/glm-4-voice-tokenizer` (a saved
        `WhisperVQForConditionalGeneration`); `feature_extractor` (a
        `WhisperFeatureExtractor`), when given, is saved beside them.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        state = {f"model.encoder.{k}": v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / _WEIGHTS))
        if feature_extractor is not None:
            feature_extractor.save_pretrained(str(folder))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> WhisperVQEncoder:
        """Load a local checkpoint folder (`config.json` + `model*.safetensors`).

        Like upstream `load_quantize_encoder`: keys lose their `model.encoder.` prefix; the
        final `layer_norm`, the layers from `quantize_position` on, the decoder, and the EMA
        buffers of codebook training are skipped. Missing encoder weights are an error.
        """
        transformers = _import_transformers()
        from safetensors import safe_open

        folder = Path(folder)
        files = sorted(folder.glob("model*.safetensors"))
        if not (folder / "config.json").exists() or not files:
            raise FileNotFoundError(
                f"{str(folder)!r} needs config.json and model*.safetensors (a GLM-4-Voice "
                "tokenizer checkpoint such as THUDM/glm-4-voice-tokenizer)"
            )
        config = transformers.WhisperConfig.from_pretrained(str(folder))
        model = cls(config)
        state: dict[str, Tensor] = {}
        for path in files:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                    name = next((key[len(p) :] for p in _PREFIXES if key.startswith(p)), None)
                    if name is None or name.startswith(_IGNORED):
                        continue
                    if (
                        name.startswith("layers.")
                        and int(name.split(".")[1]) >= model.quantize_position
                    ):
                        continue
                    state[name] = f.get_tensor(key)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint in {str(folder)!r} does not match the encoder: missing "
                f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
            )
        return model.eval()


class GLM4VoiceTokenizer:
    """The GLM-4-Voice speech tokenizer, a
    [`SpeechTokenizer`][omni_blocks.tokenizers.base.SpeechTokenizer].

    Loads lazily (on first use): `path` is a local folder or a Hugging Face repository id,
    fetched with `huggingface_hub.snapshot_download` (only `config.json`,
    `preprocessor_config.json` and `*.safetensors`).

    Args:
        path: checkpoint folder or hub id (`"THUDM/glm-4-voice-tokenizer"`).
        decoder: a [`SpeechDecoder`][omni_blocks.tokenizers.glm4voice.SpeechDecoder] for
            `decode` (GLM-4-Voice-Decoder in the paper); None for encode-only use.
        device: where the encoder runs (`"cpu"`, `"cuda"`, ...).
        revision: hub revision (branch, tag or commit) when `path` is a repository id.
        batch_size: 30-s chunks per forward pass (upstream uses 128 on a GPU).
    """

    def __init__(
        self,
        path: str = "THUDM/glm-4-voice-tokenizer",
        *,
        decoder: SpeechDecoder | None = None,
        device: str = "cpu",
        revision: str | None = None,
        batch_size: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.decoder = decoder
        self.device = device
        self.revision = revision
        self.batch_size = batch_size
        self._encoder: WhisperVQEncoder | None = None
        self._feature_extractor: Any = None

    # ------------------------------------------------------------------ loading
    def _folder(self) -> Path:
        local = Path(self.path).expanduser()
        if local.is_dir():
            return local
        if local.exists() or self.path.startswith(("/", ".", "~")) or self.path.count("/") != 1:
            raise FileNotFoundError(
                f"{self.path!r} is neither a checkpoint folder nor a hub id like "
                "'THUDM/glm-4-voice-tokenizer'"
            )
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=self.path,
                revision=self.revision,
                allow_patterns=["config.json", "preprocessor_config.json", "*.safetensors"],
            )
        )

    def load(self) -> GLM4VoiceTokenizer:
        """Load the encoder and the feature extractor now (otherwise on first use)."""
        if self._encoder is None:
            transformers = _import_transformers()
            folder = self._folder()
            self._feature_extractor = transformers.WhisperFeatureExtractor.from_pretrained(
                str(folder)
            )
            self._encoder = WhisperVQEncoder.from_pretrained(folder).to(self.device)
        return self

    @property
    def encoder(self) -> WhisperVQEncoder:
        """The quantising Whisper encoder (loads on first access)."""
        self.load()
        assert self._encoder is not None
        return self._encoder

    @property
    def feature_extractor(self) -> Any:
        """The transformers `WhisperFeatureExtractor` (loads on first access)."""
        self.load()
        return self._feature_extractor

    # ------------------------------------------------------------------ protocol
    @property
    def modality(self) -> Modality:
        """Always `Modality.SPEECH`."""
        return Modality.SPEECH

    @property
    def codebook_size(self) -> int:
        """Number of codes (16,384 for GLM-4-Voice)."""
        return self.encoder.codebook_size

    @property
    def sample_rate(self) -> int:
        """Input sample rate (16,000 Hz for GLM-4-Voice)."""
        return int(self.feature_extractor.sampling_rate)

    @property
    def samples_per_token(self) -> int:
        """Audio samples per code: conv strides x pooling x hop length (1,280)."""
        return self.encoder.frames_per_token * int(self.feature_extractor.hop_length)

    @property
    def frame_rate(self) -> float:
        """Codes per second (12.5 for GLM-4-Voice)."""
        return self.sample_rate / self.samples_per_token

    @property
    def chunk_samples(self) -> int:
        """Longest audio per forward pass: the encoder's positions x conv stride x hop (30 s)."""
        enc = self.encoder
        conv_stride = int(enc.conv1.stride[0] * enc.conv2.stride[0])
        return (
            int(enc.config.max_source_positions)
            * conv_stride
            * int(self.feature_extractor.hop_length)
        )

    def encode(
        self, waveforms: Tensor | Sequence[Tensor], sample_rate: int = 16_000
    ) -> Int[Tensor, "*batch tokens"] | list[Int[Tensor, " _tokens"]]:
        """Waveforms -> codes in `[0, 16384)`, `ceil(time / 1280)` per utterance at 16 kHz.

        Each waveform is cut into chunks of `chunk_samples` (30 s), chunks are batched,
        padded to a multiple of `samples_per_token`, encoded, and the codes of padded positions
        dropped (upstream `extract_speech_token`).

        Args:
            waveforms: `(time,)`, `(batch, time)`, `(batch, 1, time)` or a list of `(time,)`.
            sample_rate: rate of `waveforms`; must be `self.sample_rate`.

        Returns:
            `(tokens,)`, `(batch, tokens)` or a list of `(tokens,)` tensors, like the input.
        """
        items, single = check_waveforms(
            waveforms, sample_rate=sample_rate, expected_rate=self.sample_rate
        )
        chunk = self.chunk_samples
        segments: list[tuple[int, Tensor]] = []
        for i, wave in enumerate(items):
            segments += [
                (i, wave[start : start + chunk]) for start in range(0, wave.shape[0], chunk)
            ]
        pieces: list[list[Tensor]] = [[] for _ in items]
        for start in range(0, len(segments), self.batch_size):
            batch = segments[start : start + self.batch_size]
            features = self.feature_extractor(
                [seg.cpu().numpy() for _, seg in batch],
                sampling_rate=self.sample_rate,
                return_attention_mask=True,
                return_tensors="pt",
                padding="longest",
                pad_to_multiple_of=self.samples_per_token,
            )
            codes, valid = self.encoder(
                features["input_features"].to(self.device),
                features["attention_mask"].to(self.device),
            )
            for row, (owner, _) in enumerate(batch):
                pieces[owner].append(codes[row][valid[row]].cpu())
        out = [torch.cat(p) for p in pieces]
        if single:
            return out[0]
        if isinstance(waveforms, Tensor):
            return torch.stack(out)
        return out

    def decode(self, codes: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Codes -> waveforms through `self.decoder` (at `decoder.sample_rate`).

        Raises:
            RuntimeError: no decoder was given.
            ValueError / TypeError: codes of the wrong shape, dtype or range.
        """
        if self.decoder is None:
            raise RuntimeError(
                "GLM4VoiceTokenizer has no speech decoder; pass decoder=... (an object with "
                "sample_rate and decode(codes) -> waveforms, e.g. a wrapper around GLM-4-Voice's "
                "flow_inference.AudioDecoder; see docs/tokenizers/speech.md)"
            )
        single = isinstance(codes, Tensor) and codes.ndim == 1
        if isinstance(codes, Tensor):
            if codes.ndim not in (1, 2):
                raise ValueError(
                    f"codes must be (tokens,) or (batch, tokens), got {tuple(codes.shape)}"
                )
            seqs = [codes] if codes.ndim == 1 else list(codes.unbind(0))
        else:
            seqs = list(codes)
        size = self.codebook_size
        for i, seq in enumerate(seqs):
            if seq.dtype.is_floating_point or seq.dtype == torch.bool:
                raise TypeError(f"codes[{i}] must be an integer tensor, got dtype {seq.dtype}")
            if seq.ndim != 1 or seq.numel() == 0:
                raise ValueError(
                    f"codes[{i}] must be a non-empty (tokens,), got {tuple(seq.shape)}"
                )
            if bool(((seq < 0) | (seq >= size)).any()):
                raise ValueError(f"codes[{i}] holds codes outside [0, {size})")
        waves = self.decoder.decode(seqs)
        if single:
            return waves[0]
        if isinstance(codes, Tensor):
            return torch.stack(waves)
        return waves

    def __repr__(self) -> str:
        return f"GLM4VoiceTokenizer(path={self.path!r}, device={self.device!r})"
