"""JSONL manifests: media files or codes -> task sequences; ManifestDataModule's mixture."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from omni_blocks.data import (
    AsrTemplate,
    CaptionTemplate,
    ChatFormat,
    DataError,
    ManifestDataModule,
    ManifestDataset,
    ManifestTask,
    TaskSequence,
    load_example,
    read_manifest,
)
from omni_blocks.data.manifest import load_image
from omni_blocks.tokenizers import MagvitV2, PretrainedMagvitV2
from omni_blocks.tokenizers.audio import resample, write_wav
from omni_blocks.vocab import Modality, VocabLayout
from tiny_data import IMAGE_TOKENS, digit_layout, digit_tokenizer

BARE = ChatFormat(user_start="", user_end="", assistant_start="")


@pytest.fixture(scope="module")
def layout() -> VocabLayout:
    return digit_layout(digit_tokenizer())


@pytest.fixture(scope="module")
def magvit_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random MAGVIT-v2 with 16 codes (4 bits) for 4x4 images: 2x2 = IMAGE_TOKENS codes."""
    torch.manual_seed(0)
    model = MagvitV2(
        ch=32,
        encoder_ch_mult=(1, 1),
        encoder_num_res_blocks=(1, 1),
        decoder_ch_mult=(1, 1),
        decoder_num_res_blocks=(1, 1),
        z_channels=4,
        image_size=4,
        resolution=4,
    )
    assert model.tokens_per_item == IMAGE_TOKENS
    return model.save_pretrained(tmp_path_factory.mktemp("magvit"))


@pytest.fixture(scope="module")
def magvit(magvit_folder: Path) -> PretrainedMagvitV2:
    return PretrainedMagvitV2(str(magvit_folder))


