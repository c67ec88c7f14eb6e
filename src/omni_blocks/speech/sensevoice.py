"""SenseVoiceSmall, as Omni-Diffusion hears speech: Kaldi fbank + LFR + CMVN, then the SANM
encoder with its four query positions.

Front end (FunASR's `WavFrontend` with SenseVoiceSmall's settings): samples scaled to 16-bit
range, 80-bin Kaldi fbank with a Hamming window of 25 ms every 10 ms
(`torchaudio.compliance.kaldi.fbank`), low frame rate stacking (LFR: 7 frames stacked every
6, the first frame repeated 3 times in front, the last one repeated at the end), then CMVN
with the model's `am.mvn` (`(x + shift) * scale`). A second of audio gives 17 frames of 560
features.

Encoder (`SenseVoiceEncoderSmall`, SAN-M layers: self-attention plus a depthwise-convolution
"memory" of the values; Gao et al., 2020): before the frames go four learnt queries
(language, event, emotion, text normalisation, from `embed`), so `n` frames give `n + 4`
outputs of width 512, which is the slot length Omni-Diffusion reserves
(`audio.size(0) + 4`). Parameter names are FunASR's (`encoder.encoders0.0.self_attn.
linear_q_k_v.weight`, ...), so SenseVoiceSmall's weights, and the `model.audio_model.model.*`
tensors of the released Omni-Diffusion checkpoint, load with `strict=True`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from omni_blocks._optional import require
from omni_blocks.speech.encoders import EncodedSpeech, FeatureFrames, SpeechEncoder, SpeechFrontEnd

__all__ = [
    "SENSEVOICE_SMALL",
    "PretrainedSenseVoice",
    "SenseVoiceEncoder",
    "SenseVoiceFrontEnd",
    "apply_lfr",
    "read_cmvn",
]

SENSEVOICE_SMALL: dict[str, Any] = {
    "input_size": 560,
    "output_size": 512,
    "attention_heads": 4,
    "linear_units": 2048,
    "num_blocks": 50,
    "tp_blocks": 20,
    "kernel_size": 11,
    "sanm_shift": 0,
}
"""SenseVoiceSmall's encoder configuration (FunAudioLLM/SenseVoiceSmall `config.yaml`)."""

_QUERIES = 16  # 7 + 7 language ids + 2 text-normalisation ids: the rows of `embed`
_LANGUAGE = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
_TEXTNORM = {"withitn": 14, "woitn": 15}


def read_cmvn(path: str | os.PathLike[str]) -> Float[Tensor, "2 features"]:
    """Shifts and scales of a Kaldi `am.mvn` file (`<AddShift>` and `<Rescale>` rows).

    Raises:
        FileNotFoundError: no file.
        ValueError: the file has no `<AddShift>` or `<Rescale>` block.
    """
    lines = Path(path).read_text().splitlines()
    found: dict[str, list[float]] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()
        nxt = lines[i + 1].split()
        if head and head[0] in ("<AddShift>", "<Rescale>") and nxt and nxt[0] == "<LearnRateCoef>":
            found[head[0]] = [float(v) for v in nxt[3:-1]]
    if set(found) != {"<AddShift>", "<Rescale>"}:
        raise ValueError(f"{path}: not a Kaldi am.mvn file (no <AddShift> / <Rescale> rows)")
    return torch.tensor([found["<AddShift>"], found["<Rescale>"]], dtype=torch.float32)


