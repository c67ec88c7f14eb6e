"""The released Omni-Diffusion (`lijiang/Omni-Diffusion`), loaded from its own folder format.

The released folder is one Dream checkpoint that also holds the speech path:

| file / keys | what |
|---|---|
| `config.json` | Dream's config, `vocab_size` 176,264 |
| `model.*`, `lm_head.*` | the Dream-7B backbone |
| `model.audio_model.model.*` | SenseVoiceSmall's encoder (and its unused CTC head) |
| `model.audio_projection.*` | `ResamplerProjector(512, hidden_size)` |
| `vocab.json`, `merges.txt`, `tokenizer_config.json` | Dream's tokenizer, markers, media tokens |

[`load_released`][omni_blocks.released.load_released] reads it into an
[`OmniDiffusionModule`][omni_blocks.module.OmniDiffusionModule] with the released
[`VocabLayout`][omni_blocks.vocab.VocabLayout], a
[`SenseVoiceEncoder`][omni_blocks.speech.SenseVoiceEncoder] and
[`ResamplerProjector`][omni_blocks.speech.ResamplerProjector] (both loaded with
`strict=True`), and wraps it as a
[`ReleasedOmniDiffusion`][omni_blocks.released.ReleasedOmniDiffusion] whose `generate` runs
each task of upstream's `tools/inference.py` with that script's prompts and sampler
settings. Nothing in the folder is executed: its `auto_map` and `tokenization_dream.py` are
ignored.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from omni_blocks.backbones import NativeTransformer, TransformerConfig
from omni_blocks.backbones.config import read_config_json
from omni_blocks.checkpointing import load_state_dict, resolve_checkpoint
from omni_blocks.data.messages import (
    ChatImageTemplate,
    ChatSpeechTemplate,
    ChatTextTemplate,
    MessagesTemplate,
)
from omni_blocks.data.speech_input import SpeechFeatures
from omni_blocks.generation import generate
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.sampling import MaskedDiffusionSampler, omni_diffusion_sampler
from omni_blocks.speech import ResamplerProjector, SenseVoiceEncoder, SenseVoiceFrontEnd
from omni_blocks.tokenizers.base import ImageTokenizer, SpeechTokenizer
from omni_blocks.tokenizers.text import TextTokenizer, dream_tokenizer_from_files
from omni_blocks.vocab import Modality, VocabLayout

__all__ = [
    "AUDIO_MODEL_PREFIX",
    "AUDIO_PROJECTION_PREFIX",
    "RELEASED_REPO",
    "UPSTREAM_TASKS",
    "ReleasedFormatError",
    "ReleasedOmniDiffusion",
    "ReleasedOutput",
    "UpstreamTask",
    "check_released_tokenizer",
    "load_released",
]

RELEASED_REPO = "lijiang/Omni-Diffusion"
"""The hub id of the released checkpoint."""

AUDIO_MODEL_PREFIX = "model.audio_model.model."
"""Where the released checkpoint keeps SenseVoiceSmall (upstream's `AudioEncoder.model`)."""

AUDIO_PROJECTION_PREFIX = "model.audio_projection."
"""Where it keeps the `ResamplerProjector`."""


class ReleasedFormatError(ValueError):
    """A folder that is not laid out as the released Omni-Diffusion is."""


@dataclass(frozen=True)
class UpstreamTask:
    """One task of upstream's `tools/inference.py`: its prompt and sampler settings.

    Attributes:
        target: the modality of the response (its template: `ChatTextTemplate`, ...).
        instruction: the user message's text before the input (`message`).
        system: the task's system prompt (None: no system turn).
        max_new_tokens: the response's positions.
        steps: sampling steps.
        position_penalty: `max_position_penalty` (the tail penalty of image generation).
        guidance_scale: `cfg` (speech-to-image: 2.0, against the task's empty prompt).
        begin_speech_at: `add_boa_token`: `<|begin_of_audio|>` written at this fraction of
            the response before sampling (spoken VQA answers in text, then in speech).
        repeat_penalty: upstream's `entropy-penalty` strength; recorded, not applied
            (omni_blocks has no repetition penalty; see the upstream-differences page).
    """

    target: Modality
    instruction: str = ""
    system: str | None = None
    max_new_tokens: int = 64
    steps: int = 64
    position_penalty: float = 1.0
    guidance_scale: float = 0.0
    begin_speech_at: float | None = None
    repeat_penalty: float = 1.0


UPSTREAM_TASKS: dict[str, UpstreamTask] = {
    "asr": UpstreamTask(Modality.TEXT, "Convert the speech to text.", None, 50, 25),
    "tts": UpstreamTask(Modality.SPEECH, "Convert the text to speech.", None, 50, 25),
    "vqa": UpstreamTask(Modality.TEXT, "", None, 64, 64),
    "t2i": UpstreamTask(
        Modality.IMAGE, "Generate an image based on the provided text description.", None,
        260, 260, position_penalty=2.0, repeat_penalty=1.2,
    ),
    "s2i": UpstreamTask(
        Modality.IMAGE, "", "Please generate an image based on the input audio.", 260, 260,
        position_penalty=2.0, guidance_scale=2.0, repeat_penalty=1.5,
    ),
    "svqa": UpstreamTask(
        Modality.SPEECH, "", "Please response the input audio based on the given image.",
        128, 128, begin_speech_at=0.2, repeat_penalty=1.2,
    ),
}  # fmt: skip
"""`tools/inference.py`'s tasks (`s2i_task`, `t2i_task`, ...), as it calls them."""

_TEMPLATES: dict[Modality, type[MessagesTemplate]] = {
    Modality.TEXT: ChatTextTemplate,
    Modality.IMAGE: ChatImageTemplate,
    Modality.SPEECH: ChatSpeechTemplate,
}


@dataclass
class ReleasedOutput:
    """A response sorted by id range, as `tools/inference.py` sorts it.

    Attributes:
        text: the text ids decoded (markers and special tokens dropped).
        image_codes: the MAGVIT-v2 codes (local, in order), or None if there are none.
        speech_codes: the GLM-4-Voice codes, or None.
        image: the decoded image, when the model has an image tokenizer.
        speech: the decoded waveform, when it has a speech tokenizer with a decoder.
        ids: the response's global ids.
    """

    text: str
    image_codes: Tensor | None
    speech_codes: Tensor | None
    ids: Tensor
    image: Tensor | None = None
    speech: Tensor | None = None


@dataclass
class ReleasedOmniDiffusion:
    """The released model, ready for upstream's tasks.

    Attributes:
        module: the backbone with the SenseVoice path, as an `OmniDiffusionModule`.
        text_tokenizer: the folder's tokenizer (text ids only; the layout owns the rest).
        front_end: SenseVoice's front end (fbank, LFR, CMVN).
        tasks: the prompt and sampler settings per task (`UPSTREAM_TASKS` by default).
        image_tokenizer: MAGVIT-v2 (or a stand-in) to encode input images and decode outputs.
        speech_tokenizer: GLM-4-Voice (or a stand-in) to encode said speech and decode it.
    """

    module: OmniDiffusionModule
    text_tokenizer: TextTokenizer
    front_end: SenseVoiceFrontEnd
    tasks: dict[str, UpstreamTask] = field(default_factory=lambda: dict(UPSTREAM_TASKS))
    image_tokenizer: ImageTokenizer | None = None
    speech_tokenizer: SpeechTokenizer | None = None

    @property
    def layout(self) -> VocabLayout:
        return self.module.layout

    def template(self, task: str) -> MessagesTemplate:
        """The chat template of `task` (speech heard through the SenseVoice slot)."""
        settings = self._task(task)
        return _TEMPLATES[settings.target](
            self.layout,
            self.text_tokenizer,
            speech_input=SpeechFeatures(extra_positions=4),
            begin_at=settings.begin_speech_at,
        )

    def sampler(self, task: str) -> MaskedDiffusionSampler:
        """`omni_diffusion_sampler` with the task's steps, penalty and guidance."""
        settings = self._task(task)
        unconditional = None
        if settings.guidance_scale > 0:
            unconditional = self._ids(self._empty_prompt(settings))
        return omni_diffusion_sampler(
            min(settings.steps, settings.max_new_tokens),
            position_penalty=settings.position_penalty,
            guidance_scale=settings.guidance_scale,
            unconditional_ids=unconditional,
        )

    def messages(
        self,
        task: str,
        *,
        text: str | None = None,
        image: Tensor | None = None,
        audio: Tensor | None = None,
        sample_rate: int | None = None,
    ) -> dict[str, Any]:
        """Upstream's sample for one call of `tools/inference.py`'s `run_infer`, media
        encoded: `audio` -> SenseVoice frames, `image` -> codes (or give codes directly).

        Raises:
            ValueError: an unknown task, or audio of the wrong rate or channel count.
        """
        settings = self._task(task)
        message = settings.instruction
        if text is not None:
            message = f"{message}\n{text}" if message else text
        if audio is not None and image is not None:
            content = "<|audio|>\n<|image|>"
        elif audio is not None:
            content = message + "\n<|audio|>"
        elif image is not None:
            content = message + "\n<|image|>"
        else:
            content = message
        turns = [] if settings.system is None else [{"role": "system", "content": settings.system}]
        turns.append({"role": "user", "content": content})
        sample: dict[str, Any] = {"messages": turns, "audios": [], "images": []}
        if audio is not None:
            sample["audios"].append(self.front_end(audio, sample_rate))
        if image is not None:
            sample["images"].append(self._image_codes(image))
        return sample

    @torch.no_grad()
    def generate(
        self,
        task: str,
        *,
        text: str | None = None,
        image: Tensor | None = None,
        audio: Tensor | None = None,
        sample_rate: int | None = None,
        generator: torch.Generator | None = None,
    ) -> ReleasedOutput:
        """Run one task as `tools/inference.py` does: its prompt, its response length, its
        sampler; the response sorted into text, image codes and speech codes.

        Args:
            task: a key of `tasks` (`"asr"`, `"tts"`, `"vqa"`, `"t2i"`, `"s2i"`, `"svqa"`).
            text: the text input (TTS, T2I) or question (VQA).
            image: an image `(3, H, W)` in `[0, 1]` (encoded with `image_tokenizer`) or its
                codes (1-D integer tensor).
            audio: a mono waveform at the front end's rate (16 kHz).
            sample_rate: the waveform's rate, checked.
            generator: makes sampling reproducible.

        Raises:
            ValueError: an unknown task, missing inputs, bad audio.
        """
        settings = self._task(task)
        sample = self.messages(task, text=text, image=image, audio=audio, sample_rate=sample_rate)
        template = self.template(task)
        result = generate(
            self.module.backbone,
            self.layout,
            self.sampler(task),
            template,
            [sample],
            settings.max_new_tokens,
            generator=generator,
            speech=self.module.speech_slots,
            lenient_parse=True,
        )
        ids = result.samples[0].ids[0, -settings.max_new_tokens :].cpu()
        return self._sort(ids)

    # ------------------------------------------------------------------ helpers
    def _task(self, task: str) -> UpstreamTask:
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; one of {sorted(self.tasks)}")
        return self.tasks[task]

    def _ids(self, text: str) -> list[int]:
        ids = self.text_tokenizer.encode(text)
        assert isinstance(ids, Tensor)
        return ids.tolist()

    @staticmethod
    def _empty_prompt(settings: UpstreamTask) -> str:
        # generation_utils.py's unconditional prompt of speech-to-image guidance
        system = f"<|im_start|>system\n{settings.system}<|im_end|>\n" if settings.system else ""
        return system + "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"

    def _image_codes(self, image: Tensor) -> Tensor:
        if not image.dtype.is_floating_point:
            return image.long().flatten()
        if self.image_tokenizer is None:
            raise ValueError("an image needs the model's image_tokenizer (or give its codes)")
        codes: Tensor = self.image_tokenizer.encode(image[None])[0]
        return codes.flatten()

    def _sort(self, ids: Tensor) -> ReleasedOutput:
        layout = self.layout
        text = ids[layout.is_modality(ids, Modality.TEXT) & ~layout.is_special(ids)]
        image = ids[layout.is_modality(ids, Modality.IMAGE)]
        speech = ids[layout.is_modality(ids, Modality.SPEECH)]
        decoded = self.text_tokenizer.decode(
            layout.to_local(text, Modality.TEXT), skip_special_tokens=True
        )
        out = ReleasedOutput(
            text=str(decoded),
            image_codes=layout.to_local(image, Modality.IMAGE) if len(image) else None,
            speech_codes=layout.to_local(speech, Modality.SPEECH) if len(speech) else None,
            ids=ids,
        )
        if out.image_codes is not None and self.image_tokenizer is not None:
            side = math.isqrt(len(out.image_codes))
            if side * side == len(out.image_codes):
                out.image = self.image_tokenizer.decode(out.image_codes[None])[0]
        if out.speech_codes is not None and self.speech_tokenizer is not None:
            decode = getattr(self.speech_tokenizer, "decode", None)
            if callable(decode):
                try:
                    out.speech = decode(out.speech_codes[None])[0]
                except NotImplementedError:  # an encoder-only adapter
                    out.speech = None
        return out


# ---------------------------------------------------------------------------------- loading


def check_released_tokenizer(folder: Path, layout: VocabLayout) -> None:
    """Check the folder's `tokenizer_config.json` against the released layout: every marker
    and the first and last media tokens at the ids the layout gives them.

    Raises:
        ReleasedFormatError: a missing file or an id that differs (the message names it).
    """
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        raise ReleasedFormatError(f"{folder} has no tokenizer_config.json")
    decoder = json.loads(path.read_text()).get("added_tokens_decoder") or {}
    by_content = {str(v.get("content")): int(k) for k, v in decoder.items()}
    expected = {marker: layout.token_id(marker) for marker in layout.added_tokens}
    for modality, token in ((Modality.SPEECH, "audio"), (Modality.IMAGE, "image")):
        size = layout.size(modality)
        first = layout.offset(modality)
        expected[f"<|{token}_0|>"] = first
        expected[f"<|{token}_{size - 1}|>"] = first + size - 1
    expected["<|mask|>"] = layout.mask_id
    wrong = {t: (by_content.get(t), i) for t, i in expected.items() if by_content.get(t) != i}
    if wrong:
        shown = ", ".join(
            f"{t}: {got} (expected {want})" for t, (got, want) in list(wrong.items())[:4]
        )
        raise ReleasedFormatError(f"{path}: {len(wrong)} token(s) not at the released ids: {shown}")


def load_released(
    pretrained: str | os.PathLike[str] = RELEASED_REPO,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    cmvn: str | os.PathLike[str] | Tensor | None = None,
    sensevoice_heads: int = 4,
    image_tokenizer: ImageTokenizer | None = None,
    speech_tokenizer: SpeechTokenizer | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> ReleasedOmniDiffusion:
    """Load a folder (or hub repository) laid out as `lijiang/Omni-Diffusion`.

    Args:
        pretrained: the folder or hub id.
        revision: the hub revision.
        token: the hub token.
        cache_dir: the hub cache.
        local_files_only: read the hub cache only.
        cmvn: SenseVoiceSmall's `am.mvn` (its hub repository `FunAudioLLM/SenseVoiceSmall`
            has it; upstream downloads it at run time). Default: `am.mvn` in the folder if
            there is one, else no CMVN (a warning-worthy choice: give it).
        sensevoice_heads: the encoder's attention heads (SenseVoiceSmall: 4; the weights do
            not say).
        image_tokenizer: MAGVIT-v2 (`PretrainedMagvitV2("showlab/magvitv2")`) for images.
        speech_tokenizer: GLM-4-Voice (`GLM4VoiceTokenizer`) for speech outputs.
        dtype: cast the model (`torch.bfloat16` as upstream runs it); None keeps the stored
            dtype.
        device: where the weights go.

    Raises:
        ReleasedFormatError: a config of another vocabulary, tokenizer files whose markers
            are not at the released ids, or missing speech weights.
        ValueError: weights that do not fit (the message names them).
    """
    folder = resolve_checkpoint(
        pretrained, revision=revision, token=token, cache_dir=cache_dir,
        local_files_only=local_files_only,
    )  # fmt: skip
    layout = VocabLayout.omni_diffusion()
    raw = read_config_json(folder / "config.json")
    if int(raw.get("vocab_size", -1)) != layout.vocab_size:
        raise ReleasedFormatError(
            f"{folder}/config.json has vocab_size {raw.get('vocab_size')}; the released model "
            f"has {layout.vocab_size} (Dream's 151,667 text ids, 21 markers, 16,384 speech "
            "and 8,192 image codes)"
        )
    if int(raw.get("mask_token_id", layout.mask_id)) != layout.mask_id:
        raise ReleasedFormatError(f"mask_token_id {raw['mask_token_id']} != {layout.mask_id}")
    check_released_tokenizer(folder, layout)
    text = TextTokenizer(dream_tokenizer_from_files(folder, text_size=layout.text_size))

    state = load_state_dict(folder, device=device)
    audio = {k: v for k, v in state.items() if k.startswith(AUDIO_MODEL_PREFIX)}
    projection = {
        k.removeprefix(AUDIO_PROJECTION_PREFIX): v
        for k, v in state.items()
        if k.startswith(AUDIO_PROJECTION_PREFIX)
    }
    if not audio or not projection:
        raise ReleasedFormatError(
            f"{folder} holds no speech path ({AUDIO_MODEL_PREFIX}* and "
            f"{AUDIO_PROJECTION_PREFIX}*); a bare Dream checkpoint loads with "
            "NativeTransformer.from_pretrained"
        )
    backbone_state = {k: v for k, v in state.items() if not k.startswith("model.audio_")}
    config = TransformerConfig.from_dict(raw)
    with torch.device("meta"):
        backbone = NativeTransformer.from_config(config, shift_logits=True)
    backbone.load_checkpoint_state(backbone_state, strict=True)
    encoder = SenseVoiceEncoder.from_state_dict(
        audio, prefix=AUDIO_MODEL_PREFIX, attention_heads=sensevoice_heads
    )
    weight = projection.get("mlp.0.weight")
    if weight is None:
        raise ReleasedFormatError(f"no {AUDIO_PROJECTION_PREFIX}mlp.0.weight in {folder}")
    projector = ResamplerProjector(int(weight.shape[1]), int(weight.shape[0]))
    missing, unexpected = projector.load_state_dict(projection, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the audio projection does not fit: missing {missing}, unexpected {unexpected}"
        )
    if cmvn is None and (folder / "am.mvn").is_file():
        cmvn = folder / "am.mvn"
    module = OmniDiffusionModule(
        backbone, layout, speech_encoder=encoder.to(device), speech_projector=projector.to(device)
    ).eval()
    if dtype is not None:
        module.to(dtype)
    return ReleasedOmniDiffusion(
        module=module,
        text_tokenizer=text,
        front_end=SenseVoiceFrontEnd(
            None if isinstance(cmvn, Tensor) else cmvn,
            stats=cmvn if isinstance(cmvn, Tensor) else None,
        ),
        image_tokenizer=image_tokenizer,
        speech_tokenizer=speech_tokenizer,
    )
