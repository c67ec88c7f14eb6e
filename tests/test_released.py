"""The released Omni-Diffusion's folder format, on a tiny random stand-in of exactly that
layout (`omni_blocks.testing.make_released_standin`): loaded with `strict=True`, every task
of upstream's `tools/inference.py` through one call, and bad folders / inputs named."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from omni_blocks.backbones import NativeTransformer
from omni_blocks.released import (
    UPSTREAM_TASKS,
    ReleasedFormatError,
    ReleasedOmniDiffusion,
    load_released,
)
from omni_blocks.speech import SenseVoiceEncoder
from omni_blocks.testing import make_released_standin
from omni_blocks.vocab import Modality, VocabLayout

CMVN = Path(__file__).resolve().parent / "fixtures" / "sensevoice" / "am.mvn"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_released_standin(tmp_path_factory.mktemp("released") / "Omni-Diffusion")


@pytest.fixture(scope="module")
def released(standin: Path) -> ReleasedOmniDiffusion:
    model = load_released(standin, sensevoice_heads=2, cmvn=CMVN)
    # upstream's prompts and samplers, fewer steps and positions (a test's budget)
    model.tasks = {
        name: replace(task, steps=4, max_new_tokens=min(task.max_new_tokens, 24))
        for name, task in UPSTREAM_TASKS.items()
    }
    return model


def test_every_tensor_of_the_folder_has_its_place(
    standin: Path, released: ReleasedOmniDiffusion
) -> None:
    index = json.loads((standin / "model.safetensors.index.json").read_text())
    stored = {}
    for name, file in index["weight_map"].items():
        with safe_open(str(standin / file), "pt") as f:
            stored[name] = f.get_tensor(name)
    module = released.module
    mine = {f"{k}": v for k, v in module.backbone.state_dict().items()}
    mine |= {
        f"model.audio_model.model.{k}": v for k, v in module.speech_encoder.state_dict().items()
    }
    mine |= {
        f"model.audio_projection.{k}": v for k, v in module.speech_projector.state_dict().items()
    }
    unused = sorted(set(stored) - set(mine))
    assert unused == [
        "model.audio_model.model.ctc.ctc_lo.bias",
        "model.audio_model.model.ctc.ctc_lo.weight",
    ]
    for name, value in mine.items():
        assert torch.equal(stored[name], value), name
    assert module.layout == VocabLayout.omni_diffusion()
    # the Dream part alone is an ordinary Dream checkpoint for NativeTransformer
    with pytest.warns(UserWarning, match="not part of the backbone"):
        alone = NativeTransformer.from_pretrained(standin)
    ids = torch.randint(0, 151_000, (1, 9))
    torch.testing.assert_close(alone(ids), module.backbone(ids))


@pytest.mark.parametrize("task", sorted(UPSTREAM_TASKS))
def test_each_upstream_task_runs_in_one_call(task: str, released: ReleasedOmniDiffusion) -> None:
    wave = 0.1 * torch.randn(8_000, generator=torch.Generator().manual_seed(1))
    inputs = {
        "asr": {"audio": wave, "sample_rate": 16_000},
        "tts": {"text": "Hello world."},
        "vqa": {"text": "What is in the picture?", "image": torch.arange(16)},
        "t2i": {"text": "A red apple."},
        "s2i": {"audio": wave, "sample_rate": 16_000},
        "svqa": {"audio": wave, "sample_rate": 16_000, "image": torch.arange(16)},
    }[task]
    first = released.generate(task, generator=torch.Generator().manual_seed(0), **inputs)
    again = released.generate(task, generator=torch.Generator().manual_seed(0), **inputs)
    assert torch.equal(first.ids, again.ids)
    settings = released.tasks[task]
    assert len(first.ids) == settings.max_new_tokens
    assert not bool((first.ids == released.layout.mask_id).any())
    if settings.begin_speech_at is not None:  # add_boa_token: the marker stays where it was put
        at = int(settings.max_new_tokens * settings.begin_speech_at)
        assert int(first.ids[at]) == released.layout.begin_id(Modality.SPEECH)


def test_the_prompts_are_upstreams_messages(released: ReleasedOmniDiffusion) -> None:
    wave = torch.zeros(16_000)
    sample = released.messages("s2i", audio=wave, sample_rate=16_000)
    assert sample["messages"] == [
        {"role": "system", "content": "Please generate an image based on the input audio."},
        {"role": "user", "content": "\n<|audio|>"},
    ]
    seq = released.template("s2i").prompt(sample, 8)
    assert seq.slots is not None
    frames = len(sample["audios"][0])
    assert int(seq.slots.sum()) == frames + 4  # SenseVoice's four queries
    tts = released.messages("tts", text="Hi.")
    assert tts["messages"][0]["content"] == "Convert the text to speech.\nHi."


def test_the_folders_code_is_never_run_and_bad_folders_are_named(
    standin: Path, tmp_path: Path
) -> None:
    assert (standin / "tokenization_dream.py").is_file()  # raises if imported; never is
    bad = tmp_path / "bad"
    shutil.copytree(standin, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "vocab_size": 176_247}))
    with pytest.raises(ReleasedFormatError, match="vocab_size 176247"):
        load_released(bad, sensevoice_heads=2)
    (bad / "config.json").write_text(json.dumps(config))
    tok = json.loads((bad / "tokenizer_config.json").read_text())
    moved = dict(tok["added_tokens_decoder"])
    moved["151684"] = {**moved["151684"], "content": "<|end_of_audio|>"}
    (bad / "tokenizer_config.json").write_text(json.dumps({**tok, "added_tokens_decoder": moved}))
    with pytest.raises(ReleasedFormatError, match="begin_of_audio"):
        load_released(bad, sensevoice_heads=2)


def test_bad_audio_and_tasks_are_named(released: ReleasedOmniDiffusion) -> None:
    with pytest.raises(ValueError, match="16000"):
        released.generate("asr", audio=torch.zeros(8_000), sample_rate=8_000)
    with pytest.raises(ValueError, match=r"mono|channel|1-D"):
        released.generate("asr", audio=torch.zeros(2, 8_000), sample_rate=16_000)
    with pytest.raises(ValueError, match="unknown task 'ocr'"):
        released.generate("ocr", text="x")


def test_a_missing_speech_path_is_named(standin: Path, tmp_path: Path) -> None:
    from omni_blocks.checkpointing import load_state_dict, save_state_dict

    bare = tmp_path / "bare"
    shutil.copytree(standin, bare)
    state = {k: v for k, v in load_state_dict(standin).items() if not k.startswith("model.audio_")}
    save_state_dict(state, bare)
    with pytest.raises(ReleasedFormatError, match="no speech path"):
        load_released(bare, sensevoice_heads=2)
    assert isinstance(SenseVoiceEncoder, type)