def caption(layout: VocabLayout, tok: Any, **kwargs: Any) -> CaptionTemplate:
    return CaptionTemplate(layout, tok, image_tokens=IMAGE_TOKENS, chat=BARE, **kwargs)


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def png(path: Path, width: int, height: int, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


# ---------------------------------------------------------------------------------- reading
def test_load_image_resizes_the_shorter_side_then_crops_the_centre(tmp_path: Path) -> None:
    pixels = png(tmp_path / "wide.png", width=8, height=4)
    image = load_image(tmp_path / "wide.png", 4)  # shorter side already 4: crop columns 2..5
    assert image.shape == (3, 4, 4) and image.dtype == torch.float32
    expected = torch.from_numpy(pixels[:, 2:6].copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(image, expected)  # torchvision scales by 1/255: last bits
    # upstream's image_transform: torchvision's Resize(BICUBIC) + CenterCrop on the PIL image
    from PIL import Image
    from torchvision import transforms

    with Image.open(tmp_path / "wide.png") as opened:
        upstream = transforms.CenterCrop(2)(
            transforms.Resize(2, interpolation=transforms.InterpolationMode.BICUBIC)(
                opened.convert("RGB")
            )
        )
    torch.testing.assert_close(
        load_image(tmp_path / "wide.png", 2), transforms.ToTensor()(upstream)
    )
    small = load_image(tmp_path / "wide.png", 2)  # 8x4 -> 4x2, then columns 1..2
    assert small.shape == (3, 2, 2) and 0.0 <= float(small.min()) <= float(small.max()) <= 1.0


def test_manifest_with_codes_and_media_builds_sequences(
    tmp_path: Path, layout: VocabLayout, magvit: PretrainedMagvitV2
) -> None:
    tok = digit_tokenizer()
    png(tmp_path / "media" / "seven.png", width=6, height=4, seed=7)
    np.save(tmp_path / "media" / "three.npy", np.array([3, 4, 5, 6]))
    manifest = write_lines(
        tmp_path / "caption.jsonl",
        [
            {"id": "a", "caption": "the digit one", "image_codes": [1, 2, 3, 4]},
            "",  # blank lines are skipped
            {"id": "b", "caption": "the digit seven", "image": "media/seven.png"},
            {"id": "c", "caption": "the digit three", "image_codes": "media/three.npy"},
        ],
    )
    data = ManifestDataset([str(manifest)], caption(layout, tok), image_tokenizer=magvit)
    assert len(data) == 3 and data.location(1).endswith("caption.jsonl:3")
    assert all(isinstance(data[i], TaskSequence) for i in range(3))
    assert data.example(0)["image_codes"].tolist() == [1, 2, 3, 4]
    assert data.example(2)["image_codes"].tolist() == [3, 4, 5, 6]
    seven = data.example(1)
    expected = magvit.encode(load_image(tmp_path / "media" / "seven.png", 4)[None])[0]
    assert torch.equal(seven["image_codes"], expected) and "image" not in seven
    # the codes appear in the sequence as global image ids, in order
    ids = data[1].ids
    image_range = layout.id_range(Modality.IMAGE)
    in_image = (ids >= image_range.start) & (ids < image_range.stop)
    assert torch.equal(ids[in_image], layout.to_global(expected, Modality.IMAGE))
    assert [r["id"] for r in read_manifest(manifest)] == ["a", "b", "c"]


def test_media_paths_resolve_against_root(tmp_path: Path, layout: VocabLayout) -> None:
    tok = digit_tokenizer()
    (tmp_path / "shared").mkdir()
    np.save(tmp_path / "shared" / "codes.npy", np.arange(4))
    manifest = write_lines(
        tmp_path / "lists" / "c.jsonl", [{"caption": "one", "image_codes": "codes.npy"}]
    )
    with pytest.raises(DataError, match=r"codes\.npy"):
        ManifestDataset([manifest], caption(layout, tok)).example(0)
    data = ManifestDataset([manifest], caption(layout, tok), root=tmp_path / "shared")
    assert data.example(0)["image_codes"].tolist() == [0, 1, 2, 3]


def test_audio_files_are_resampled_and_tokenized(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from omni_blocks.tokenizers.glm4voice import GLM4VoiceTokenizer, WhisperVQEncoder

    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        num_mel_bins=16,
        max_source_positions=100,
        pooling_position=1,
        quantize_position=2,
        quantize_vocab_size=16,
        quantize_causal_block_size=20,
    )
    folder = WhisperVQEncoder(config).save_pretrained(
        tmp_path / "glm", transformers.WhisperFeatureExtractor(feature_size=16)
    )
    speech = GLM4VoiceTokenizer(str(folder))
    t = torch.arange(4000) / 8000
    wave = 0.3 * torch.sin(2 * math.pi * 220 * t)
    write_wav(tmp_path / "a.wav", wave, 8000)
    example = load_example(
        {"audio": "a.wav", "text": "one"}, base=tmp_path, speech_tokenizer=speech, name="x"
    )
    from omni_blocks.tokenizers.audio import load_audio

    expected = speech.encode(load_audio(tmp_path / "a.wav", 16_000), sample_rate=16_000)
    assert torch.equal(example["speech_codes"], expected)
    assert example["speech_codes"].numel() == math.ceil(8000 / 1280)  # 0.5 s at 12.5 Hz
    assert "audio" not in example and example["text"] == "one"
    assert resample(wave, 8000, 16_000).numel() == 8000


def test_errors_name_the_file_and_line(
    tmp_path: Path, layout: VocabLayout, magvit: PretrainedMagvitV2
) -> None:
    tok = digit_tokenizer()
    manifest = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"caption": "one", "image_codes": [1, 2, 3, 4]},
            "{not json",
            {"id": "no-caption", "image_codes": [1, 2, 3, 4]},
            {"id": "lost", "caption": "one", "image": "missing.png"},
            {"id": "floats", "caption": "one", "image_codes": [1.5, 2, 3, 4]},
            ["a", "list"],
        ],
    )
    data = ManifestDataset([manifest], caption(layout, tok), image_tokenizer=magvit)
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        data[1]
    with pytest.raises(DataError, match=r"bad.jsonl:3.*'caption'"):
        data[2]
    with pytest.raises(DataError, match=r"bad.jsonl:4.*missing.png does not exist"):
        data[3]
    with pytest.raises(DataError, match=r"bad.jsonl:5.*list of integers"):
        data[4]
    with pytest.raises(DataError, match=r"bad.jsonl:6.*JSON object"):
        data[5]
    no_tokenizer = ManifestDataset([manifest], caption(layout, tok))
    png(tmp_path / "missing.png", 4, 4)
    with pytest.raises(DataError, match="no image_tokenizer"):
        no_tokenizer[3]
    with pytest.raises(FileNotFoundError, match=r"nowhere\.jsonl"):
        ManifestDataset([tmp_path / "nowhere.jsonl"], caption(layout, tok))
    with pytest.raises(DataError, match="hold no examples"):
        ManifestDataset([write_lines(tmp_path / "empty.jsonl", [""])], caption(layout, tok))


