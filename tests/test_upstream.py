"""omni_blocks against the official code, token for token (golden fixtures).

`tests/fixtures/upstream/make_fixtures.py` ran Dream's and Omni-Diffusion's own code on tiny
seeded models and stored what it returned; these tests rebuild the same models from the
seed (`tests/fixtures/upstream/tiny.py`) and require omni_blocks to return exactly the same
ids, masks and losses. See `tests/fixtures/upstream/README.md` to make the fixtures again.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fixtures.upstream.tiny import TINY_CONFIG, tiny_state
from omni_blocks import Modality, VocabLayout
from omni_blocks.backbones import NativeTransformer
from omni_blocks.data import TaskSequence, collate_sequences
from omni_blocks.loss import masked_diffusion_loss
from omni_blocks.masking import Corruption, PerTokenTimeMasking
from omni_blocks.sampling import dream_sampler, omni_diffusion_sampler
from omni_blocks.schedules import LinearSchedule

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


@functools.cache
def tiny_dream(seed: int = 0) -> NativeTransformer:
    """The fixtures' tiny Dream as a NativeTransformer (Dream's shifted prediction)."""
    config = {k: v for k, v in TINY_CONFIG.items() if not k.endswith("token_id")}
    model = NativeTransformer(**config, shift_logits=True)
    model.load_state_dict(tiny_state(TINY_CONFIG, seed))
    return model.eval()


LAYOUT = VocabLayout.omni_diffusion()
SAMPLER_CASES = fixture("sampler.json")["cases"]


# ---------------------------------------------------------------------------------- vocabulary


def test_released_layout_is_upstreams_id_for_id() -> None:
    vocab = fixture("vocabulary.json")
    released = vocab["released_config"]
    assert LAYOUT.text_size == vocab["text_tokens"]
    for marker, index in vocab["markers"].items():
        assert LAYOUT.token_id(marker) == index
    assert LAYOUT.begin_id(Modality.IMAGE) == vocab["markers"]["<|begin_of_image|>"]
    assert LAYOUT.end_id(Modality.IMAGE) == vocab["markers"]["<|end_of_image|>"]
    assert LAYOUT.begin_id(Modality.SPEECH) == vocab["markers"]["<|begin_of_audio|>"]
    assert LAYOUT.end_id(Modality.SPEECH) == vocab["markers"]["<|end_of_audio|>"]
    speech, image = LAYOUT.id_range(Modality.SPEECH), LAYOUT.id_range(Modality.IMAGE)
    assert (speech.start, speech.stop - 1) == (vocab["speech_code_0"], vocab["speech_code_last"])
    assert (image.start, image.stop - 1) == (vocab["image_code_0"], vocab["image_code_last"])
    assert LAYOUT.vocab_size == vocab["len_tokenizer"] == released["vocab_size"]
    assert LAYOUT.mask_id == released["mask_token_id"]
    assert LAYOUT.pad_id == released["pad_token_id"] == LAYOUT.eos_id == released["eos_token_id"]


# ---------------------------------------------------------------------------------- samplers


def _sampler(case: dict[str, Any]) -> Any:
    settings, effective = case["settings"], case["effective"]
    assert effective["eps"] == 1e-3
    if case["name"].startswith("dream"):
        return dream_sampler(
            settings["steps"],
            alg=settings["alg"],
            temperature=effective["temperature"],
            top_p=effective["top_p"],
            top_k=effective["top_k"],
        )
    return omni_diffusion_sampler(
        settings["steps"],
        alg=settings["alg"],
        top_p=effective["top_p"],
        top_k=effective["top_k"],
        position_penalty=settings.get("max_position_penalty", 1.0),
        guidance_scale=settings.get("cfg", 0.0),
        unconditional_ids=case.get("unconditional_ids"),
    )


def _batch(prompts: list[list[int]], new: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-padded prompts followed by `new` masks, and the attention mask (None if unpadded)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width + new), LAYOUT.pad_id)
    attention = torch.zeros(ids.shape, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        start = width - len(prompt)
        ids[row, start:width] = torch.tensor(prompt)
        ids[row, width:] = LAYOUT.mask_id
        attention[row, start:] = True
    return ids, None if bool(attention.all()) else attention


@pytest.mark.parametrize("case", SAMPLER_CASES, ids=[c["name"] for c in SAMPLER_CASES])
def test_sampler_matches_upstream_token_for_token(case: dict[str, Any]) -> None:
    new = case["settings"]["max_new_tokens"]
    ids, attention = _batch(case["prompts"], new)
    generator = torch.Generator().manual_seed(case.get("torch_seed", 0))
    out = _sampler(case)(
        tiny_dream(), ids, layout=LAYOUT, attention_mask=attention, generator=generator
    )
    for row, (prompt, expected) in enumerate(zip(case["prompts"], case["output"], strict=True)):
        ours = out.ids[row, ids.shape[1] - new - len(prompt) :].tolist()
        same = sum(a == b for a, b in zip(ours, expected, strict=True))
        assert ours == expected, f"row {row}: {same} of {len(expected)} ids agree"


# ---------------------------------------------------------------------------------- training

TRAINING = fixture("training.json")["rows"]


def _clean_row(row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean ids, target region, upstream's masked positions) of a fixture row."""
    noisy, labels = torch.tensor(row["input_ids"]), torch.tensor(row["labels"])
    masked = labels != -100
    clean = torch.where(masked, labels, noisy)
    target = torch.tensor(row["targets"]) != -100
    return clean, target, masked


