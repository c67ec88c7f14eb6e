"""A small trainable speech tokenizer: log-mel patches -> k-means codes at 12.5 Hz -> waveform.

The offline stand-in for GLM-4-Voice's tokenizer. It keeps what the diffusion model sees the
same (one discrete code per 80 ms, 12.5 Hz, from a single codebook) while training in seconds
on a CPU:

1. features: 80-band log-mel frames every 10 ms (`hop_length=160` at 16 kHz), normalised per
   band with the training mean and standard deviation;
2. tokens: each run of `frames_per_token = 8` frames (80 ms, the same 1,280-sample stride as
   GLM-4-Voice's `conv2 stride 2 x pooling 4 x hop 160`) is one `8 x 80` patch, quantised to
   its nearest codebook entry (Euclidean distance, ties to the lower index);
3. training: the codebook is fitted by k-means (k-means++ seeding, Lloyd iterations), so a
   code's entry is the mean of the patches it stands for;
4. decoding: entries -> log-mel frames -> STFT magnitude (non-negative least squares) ->
   waveform by Griffin-Lim, so generated speech can be listened to.

Why k-means rather than a learned encoder/decoder: decoding a code yields exactly its
codebook entry, whose nearest entry is itself, so `encode_features(decode_features(c)) == c`
holds exactly for every code sequence; the waveform round trip only loses what Griffin-Lim
loses (measured in the tests and in `benchmarks/speech_tokenizer.py`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from omni_blocks.tokenizers.audio import LogMelSpectrogram, check_waveforms
from omni_blocks.tokenizers.kmeans import kmeans_plus_plus
from omni_blocks.vocab import Modality

__all__ = ["MelVQSpeechTokenizer"]

_CONFIG = "config.json"
_WEIGHTS = "model.safetensors"


class MelVQSpeechTokenizer:
    """Log-mel patches -> k-means codes (12.5 Hz by default) -> Griffin-Lim waveform.

    Implements [`SpeechTokenizer`][omni_blocks.tokenizers.base.SpeechTokenizer]. Call
    [`fit`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer.fit] (or
    [`load`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer.load]) before encoding.

    Args:
        codebook_size: number of codes (GLM-4-Voice: 16,384; a few hundred suffice for the
            spoken digits of the miniature corpus).
        sample_rate: audio sample rate in Hz.
        n_mels: mel bands per frame.
        n_fft: FFT size of the spectrogram.
        hop_length: samples between frames.
        frames_per_token: frames per code; the code rate is
            `sample_rate / (hop_length * frames_per_token)` Hz (12.5 by default).
        griffin_lim_iters: Griffin-Lim iterations when decoding to a waveform.
        seed: seed of the k-means++ initialisation and of Griffin-Lim's initial phases.
    """

    def __init__(
        self,
        codebook_size: int = 256,
        sample_rate: int = 16_000,
        n_mels: int = 80,
        n_fft: int = 512,
        hop_length: int = 160,
        frames_per_token: int = 8,
        griffin_lim_iters: int = 32,
        seed: int = 0,
    ) -> None:
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        if frames_per_token < 1:
            raise ValueError(f"frames_per_token must be >= 1, got {frames_per_token}")
        if griffin_lim_iters < 0:
            raise ValueError(f"griffin_lim_iters must be >= 0, got {griffin_lim_iters}")
        self._codebook_size = codebook_size
        self._sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.frames_per_token = frames_per_token
        self.griffin_lim_iters = griffin_lim_iters
        self.seed = seed
        self.spectrogram = LogMelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
        )
        self.codebook: Float[Tensor, "codes frames mels"] | None = None
        self.mean: Float[Tensor, " mels"] | None = None
        self.std: Float[Tensor, " mels"] | None = None

    # ------------------------------------------------------------------ protocol
    @property
    def modality(self) -> Modality:
        """Always `Modality.SPEECH`."""
        return Modality.SPEECH

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes."""
        return self._codebook_size

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio `encode` takes and `decode` returns, in Hz."""
        return self._sample_rate

    @property
    def samples_per_token(self) -> int:
        """Audio samples per code (`hop_length * frames_per_token`; 1,280 by default)."""
        return self.hop_length * self.frames_per_token

    @property
    def frame_rate(self) -> float:
        """Codes per second of audio (12.5 by default)."""
        return self._sample_rate / self.samples_per_token

    @property
    def is_fitted(self) -> bool:
        """Whether a codebook has been fitted or loaded."""
        return self.codebook is not None

    def num_tokens(self, num_samples: int) -> int:
        """Codes for a waveform of `num_samples` samples: `ceil(num_samples / samples_per_token)`.

        Audio is zero-padded at the end to a whole number of tokens, as GLM-4-Voice pads to a
        multiple of its 1,280-sample stride.
        """
        return math.ceil(num_samples / self.samples_per_token)

    # ------------------------------------------------------------------ features
    def log_mel(self, waveform: Float[Tensor, " time"]) -> Float[Tensor, "frames mels"]:
        """Log-mel frames of one checked mono waveform, zero-padded to whole tokens."""
        total = self.num_tokens(waveform.shape[0]) * self.samples_per_token
        padded = torch.nn.functional.pad(waveform, (0, total - waveform.shape[0]))
        return self.spectrogram(padded)

    def _patches(self, log_mel: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError(_NOT_FITTED)
        z = (log_mel - self.mean) / self.std
        return rearrange(z, "(t f) m -> t (f m)", f=self.frames_per_token)

    def _nearest(self, patches: Tensor) -> Tensor:
        codebook = self._require_codebook()
        flat = rearrange(codebook, "k f m -> k (f m)")
        # Exact pairwise distances (no matrix-product shortcut), so a code never depends on
        # the other rows of a batch.
        dist = torch.cdist(patches[None], flat[None], compute_mode="donot_use_mm_for_euclid_dist")
        return dist[0].argmin(dim=1)

    def encode_features(
        self, log_mels: Sequence[Float[Tensor, "_frames mels"]]
    ) -> list[Int[Tensor, " _tokens"]]:
        """Quantise log-mel frames (a whole number of tokens each) to codes."""
        out = []
        for i, log_mel in enumerate(log_mels):
            if log_mel.ndim != 2 or log_mel.shape[1] != self.n_mels:
                raise ValueError(
                    f"log_mels[{i}] must be (frames, {self.n_mels}), got {tuple(log_mel.shape)}"
                )
            if log_mel.shape[0] % self.frames_per_token or log_mel.shape[0] == 0:
                raise ValueError(
                    f"log_mels[{i}] has {log_mel.shape[0]} frames; need a positive multiple of "
                    f"frames_per_token={self.frames_per_token}"
                )
            out.append(self._nearest(self._patches(log_mel.float())))
        return out

    def decode_features(self, codes: Sequence[Tensor]) -> list[Float[Tensor, "_frames mels"]]:
        """Codes -> log-mel frames: each code's codebook entry, de-normalised.

        Args:
            codes: one `(tokens,)` integer tensor per utterance.

        Returns:
            One `(tokens * frames_per_token, n_mels)` log-mel tensor per utterance; re-encoding
            it with `encode_features` gives back `codes` exactly.
        """
        codebook = self._require_codebook()
        assert self.mean is not None and self.std is not None
        out = []
        for i, seq in enumerate(codes):
            self._check_codes(seq, f"codes[{i}]")
            z = rearrange(codebook[seq.long()], "t f m -> (t f) m")
            out.append(z * self.std + self.mean)
        return out

    # ------------------------------------------------------------------ encode / decode
    def encode(
        self, waveforms: Tensor | Sequence[Tensor], sample_rate: int = 16_000
    ) -> Int[Tensor, "*batch tokens"] | list[Int[Tensor, " _tokens"]]:
        """Waveforms -> codes in `[0, codebook_size)`, `ceil(time / samples_per_token)` each.

        Args:
            waveforms: one mono waveform `(time,)`, an equal-length batch `(batch, time)` or
                `(batch, 1, time)`, or a list of `(time,)` waveforms of any lengths.
            sample_rate: the rate of `waveforms`; it must equal `self.sample_rate`.

        Returns:
            `(tokens,)` codes for one waveform, `(batch, tokens)` for a batch tensor, or a list
            of `(tokens,)` tensors for a list. Deterministic, and each item's codes do not
            depend on the rest of the batch.

        Raises:
            ValueError / TypeError: see
                [`check_waveforms`][omni_blocks.tokenizers.audio.check_waveforms].
            RuntimeError: the tokenizer is not fitted.
        """
        self._require_codebook()
        items, single = check_waveforms(
            waveforms, sample_rate=sample_rate, expected_rate=self._sample_rate
        )
        codes = self.encode_features([self.log_mel(w) for w in items])
        if single:
            return codes[0]
        if isinstance(waveforms, Tensor):
            return torch.stack(codes)
        return codes

    def decode(
        self, codes: Tensor | Sequence[Tensor]
    ) -> Float[Tensor, "*batch time"] | list[Float[Tensor, " _time"]]:
        """Codes -> waveforms (`samples_per_token` samples per code) by Griffin-Lim.

        Args:
            codes: `(tokens,)`, `(batch, tokens)` or a list of `(tokens,)` integer tensors.

        Returns:
            The same structure with waveforms in place of codes.
        """
        if isinstance(codes, Tensor):
            if codes.ndim == 1:
                return self._decode_list([codes])[0]
            if codes.ndim == 2:
                return torch.stack(self._decode_list(list(codes.unbind(0))))
            raise ValueError(
                f"codes must be (tokens,) or (batch, tokens), got {tuple(codes.shape)}"
            )
        return self._decode_list(list(codes))

    def _decode_list(self, codes: list[Tensor]) -> list[Tensor]:
        log_mels = self.decode_features(codes)
        return [
            self.spectrogram.invert(m, n_iter=self.griffin_lim_iters, seed=self.seed)
            for m in log_mels
        ]

    # ------------------------------------------------------------------ training
    def fit(
        self,
        waveforms: Tensor | Sequence[Tensor],
        sample_rate: int = 16_000,
        *,
        num_iters: int = 30,
        progress: bool = False,
    ) -> list[float]:
        """Fit the normalisation and the codebook (k-means) on training waveforms.

        k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd iterations: assign every
        patch to its nearest entry, move each entry to the mean of its patches; an entry left
        without patches moves to the patch worst served by its entry. Stops early when no
        assignment changes.

        Args:
            waveforms: training audio (any form `encode` takes).
            sample_rate: rate of `waveforms` (must equal `self.sample_rate`).
            num_iters: maximum Lloyd iterations.
            progress: show a tqdm progress bar.

        Returns:
            The mean squared quantisation error (per patch dimension, normalised units) of each
            iteration's assignment step.

        Raises:
            ValueError: fewer distinct 80 ms patches than `codebook_size`.
        """
        items, _ = check_waveforms(
            waveforms, sample_rate=sample_rate, expected_rate=self._sample_rate
        )
        log_mels = [self.log_mel(w) for w in items]
        frames = torch.cat(log_mels)
        self.mean = frames.mean(dim=0)
        self.std = frames.std(dim=0).clamp(min=1e-3)
        data = torch.cat([self._patches(m) for m in log_mels])
        k = self._codebook_size
        if data.shape[0] < k:
            raise ValueError(
                f"{data.shape[0]} training patches (80 ms each by default) are fewer than "
                f"codebook_size={k}; give more audio or a smaller codebook"
            )
        generator = torch.Generator().manual_seed(self.seed)
        try:
            centroids = kmeans_plus_plus(data, k, generator)
        except ValueError as err:
            raise ValueError(
                f"{err}: the training audio has too few distinct patches for "
                f"codebook_size={k}; give more (varied) audio or a smaller codebook"
            ) from err
        history: list[float] = []
        sq_norms = data.square().sum(dim=1)
        assign = torch.full((data.shape[0],), -1, dtype=torch.long)
        bar = tqdm(range(num_iters), desc="k-means", disable=not progress, leave=False)
        for _ in bar:
            dist = sq_norms[:, None] - 2 * data @ centroids.T + centroids.square().sum(dim=1)
            dist = dist.clamp(min=0)
            best, new_assign = dist.min(dim=1)
            changed = int((new_assign != assign).sum())
            assign = new_assign
            counts = torch.bincount(assign, minlength=k)
            sums = torch.zeros_like(centroids).index_add_(0, assign, data)
            centroids = sums / counts.clamp(min=1)[:, None]
            empty = torch.nonzero(counts == 0).flatten()
            if empty.numel():
                worst = best.argsort(descending=True)[: empty.numel()]
                centroids[empty] = data[worst]
            history.append(float(best.mean()) / data.shape[1])
            bar.set_postfix(mse=f"{history[-1]:.4f}", changed=changed)
            if changed == 0:
                break
        self.codebook = rearrange(centroids, "k (f m) -> k f m", f=self.frames_per_token)
        return history

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable."""
        return {
            "codebook_size": self._codebook_size,
            "sample_rate": self._sample_rate,
            "n_mels": self.n_mels,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "frames_per_token": self.frames_per_token,
            "griffin_lim_iters": self.griffin_lim_iters,
            "seed": self.seed,
        }

    def save(self, path: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` (codebook, mean, std) into folder `path`."""
        from safetensors.torch import save_file

        codebook = self._require_codebook()
        assert self.mean is not None and self.std is not None
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / _CONFIG).write_text(
            json.dumps({"class": type(self).__name__, **self.config()}, indent=2) + "\n"
        )
        tensors = {"codebook": codebook, "mean": self.mean, "std": self.std}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / _WEIGHTS))
        return folder

    def save_pretrained(self, directory: str | Path) -> Path:
        """The hub's name for
        [`save`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer.save]."""
        return self.save(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MelVQSpeechTokenizer:
        """The hub's name for
        [`load`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer.load]."""
        return cls.load(directory)

    @classmethod
    def load(cls, path: str | Path) -> MelVQSpeechTokenizer:
        """Rebuild a tokenizer written by
        [`save`][omni_blocks.tokenizers.speech_vq.MelVQSpeechTokenizer.save]."""
        from safetensors.torch import load_file

        folder = Path(path)
        if not (folder / _CONFIG).exists() or not (folder / _WEIGHTS).exists():
            raise FileNotFoundError(
                f"{str(folder)!r} has no {_CONFIG} and {_WEIGHTS}; write one with save()"
            )
        config = json.loads((folder / _CONFIG).read_text())
        name = config.pop("class", cls.__name__)
        if name != cls.__name__:
            raise ValueError(f"{str(folder)!r} holds a {name}, not a {cls.__name__}")
        tok = cls(**config)
        tensors = load_file(str(folder / _WEIGHTS))
        expected = (tok.codebook_size, tok.frames_per_token, tok.n_mels)
        if tuple(tensors["codebook"].shape) != expected:
            raise ValueError(
                f"codebook has shape {tuple(tensors['codebook'].shape)}, config says {expected}"
            )
        tok.codebook, tok.mean, tok.std = tensors["codebook"], tensors["mean"], tensors["std"]
        return tok

    # ------------------------------------------------------------------ helpers
    def _require_codebook(self) -> Tensor:
        if self.codebook is None:
            raise RuntimeError(_NOT_FITTED)
        return self.codebook

    def _check_codes(self, codes: Tensor, name: str) -> None:
        if not isinstance(codes, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of codes, got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool or codes.is_complex():
            raise TypeError(f"{name} must be an integer tensor, got dtype {codes.dtype}")
        if codes.ndim != 1:
            raise ValueError(f"{name} must be (tokens,), got shape {tuple(codes.shape)}")
        if codes.numel() == 0:
            raise ValueError(f"{name} is empty")
        bad = (codes < 0) | (codes >= self._codebook_size)
        if bool(bad.any()):
            raise ValueError(
                f"{name} holds code {int(codes[bad][0])} outside [0, {self._codebook_size})"
            )


_NOT_FITTED = (
    "this MelVQSpeechTokenizer has no codebook yet; call fit(waveforms) or "
    "MelVQSpeechTokenizer.load(path) first"
)