# ---------------------------------------------------------------------------------- the module
def _tasks(
    tmp_path: Path, ratio_b: float = 1.0, image_tokens: int | None = IMAGE_TOKENS
) -> list[ManifestTask]:
    words = ["one", "two", "three", "four"]
    cap = write_lines(
        tmp_path / "caption.jsonl",
        [{"caption": f"the digit {w}", "image_codes": [i, i, i, i]} for i, w in enumerate(words)],
    )
    asr = write_lines(
        tmp_path / "asr.jsonl",
        [{"text": w, "speech_codes": [i, i + 1]} for i, w in enumerate(words[:2])],
    )
    extra = {} if image_tokens is None else {"image_tokens": image_tokens}
    return [
        ManifestTask([str(cap)], functools.partial(CaptionTemplate, chat=BARE, **extra)),
        ManifestTask([str(asr)], functools.partial(AsrTemplate, chat=BARE), ratio=ratio_b),
    ]


def test_ratio_is_the_share_of_each_task_per_epoch(tmp_path: Path, layout: VocabLayout) -> None:
    tok = digit_tokenizer()
    tasks = _tasks(tmp_path, ratio_b=2.0)
    tasks[0] = ManifestTask(tasks[0].manifests, tasks[0].template, ratio=0.5)
    data = ManifestDataModule(layout, tok, tasks, image_tokenizer=None, batch_size=3)
    # upstream meaning: ratio x examples per epoch (4 x 0.5 captions, 2 x 2 ASR)
    assert data.train.counts() == {"caption": 2, "asr": 4}
    assert data.train.num_samples == 6
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 3 and set(batch["task"]) <= {"caption", "asr"}
    assert data.templates["asr"].instruction == AsrTemplate.instruction
    # prompt dropout, by task name, on the training batches only
    dropped = ManifestDataModule(layout, tok, tasks, batch_size=6, prompt_dropout=1.0,
                                 prompt_dropout_tasks=["asr"])  # fmt: skip
    batch = next(iter(dropped.train_dataloader()))
    empty = data.templates["asr"].unconditional_prompt()
    prompts = batch["attention_mask"] & ~batch["target_mask"]
    for row, prompt, task in zip(batch["input_ids"], prompts, batch["task"], strict=True):
        dropped_row = torch.equal(row[prompt], empty)
        assert dropped_row == (task == "asr"), task
    assert dropped.collator.prompt_dropout is None  # validation and test keep their prompts
    with pytest.raises(ValueError, match=r"prompt_dropout_tasks names \['s2i'\]"):
        ManifestDataModule(layout, tok, tasks, prompt_dropout=0.1, prompt_dropout_tasks=["s2i"])


def test_image_tokens_follow_the_image_tokenizer(
    tmp_path: Path, layout: VocabLayout, magvit: PretrainedMagvitV2
) -> None:
    tok = digit_tokenizer()
    tasks = _tasks(tmp_path, image_tokens=None)
    assert CaptionTemplate(layout, tok).image_tokens == 256  # the default (MAGVIT-v2 at 256)
    data = ManifestDataModule(layout, tok, tasks, image_tokenizer=magvit, max_length=64)
    assert data.templates["caption"].image_tokens == IMAGE_TOKENS  # type: ignore[attr-defined]
    assert data.templates["asr"].max_length == 64
    clash = ManifestTask(
        tasks[0].manifests, functools.partial(CaptionTemplate, chat=BARE, image_tokens=9)
    )
    with pytest.raises(ValueError, match=r"image_tokens=9.*4 codes per image"):
        ManifestDataModule(layout, tok, [clash], image_tokenizer=magvit)


