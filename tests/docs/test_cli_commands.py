"""Every `omni-blocks` command on the docs' toy config: fit, validate, test, predict, then
`generate` from a saved folder (PNG and WAV), and `recipes`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from test_configs import WORDS, make_toy_folder, titled

from omni_blocks.backbones import NativeTransformer
from omni_blocks.cli import cli, main
from omni_blocks.data import (
    OmniDataModule,
    TaskMixture,
    TemplateDataset,
    TextToImageTemplate,
    TtsTemplate,
)
from omni_blocks.data.processor import TaskProcessor
from omni_blocks.masking import AttenuatedTailPadMasking
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig
from omni_blocks.sampling import omni_diffusion_sampler
from omni_blocks.tokenizers import TextTokenizer
from omni_blocks.tokenizers.audio import read_wav
from omni_blocks.tokenizers.patch_vq import PatchVQTokenizer
from omni_blocks.tokenizers.speech_vq import MelVQSpeechTokenizer
from omni_blocks.vocab import VocabLayout


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["omni-blocks"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config page's folder after `omni-blocks fit` (a few steps)."""
    folder = make_toy_folder(tmp_path_factory.mktemp("toy"))
    config = yaml.safe_load(titled("toy.yaml"))
    config["trainer"]["max_steps"] = 4
    config["trainer"]["default_root_dir"] = str(folder)
    (folder / "toy.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr("sys.argv", ["omni-blocks"])
        main(["fit", "--config", "toy.yaml"])
        main(["fit", "--config", "toy.yaml"])  # a second run replaces last.ckpt
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert not (folder / "checkpoints" / "last-v1.ckpt").exists()
    return folder


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_run_on_the_toy_config(
    trained: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(trained)
    run = cli([command, "--config", "toy.yaml", "--ckpt_path", "checkpoints/last.ckpt"])
    metrics = run.trainer.callback_metrics
    assert f"{'val' if command == 'validate' else 'test'}/loss" in metrics
    if command == "test":
        assert "test/loss/t2i" in metrics  # the per-task metric


def test_predict_writes_the_generations(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(trained)
    run = cli(["predict", "--config", "toy.yaml", "--ckpt_path", "checkpoints/last.ckpt"])
    folder = Path(run.trainer.log_dir or trained) / "predictions"
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(WORDS)  # every training example once (no val / test data)
    first = json.loads(lines[0])
    assert first["task"] == "t2i" and all(0 <= c < 16 for c in first["codes"])
    assert (folder / f"{first['file']}.json").is_file()


def fitted(layout: VocabLayout, train: TaskMixture) -> Any:
    """A tiny model trained until it answers the examples (as in the README)."""
    torch.manual_seed(0)
    backbone = NativeTransformer(layout.vocab_size, 64, 128, 2, 4)
    module = OmniDiffusionModule(
        backbone,
        layout,
        mask_strategy=AttenuatedTailPadMasking(),
        sampler=omni_diffusion_sampler(4, restrict_to_modality=True, ban_mask=True),
        optimizer=AdamWConfig(lr=2e-3),
    )
    data = OmniDataModule(layout, train=train, batch_size=20, extra_tail_pad=(1, 2))
    L.Trainer(
        max_steps=200, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, data)  # fmt: skip
    return module


def test_generate_writes_png_and_wav_from_a_saved_folder(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = TextTokenizer.from_pretrained(trained / "tokenizer")
    layout = VocabLayout(
        text.codebook_size, speech_size=16, image_size=16, special_ids=text.special_ids
    )
    # image and speech tokenizers small enough to fit here, with 16 codes each
    image = PatchVQTokenizer(image_size=8, channels=1, patch_size=4, codebook_size=16)
    image.fit(torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    speech = MelVQSpeechTokenizer(codebook_size=16, n_mels=40)
    t = torch.arange(16_000) / 16_000
    speech.fit([0.3 * torch.sin(2 * math.pi * f * t) for f in (200.0, 300.0, 500.0, 700.0)] * 4)
    t2i, tts = TextToImageTemplate(layout, text, image_tokens=4), TtsTemplate(layout, text)
    pictures = [[i % 16, (3 * i) % 16, (5 * i + 1) % 16, 15 - i] for i in range(10)]
    voices = [[i, i, (i + 7) % 16] for i in range(10)]
    drawings = [
        {"caption": w, "image_codes": torch.tensor(p)} for w, p in zip(WORDS, pictures, strict=True)
    ]
    sayings = [
        {"text": w, "speech_codes": torch.tensor(v)} for w, v in zip(WORDS, voices, strict=True)
    ]
    train = TaskMixture(
        {"t2i": TemplateDataset(drawings, t2i), "tts": TemplateDataset(sayings, tts)},
        num_samples=400,
    )
    module = fitted(layout, train)
    processor = TaskProcessor(
        {"t2i": t2i, "tts": tts}, image_tokenizer=image, speech_tokenizer=speech
    )
    module.save_pretrained(tmp_path / "model", processor=processor)
    reloaded = OmniDiffusionModule.from_pretrained(tmp_path / "model")
    assert reloaded.processor is not None
    assert reloaded.processor.templates["t2i"].image_tokens == 4
    assert isinstance(reloaded.processor.speech_tokenizer, MelVQSpeechTokenizer)

    for task, example, length in [
        ("t2i", {"caption": "seven"}, []),
        ("tts", {"text": "two"}, ["--target-length", "6"]),
    ]:
        main(
            [
                "generate", "--model", str(tmp_path / "model"), "--task", task, *length,
                "--example", json.dumps(example), "--out", str(tmp_path / task), "--no-progress",
            ]
        )  # fmt: skip
    (drawn,) = [
        json.loads(x) for x in (tmp_path / "t2i" / "outputs.jsonl").read_text().split("\n") if x
    ]
    assert drawn["codes"] == pictures[7]
    assert (tmp_path / "t2i" / drawn["image"]).read_bytes()[:4] == b"\x89PNG"
    (said,) = [
        json.loads(x) for x in (tmp_path / "tts" / "outputs.jsonl").read_text().split("\n") if x
    ]
    assert said["codes"] == voices[2]
    wave, rate = read_wav(tmp_path / "tts" / said["audio"])
    assert rate == speech.sample_rate and wave.shape[-1] == 3 * speech.samples_per_token


def test_generate_explains_bad_requests(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = OmniDiffusionModule.load_from_checkpoint(trained / "checkpoints" / "last.ckpt")
    module.save_pretrained(tmp_path / "bare")
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tmp_path / "bare"), "--task", "t2i", "--out", "x"])
    assert "without a processor" in capsys.readouterr().err


def test_recipes_list_and_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["recipes", "list"])
    assert "omni_diffusion: stage1.yaml, stage2.yaml, stage3.yaml" in capsys.readouterr().out
    main(["recipes", "copy", "omni_diffusion", str(tmp_path / "recipe")])
    assert sorted(p.name for p in (tmp_path / "recipe").iterdir()) == [
        "stage1.yaml",
        "stage2.yaml",
        "stage3.yaml",
    ]
    with pytest.raises(SystemExit):
        main(["recipes", "copy", "omni_diffusion", str(tmp_path / "recipe")])  # exists
    assert "overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["recipes", "copy", "nothing", str(tmp_path)])
