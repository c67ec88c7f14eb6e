"""`TaskProcessor`: the templates and tokenizers that go with a model.

A trained model generates for a task only with the pieces around it: the task's template
(which builds the prompt and parses the output), the text tokenizer inside it, and the image
and speech tokenizers that turn files into codes and generated codes back into pictures and
sound. A `TaskProcessor` holds them together and is saved in the model's folder
(`module.save_pretrained(folder, processor=...)`), so that one folder, or one hub
repository, is enough to generate:

```text
folder/
  omni_blocks.json, layout.json, config.json, model.safetensors, README.md   (the module)
  processor.json                  templates and tokenizer classes
  text_tokenizer/                 TextTokenizer.save_pretrained
  image_tokenizer/, speech_tokenizer/   their own save_pretrained (when they have one)
```

`processor.json` is read as untrusted input, like the module's configuration: its class
paths must name registered blocks (see `omni_blocks.config.REGISTRY`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from omni_blocks.checkpointing import PROCESSOR_NAME
from omni_blocks.config import REGISTRY, block_config, build_blocks, check_untrusted
from omni_blocks.data.manifest import load_example
from omni_blocks.data.speech_input import SpeechInput
from omni_blocks.data.templates import ChatFormat, TaskTemplate
from omni_blocks.tokenizers.base import ImageTokenizer, SpeechTokenizer
from omni_blocks.tokenizers.text import TextTokenizer
from omni_blocks.vocab import Modality, VocabLayout

__all__ = ["TaskProcessor"]

_FORMAT = 1
_TOKENIZERS = ("image_tokenizer", "speech_tokenizer")


@dataclass
class TaskProcessor:
    """The task templates and tokenizers of a model, saved and loaded with it.

    Args:
        templates: one template per task name (`"t2i"`, `"asr"`, ...), all built on the same
            layout and text tokenizer.
        image_tokenizer: turns image files into codes and generated codes into images.
        speech_tokenizer: turns audio files into codes and generated codes into waveforms.

    Raises:
        ValueError: no template, or templates that disagree on the layout or the text
            tokenizer.
    """

    templates: dict[str, TaskTemplate]
    image_tokenizer: ImageTokenizer | None = None
    speech_tokenizer: SpeechTokenizer | None = None
    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError("a TaskProcessor needs at least one template")
        first = next(iter(self.templates.values()))
        for name, template in self.templates.items():
            if template.layout != first.layout:
                raise ValueError(f"template {name!r} is built on another layout")
            if template.tokenizer is not first.tokenizer:
                raise ValueError(f"template {name!r} has another text tokenizer")

    @property
    def layout(self) -> VocabLayout:
        """The layout every template is built on."""
        return next(iter(self.templates.values())).layout

    @property
    def text_tokenizer(self) -> TextTokenizer:
        """The text tokenizer the templates share."""
        return next(iter(self.templates.values())).tokenizer

    def template(self, task: str) -> TaskTemplate:
        """The template of `task`.

        Raises:
            KeyError: no such task (the message lists the tasks there are).
        """
        if task not in self.templates:
            raise KeyError(f"no task {task!r}; this processor has {sorted(self.templates)}")
        return self.templates[task]

    def example(self, record: Mapping[str, Any], *, base: str | Path = ".") -> dict[str, Any]:
        """A manifest-style record (text, code lists, `image` / `audio` files) as a template
        example, media tokenized with this processor's tokenizers (see
        [`load_example`][omni_blocks.data.manifest.load_example])."""
        return load_example(
            record,
            base=base,
            image_tokenizer=self.image_tokenizer,
            speech_tokenizer=self.speech_tokenizer,
        )

    def decodes(self, task: str) -> bool:
        """Whether `decode` can turn `task`'s outputs into text, an image or a waveform
        (an image or speech task needs its tokenizer)."""
        modality = self.template(task).target_modality
        if modality is Modality.IMAGE:
            return self.image_tokenizer is not None
        if modality is Modality.SPEECH:
            return self.speech_tokenizer is not None
        return True

    def decode(self, task: str, output: str | Tensor) -> str | Tensor:
        """A parsed output of `task` as text, an image `(channels, H, W)` in `[0, 1]`, or a
        waveform `(time,)` at the speech tokenizer's sample rate.

        Raises:
            ValueError: an image or speech output without the tokenizer to decode it.
        """
        modality = self.template(task).target_modality
        if modality is Modality.TEXT or isinstance(output, str):
            return output
        if modality is Modality.IMAGE:
            if self.image_tokenizer is None:
                raise ValueError(f"{task!r} makes images but the processor has no image tokenizer")
            images: Tensor = self.image_tokenizer.decode(output.unsqueeze(0))
            return images[0]
        if self.speech_tokenizer is None:
            raise ValueError(f"{task!r} makes speech but the processor has no speech tokenizer")
        waves = self.speech_tokenizer.decode(output.unsqueeze(0))
        wave: Tensor = waves[0]
        return wave

    # ------------------------------------------------------------------ files
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `processor.json`, the text tokenizer and the media tokenizers to `folder`.

        A media tokenizer with `save_pretrained` is written to its own sub-folder; one
        without (an adapter that points at weights elsewhere, such as
        `GLM4VoiceTokenizer`) is recorded by its configuration.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.text_tokenizer.save_pretrained(folder / "text_tokenizer")
        document: dict[str, Any] = {
            "format": _FORMAT,
            "text_tokenizer": "text_tokenizer",
            "templates": {name: _template_config(t) for name, t in self.templates.items()},
        }
        for name in _TOKENIZERS:
            tokenizer = getattr(self, name)
            if tokenizer is None:
                continue
            path = f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}"
            saver = getattr(tokenizer, "save_pretrained", None)
            if callable(saver):
                saver(folder / name)
                document[name] = {"class_path": path, "folder": name}
            else:
                document[name] = block_config(tokenizer)
        (folder / PROCESSOR_NAME).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, layout: VocabLayout, *, trust_class_paths: bool = False
    ) -> TaskProcessor:
        """Read a processor written by `save_pretrained` for a model of `layout`.

        Raises:
            FileNotFoundError: no `processor.json` in `folder`.
            UntrustedConfigError: a class path outside the registry.
            ValueError: an unknown format.
        """
        folder = Path(folder)
        path = folder / PROCESSOR_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{folder} holds no {PROCESSOR_NAME} (saved without one)")
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a processor file of format {_FORMAT}")
        check_untrusted(document, trust_class_paths=trust_class_paths, source=str(path))
        text = TextTokenizer.from_pretrained(folder / str(document["text_tokenizer"]))
        templates = {}
        for name, config in dict(document["templates"]).items():
            template_cls = REGISTRY.resolve(str(config["class_path"]))
            init_args = dict(config.get("init_args") or {})
            if isinstance(init_args.get("chat"), Mapping):
                init_args["chat"] = ChatFormat(**init_args["chat"])
            speech = init_args.get("speech_input")
            if isinstance(speech, Mapping):
                speech_cls = REGISTRY.resolve(str(speech["class_path"]))
                init_args["speech_input"] = speech_cls(**dict(speech.get("init_args") or {}))
            templates[name] = template_cls(layout=layout, tokenizer=text, **init_args)
        tokenizers: dict[str, Any] = {}
        for name in _TOKENIZERS:
            config = document.get(name)
            if config is None:
                continue
            tokenizer_cls: Any = REGISTRY.resolve(str(config["class_path"]))
            if "folder" in config:
                tokenizers[name] = tokenizer_cls.from_pretrained(folder / str(config["folder"]))
            else:
                (tokenizers[name],) = build_blocks(_One, {"block": dict(config)}).values()
        return cls(templates, **tokenizers)


class _One:
    """A signature with one block, to build a recorded configuration with jsonargparse."""

    def __init__(self, block: Any) -> None:
        self.block = block


def _template_config(template: TaskTemplate) -> dict[str, Any]:
    """`class_path` / `init_args` of a template, without its layout and tokenizer (saved
    apart)."""
    init_args: dict[str, Any] = {}
    for item in fields(template):
        if not item.init or item.name in ("layout", "tokenizer"):
            continue
        value = getattr(template, item.name)
        if isinstance(value, ChatFormat):
            value = {f.name: getattr(value, f.name) for f in fields(value)}
        elif isinstance(value, SpeechInput):
            value = block_config(value)
        init_args[item.name] = value
    path = f"{type(template).__module__}.{type(template).__qualname__}"
    return {"class_path": path, "init_args": init_args}