@pytest.mark.parametrize("k", range(len(TRAINING)))
def test_per_token_masking_is_upstreams_draw_for_draw(k: int) -> None:
    row = TRAINING[k]
    clean, target, masked = _clean_row(row)
    assert row["forward_process_kwargs"] == {"special_mask_ratio": 0.6, "special_token_id": 151643}
    strategy = PerTokenTimeMasking(pad_mask_ratio=0.6, eps=1e-3)
    generator = torch.Generator().manual_seed(row["torch_seed"])
    t = torch.full((1,), 0.5)
    out = strategy(
        clean[None], target[None], t, schedule=LinearSchedule(), layout=LAYOUT, generator=generator
    )
    assert torch.equal(out.mask[0], masked)
    assert torch.equal(out.noisy_ids[0], torch.tensor(row["input_ids"]))


def test_eos_targets_are_appended_only_without_an_eos() -> None:
    for row in TRAINING:
        clean, target, _ = _clean_row(row)
        ids = clean.tolist()
        appended = 0
        while ids[-1 - appended] == LAYOUT.eos_id and target[-1 - appended]:
            appended += 1
        if any(i == LAYOUT.eos_id for i in ids[: len(ids) - appended]):
            appended = 0  # the response held its own eos: upstream added none
        base = TaskSequence(
            clean[: len(ids) - appended], target[: len(ids) - appended], "chat", Modality.TEXT
        )
        # upstream draws the count in 1..16; with the count fixed, the rule decides
        count = appended or 5
        batch = collate_sequences(
            [base], LAYOUT, extra_tail_pad=(count, count), tail_pads_if_no_eos=True
        )
        assert batch["input_ids"][0].tolist() == ids
        assert torch.equal(batch["target_mask"][0], target)


def test_loss_on_the_masked_batch_is_upstreams() -> None:
    rows = [_clean_row(row) for row in TRAINING]
    seqs = [TaskSequence(clean, target, "chat", Modality.TEXT) for clean, target, _ in rows]
    batch = collate_sequences(seqs, LAYOUT, pad_targets=False)
    width = batch["input_ids"].shape[1]
    mask = torch.zeros_like(batch["target_mask"])
    for r, (_, _, masked) in enumerate(rows):
        mask[r, : len(masked)] = masked
    noisy = torch.where(mask, LAYOUT.mask_id, batch["input_ids"])
    with torch.no_grad():
        logits = tiny_dream()(noisy, batch["attention_mask"])
    loss = masked_diffusion_loss(
        logits, batch["input_ids"], Corruption(noisy, mask), normalization="token"
    )
    expected = sum(r["loss"] * r["masked"] for r in TRAINING) / sum(r["masked"] for r in TRAINING)
    assert width == max(len(r["input_ids"]) for r in TRAINING)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