def apply_lfr(frames: Float[Tensor, "frames mels"], m: int, n: int) -> Float[Tensor, "lfr stacked"]:
    """Low frame rate: stack `m` consecutive frames every `n` (FunASR's `apply_lfr`).

    `ceil(frames / n)` outputs of `m * mels` features; the first frame is repeated
    `(m - 1) // 2` times in front, and the last frame fills the stacks that run past the end.
    """
    count = math.ceil(frames.shape[0] / n)
    padded = torch.cat([frames[:1].expand((m - 1) // 2, -1), frames])
    needed = (count - 1) * n + m
    if padded.shape[0] < needed:
        padded = torch.cat([padded, padded[-1:].expand(needed - padded.shape[0], -1)])
    index = torch.arange(count)[:, None] * n + torch.arange(m)[None, :]
    return padded[index].reshape(count, -1).float()


class SenseVoiceFrontEnd(SpeechFrontEnd):
    """SenseVoiceSmall's front end: Kaldi fbank, LFR stacking, CMVN.

    Args:
        cmvn: the path of the model's `am.mvn`; None skips CMVN (unless `stats`).
        sample_rate: the waveforms' rate (`fs`).
        n_mels: fbank bins.
        frame_length: window in milliseconds.
        frame_shift: hop in milliseconds.
        lfr_m: frames stacked.
        lfr_n: stacking hop.
        window: the fbank window (`"hamming"`).
        dither: Kaldi dither (FunASR's `WavFrontend` defaults to 1.0 unless the model's
            `config.yaml` sets it; 0 is deterministic). A positive dither draws from torch's
            global generator.
        stats: the `(2, features)` shifts and scales themselves, instead of `cmvn`.

    Raises:
        ValueError: a CMVN of another width than `n_mels * lfr_m`.
    """

    def __init__(
        self,
        cmvn: str | os.PathLike[str] | None = None,
        sample_rate: int = 16_000,
        n_mels: int = 80,
        frame_length: float = 25.0,
        frame_shift: float = 10.0,
        lfr_m: int = 7,
        lfr_n: int = 6,
        window: str = "hamming",
        dither: float = 0.0,
        stats: Tensor | None = None,
    ) -> None:
        # `stats` is apart from `cmvn` on purpose: a Tensor in the path's annotation makes
        # jsonargparse read a path given on the command line as the file's content
        if cmvn is not None and stats is not None:
            raise ValueError("give cmvn (a path) or stats (a tensor), not both")
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.frame_length, self.frame_shift = frame_length, frame_shift
        self.lfr_m, self.lfr_n, self.window, self.dither = lfr_m, lfr_n, window, dither
        self.feature_size = n_mels * lfr_m
        if cmvn is not None:
            stats = read_cmvn(cmvn)
        if stats is not None and tuple(stats.shape) != (2, self.feature_size):
            raise ValueError(
                f"the CMVN statistics must be (2, {self.feature_size}); got {tuple(stats.shape)}"
            )
        self.cmvn = None if cmvn is None else str(cmvn)
        self.stats = stats

    def to_config(self) -> dict[str, Any]:
        """`class_path` / `init_args` of this front end (statistics given as a tensor are
        written out as lists)."""
        init_args: dict[str, Any] = {
            "cmvn": self.cmvn, "sample_rate": self.sample_rate, "n_mels": self.n_mels,
            "frame_length": self.frame_length, "frame_shift": self.frame_shift,
            "lfr_m": self.lfr_m, "lfr_n": self.lfr_n, "window": self.window,
            "dither": self.dither,
        }  # fmt: skip
        if self.cmvn is None and self.stats is not None:
            init_args["stats"] = self.stats.tolist()
        return {"class_path": "omni_blocks.speech.SenseVoiceFrontEnd", "init_args": init_args}

    def features(self, waveform: Float[Tensor, " time"]) -> FeatureFrames:
        kaldi = require("torchaudio.compliance.kaldi", "SenseVoice's Kaldi fbank")
        samples = waveform.float() * (1 << 15)
        length = samples.numel() / self.sample_rate * 1000
        if length < self.frame_length and samples.numel() < 2:
            raise ValueError("the waveform is too short for one fbank frame")
        mat = kaldi.fbank(
            samples[None],
            num_mel_bins=self.n_mels,
            frame_length=min(self.frame_length, length),
            frame_shift=self.frame_shift,
            dither=self.dither,
            energy_floor=0.0,
            window_type=self.window,
            sample_frequency=self.sample_rate,
            snip_edges=True,
        )
        if self.lfr_m != 1 or self.lfr_n != 1:
            mat = apply_lfr(mat, self.lfr_m, self.lfr_n)
        if self.stats is not None:
            mat = (mat + self.stats[0]) * self.stats[1]
        out: Tensor = mat.float()
        return out


class _LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (FunASR's)."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )
        return out.type_as(x)


class _SanmAttention(nn.Module):
    """Multi-head self-attention plus an FSMN memory (a depthwise convolution of the values)."""

    def __init__(self, heads: int, in_size: int, size: int, kernel: int, shift: int) -> None:
        super().__init__()
        self.heads, self.d_k = heads, size // heads
        self.linear_out = nn.Linear(size, size)
        self.linear_q_k_v = nn.Linear(in_size, size * 3)
        self.fsmn_block = nn.Conv1d(size, size, kernel, groups=size, bias=False)
        left = (kernel - 1) // 2 + max(shift, 0)
        self.padding = (left, kernel - 1 - left)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).split(self.heads * self.d_k, dim=-1)
        heads = [z.reshape(b, t, self.heads, self.d_k).transpose(1, 2) for z in (q, k, v)]
        frames = mask.reshape(b, -1, 1)
        memory = F.pad((v * frames).transpose(1, 2), self.padding)
        memory = self.fsmn_block(memory).transpose(1, 2) + v * frames
        memory = memory * frames
        scores = (heads[0] * self.d_k**-0.5) @ heads[1].transpose(-2, -1)
        blocked = mask[:, None, None, :].eq(0)  # (b, 1, 1, t): padding keys
        attn = scores.masked_fill(blocked, -math.inf).softmax(-1).masked_fill(blocked, 0.0)
        out = (attn @ heads[2]).transpose(1, 2).reshape(b, t, self.heads * self.d_k)
        result: Tensor = self.linear_out(out) + memory
        return result


class _FeedForward(nn.Module):
    def __init__(self, size: int, units: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, units)
        self.w_2 = nn.Linear(units, size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.w_2(torch.relu(self.w_1(x)))
        return out


class _SanmLayer(nn.Module):
    def __init__(self, in_size: int, size: int, heads: int, units: int, kernel: int, shift: int):
        super().__init__()
        self.self_attn = _SanmAttention(heads, in_size, size, kernel, shift)
        self.feed_forward = _FeedForward(size, units)
        self.norm1 = _LayerNorm(in_size)
        self.norm2 = _LayerNorm(size)
        self.residual = in_size == size

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attended = self.self_attn(self.norm1(x), mask)
        x = x + attended if self.residual else attended
        return x + self.feed_forward(self.norm2(x))


class _Encoder(nn.Module):
    """`SenseVoiceEncoderSmall` (the parameters under `encoder.`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        size, heads = config["output_size"], config["attention_heads"]
        units, kernel, shift = config["linear_units"], config["kernel_size"], config["sanm_shift"]
        self.output_size = size
        self.encoders0 = nn.ModuleList(
            [_SanmLayer(config["input_size"], size, heads, units, kernel, shift)]
        )
        self.encoders = nn.ModuleList(
            _SanmLayer(size, size, heads, units, kernel, shift)
            for _ in range(config["num_blocks"] - 1)
        )
        self.tp_encoders = nn.ModuleList(
            _SanmLayer(size, size, heads, units, kernel, shift) for _ in range(config["tp_blocks"])
        )
        self.after_norm = _LayerNorm(size)
        self.tp_norm = _LayerNorm(size)

    def forward(self, x: Tensor, lengths: Tensor) -> EncodedSpeech:
        mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)
        x = _positions(x * self.output_size**0.5)
        for layer in (*self.encoders0, *self.encoders):
            x = layer(x, mask)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, mask)
        return self.tp_norm(x), lengths


def _positions(x: Tensor) -> Tensor:
    """FunASR's `SinusoidalPositionEncoder`: positions 1..T, `sin` then `cos` halves."""
    _, steps, depth = x.shape
    increment = math.log(10_000.0) / (depth / 2 - 1)
    inverse = torch.exp(torch.arange(depth // 2, device=x.device, dtype=x.dtype) * -increment)
    scaled = torch.arange(1, steps + 1, device=x.device, dtype=x.dtype)[:, None] * inverse
    return x + torch.cat([scaled.sin(), scaled.cos()], dim=-1)[None]


class SenseVoiceEncoder(SpeechEncoder):
    """SenseVoiceSmall's encoder with its four query positions, as Omni-Diffusion runs it.

    The queries are SenseVoice's `language` (default `"auto"`), event and emotion, and text
    normalisation (`"woitn"`: no inverse text normalisation), in that order before the
    frames, so `slot_length(frames) = frames + 4`.

    Args:
        input_size: frame width (80 mels x LFR 7 = 560).
        output_size: output width (512).
        attention_heads: heads per layer.
        linear_units: feed-forward width.
        num_blocks: SAN-M layers before `after_norm` (the first maps `input_size` to
            `output_size`).
        tp_blocks: layers after it.
        kernel_size: the FSMN memory's kernel.
        sanm_shift: the FSMN memory's shift.
        language: the language query (`"auto"`, `"zh"`, `"en"`, `"yue"`, `"ja"`, `"ko"`,
            `"nospeech"`).

    Raises:
        ValueError: an unknown language.
    """

    def __init__(
        self,
        input_size: int = 560,
        output_size: int = 512,
        attention_heads: int = 4,
        linear_units: int = 2048,
        num_blocks: int = 50,
        tp_blocks: int = 20,
        kernel_size: int = 11,
        sanm_shift: int = 0,
        language: str = "auto",
    ) -> None:
        super().__init__()
        if language not in _LANGUAGE:
            raise ValueError(f"unknown language {language!r}; one of {sorted(_LANGUAGE)}")
        self.config = {
            "input_size": input_size,
            "output_size": output_size,
            "attention_heads": attention_heads,
            "linear_units": linear_units,
            "num_blocks": num_blocks,
            "tp_blocks": tp_blocks,
            "kernel_size": kernel_size,
            "sanm_shift": sanm_shift,
        }
        self.feature_size, self.output_size, self.language = input_size, output_size, language
        self.encoder = _Encoder(self.config)
        self.embed = nn.Embedding(_QUERIES, input_size)

    def slot_length(self, frames: int) -> int:
        return frames + 4

    def forward(
        self, features: Float[Tensor, "batch frames features"], lengths: Int[Tensor, " batch"]
    ) -> EncodedSpeech:
        self.check(features, lengths)
        batch = features.shape[0]
        ids = torch.tensor(
            [_LANGUAGE[self.language], 1, 2, _TEXTNORM["woitn"]], device=features.device
        )
        queries = self.embed(ids).to(features.dtype).expand(batch, -1, -1)
        # SenseVoice prepends its queries: [language, event, emotion, text norm] + frames
        speech = torch.cat([queries, features], dim=1)
        return self.encoder(speech, lengths + 4)

    def to_config(self) -> dict[str, Any]:
        """`class_path` / `init_args` of an encoder of this shape."""
        return {
            "class_path": "omni_blocks.speech.SenseVoiceEncoder",
            "init_args": {**self.config, "language": self.language},
        }

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Tensor], prefix: str = "", **config: Any
    ) -> SenseVoiceEncoder:
        """An encoder shaped like the tensors under `prefix` of `state`, loaded with
        `strict=True` (the CTC head of SenseVoiceSmall, `ctc.*`, is not needed and skipped).

        Widths, depths and the kernel are read from the tensors; the number of attention
        heads cannot be, and is SenseVoiceSmall's (4) unless `attention_heads` is given.

        Raises:
            ValueError: missing or unexpected tensors (the message names some).
        """
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        own = {k: v for k, v in own.items() if not k.startswith("ctc.")}
        if "embed.weight" not in own:
            raise ValueError(f"no SenseVoice encoder under {prefix!r} (no {prefix}embed.weight)")
        layers = {int(k.split(".")[2]) for k in own if k.startswith("encoder.encoders.")}
        tp = {int(k.split(".")[2]) for k in own if k.startswith("encoder.tp_encoders.")}
        qkv = own["encoder.encoders0.0.self_attn.linear_q_k_v.weight"]
        shape = {
            "input_size": int(qkv.shape[1]),
            "output_size": int(qkv.shape[0]) // 3,
            "linear_units": int(own["encoder.encoders0.0.feed_forward.w_1.weight"].shape[0]),
            "num_blocks": len(layers) + 1,
            "tp_blocks": len(tp),
            "kernel_size": int(own["encoder.encoders0.0.self_attn.fsmn_block.weight"].shape[-1]),
        }
        model = cls(**{**SENSEVOICE_SMALL, **shape, **config})
        missing, unexpected = model.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"the SenseVoice tensors do not fit: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}"
            )
        return model


class PretrainedSenseVoice(SenseVoiceEncoder):
    """SenseVoiceSmall's encoder with its weights, by folder or hub id, for configs.

    Reads `model.safetensors` when the folder has one; FunAudioLLM's hub repository ships
    only a pickled `model.pt`, read (with `torch.load(weights_only=True)`) only when
    `allow_pickle` is given by the caller (never from a saved file: a trust switch). The
    CTC head is skipped; every encoder tensor must be there (`strict`). Saved with a
    module, it is recorded by its shape (`SenseVoiceEncoder`'s `to_config`) and its weights
    go with the module's, so a saved model never refers back to the hub.

    Args:
        pretrained: a folder or hub id (`FunAudioLLM/SenseVoiceSmall`).
        attention_heads: the heads per layer (4; the weights do not say).
        allow_pickle: accept `model.pt` (a pickle) when there is no safetensors file.
        revision: the hub revision.
        language: the language query.

    Raises:
        FileNotFoundError: no weights in the folder, or only a pickle without
            `allow_pickle`.
        ValueError: tensors that do not fit.
    """

    def __init__(
        self,
        pretrained: str = "FunAudioLLM/SenseVoiceSmall",
        attention_heads: int = 4,
        allow_pickle: bool = False,
        revision: str | None = None,
        language: str = "auto",
    ) -> None:
        from omni_blocks.checkpointing import resolve_checkpoint

        folder = resolve_checkpoint(pretrained, revision=revision, allow_pickle=allow_pickle)
        state = _read_weights(Path(folder), allow_pickle)
        loaded = SenseVoiceEncoder.from_state_dict(
            state, attention_heads=attention_heads, language=language
        )
        super().__init__(**loaded.config, language=language)
        self.load_state_dict(loaded.state_dict())
        self.pretrained, self.allow_pickle, self.revision = pretrained, allow_pickle, revision


def _read_weights(folder: Path, allow_pickle: bool) -> dict[str, Tensor]:
    safetensors = folder / "model.safetensors"
    if safetensors.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors))
    pickled = folder / "model.pt"
    if pickled.is_file():
        if not allow_pickle:
            raise FileNotFoundError(
                f"{folder} has only model.pt, a pickle; pass allow_pickle=True to read it "
                "(with torch.load(weights_only=True)), or convert it to model.safetensors"
            )
        state = torch.load(pickled, map_location="cpu", weights_only=True)
        return dict(state.get("state_dict", state)) if isinstance(state, dict) else {}
    raise FileNotFoundError(f"{folder} has no SenseVoice weights (model.safetensors / model.pt)")