def test_bad_configurations_are_named(tmp_path: Path, layout: VocabLayout) -> None:
    tok = digit_tokenizer()
    tasks = _tasks(tmp_path)
    with pytest.raises(ValueError, match="two tasks are named 'caption'"):
        ManifestDataModule(layout, tok, [tasks[0], tasks[0]])
    with pytest.raises(TypeError, match="image_tokenizer must implement ImageTokenizer"):
        ManifestDataModule(layout, tok, tasks, image_tokenizer=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ratio must be positive"):
        ManifestTask(["x.jsonl"], functools.partial(AsrTemplate), ratio=0.0)
    with pytest.raises(ValueError, match="at least one training task"):
        ManifestDataModule(layout, tok, [])


def test_pretrained_magvit_matches_the_saved_model(magvit_folder: Path) -> None:
    saved = MagvitV2.from_pretrained(magvit_folder)
    loaded = PretrainedMagvitV2(str(magvit_folder))
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(saved.encode(images), loaded.encode(images))
    assert loaded.pretrained == str(magvit_folder) and not loaded.training
    bigger = PretrainedMagvitV2(str(magvit_folder), image_size=8)
    assert bigger.tokens_per_item == 16
    with pytest.raises(ValueError, match="unknown dtype"):
        PretrainedMagvitV2(str(magvit_folder), dtype="float13")


def test_validation_tasks_are_concatenated_in_order(tmp_path: Path, layout: VocabLayout) -> None:
    tok = digit_tokenizer()
    tasks = _tasks(tmp_path)
    data = ManifestDataModule(layout, tok, tasks[:1], val=tasks, batch_size=4, val_batch_size=3)
    loader = data.val_dataloader()
    batches = list(loader)  # type: ignore[arg-type]
    assert [len(b["task"]) for b in batches] == [3, 3]
    assert [t for b in batches for t in b["task"]] == ["caption"] * 4 + ["asr"] * 2


def test_audio_heard_as_features_goes_through_the_front_end(tmp_path: Path) -> None:
    from omni_blocks.data import AsrTemplate, ChatTextTemplate, ManifestDataset, SpeechFeatures
    from omni_blocks.speech import LogMelFrontEnd
    from omni_blocks.tokenizers import TextTokenizer
    from omni_blocks.tokenizers.audio import load_audio

    text = TextTokenizer.train_bpe(["one two three"] * 5, vocab_size=280, min_frequency=1)
    layout = VocabLayout(text.codebook_size, 16, 16, special_ids=text.special_ids)
    front = LogMelFrontEnd(n_mels=20)
    t = torch.arange(4000) / 16_000
    write_wav(tmp_path / "a.wav", 0.3 * torch.sin(2 * math.pi * 220 * t), 16_000)
    manifest = write_lines(
        tmp_path / "asr.jsonl",
        [{"id": "u1", "audio": "a.wav", "text": "one"},
         {"id": "c1", "audios": ["a.wav"], "messages": [
             {"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": "two"}]}],
    )  # fmt: skip
    heard = SpeechFeatures(extra_positions=0, stride=1)
    plain = ManifestDataset(
        [manifest], AsrTemplate(layout, text, speech_input=heard), speech_front_end=front
    )
    example = plain.example(0)
    expected = front(load_audio(tmp_path / "a.wav", 16_000), 16_000)
    torch.testing.assert_close(example["speech_features"], expected)
    assert "speech_codes" not in example  # no speech tokenizer needed
    seq = plain[0]
    assert seq.slots is not None and int(seq.slots.sum()) == len(expected)
    chat = ManifestDataset(
        [manifest], ChatTextTemplate(layout, text, speech_input=heard), speech_front_end=front
    )
    torch.testing.assert_close(chat.example(1)["audios"][0], expected)
    assert chat[1].slots is not None
    without = ManifestDataset([manifest], AsrTemplate(layout, text, speech_input=heard))
    with pytest.raises(DataError, match="speech_front_end"):
        without[0]
