from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from omni_blocks.vocab import (
    MODALITY_CODES,
    SPECIAL_CODE,
    Modality,
    SpecialToken,
    VocabError,
    VocabLayout,
)

layouts = st.builds(
    VocabLayout,
    text_size=st.integers(1, 5000),
    speech_size=st.integers(0, 3000),
    image_size=st.integers(0, 3000),
)


def test_paper_layout_sizes() -> None:
    # the ids themselves are checked against upstream's tokenizer in tests/test_upstream.py
    layout = VocabLayout.omni_diffusion()
    assert layout.size(Modality.SPEECH) == 16_384
    assert layout.size(Modality.IMAGE) == 8_192
    assert layout.size(Modality.TEXT) == 151_667
    assert layout.mask_id == 151_666
    assert layout.pad_id == layout.eos_id == 151_643
    # 21 markers after the text ids, then the codebooks; nothing appended after them
    assert layout.id_range(Modality.SPEECH) == range(151_688, 151_688 + 16_384)
    assert layout.id_range(Modality.IMAGE).stop == 151_688 + 16_384 + 8_192
    assert layout.vocab_size == 151_667 + 21 + 16_384 + 8_192


def test_added_markers_sit_between_text_and_codes() -> None:
    layout = VocabLayout(
        text_size=10, speech_size=4, image_size=3, added_tokens=("<a>", "<b>"),
        special_ids={"mask": 9, "begin_image": 10, "end_image": 11},
    )  # fmt: skip
    assert layout.token_id("<b>") == 11 and layout.offset(Modality.SPEECH) == 12
    assert layout.begin_id(Modality.IMAGE) == 10
    assert bool(layout.is_special(torch.tensor([10, 11])).all())
    assert layout.modality_of(torch.tensor([10])).item() == -1
    assert VocabLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(VocabError, match="not an added marker"):
        layout.token_id("<c>")
    with pytest.raises(VocabError, match="repeats"):
        VocabLayout(text_size=10, added_tokens=("<a>", "<a>"))


@given(layouts, st.data())
def test_local_global_round_trip(layout: VocabLayout, data: st.DataObject) -> None:
    for modality in layout.modalities:
        n = layout.size(modality)
        codes = torch.tensor(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)))
        ids = layout.to_global(codes, modality)
        assert torch.equal(layout.to_local(ids, modality), codes)
        assert bool((ids >= layout.offset(modality)).all())


@given(layouts)
def test_ranges_and_specials_never_overlap(layout: VocabLayout) -> None:
    owner = torch.full((layout.vocab_size,), -99)
    for modality in layout.modalities:
        r = layout.id_range(modality)
        assert bool((owner[r.start : r.stop] == -99).all())
        owner[r.start : r.stop] = MODALITY_CODES[modality]
    appended = [i for i in layout.special_id_list() if i >= layout.text_size]
    assert bool((owner[appended] == -99).all())
    assert len(set(layout.special_tokens.values())) == len(SpecialToken)
    ids = torch.arange(layout.vocab_size)
    codes = layout.modality_of(ids)
    assert bool((codes[layout.special_id_list()] == SPECIAL_CODE).all())
    for modality in layout.modalities:
        assert bool(layout.is_modality(ids[list(layout.id_range(modality))], modality).all())


@given(layouts, st.sampled_from(list(Modality)), st.integers(1, 100))
def test_out_of_range_code_names_id_and_range(
    layout: VocabLayout, modality: Modality, excess: int
) -> None:
    n = layout.size(modality)
    bad = n - 1 + excess
    with pytest.raises(VocabError) as err:
        layout.to_global(torch.tensor([0, bad]) if n else torch.tensor([bad]), modality)
    assert str(bad) in str(err.value)
    assert f"[0, {n})" in str(err.value)


def test_wrong_modality_id_raises() -> None:
    layout = VocabLayout(text_size=10, speech_size=5, image_size=7)
    image_id = layout.to_global(torch.tensor([3]), Modality.IMAGE)
    with pytest.raises(VocabError, match=r"speech id 18 is out of range \[10, 15\)"):
        layout.to_local(image_id, Modality.SPEECH)
    with pytest.raises(VocabError, match="id -1"):
        layout.modality_of(torch.tensor([-1]))
    # Without the test-suite's type-check hook the layout's own check answers.
    with pytest.raises((VocabError, TypeError)):
        layout.to_global(torch.tensor([1.0]), Modality.TEXT)
    with pytest.raises(VocabError, match="integer tensor"):
        layout._check_range(torch.tensor([1.0]), 0, 3, "text code")


def test_special_ids_validation() -> None:
    with pytest.raises(VocabError, match="share id"):
        VocabLayout(text_size=10, special_ids={"mask": 3, "bos": 3})
    with pytest.raises(VocabError, match="text range"):
        VocabLayout(text_size=10, special_ids={"mask": 10})
    with pytest.raises(VocabError, match="unknown special token"):
        VocabLayout(text_size=10, special_ids={"cls": 1})
    with pytest.raises(VocabError, match="sizes"):
        VocabLayout(text_size=0)


def test_logit_mask_restricts_to_modality() -> None:
    layout = VocabLayout(text_size=10, speech_size=5, image_size=7, special_ids={"mask": 9})
    allowed = layout.logit_mask(Modality.IMAGE, vocab_size=layout.vocab_size + 3)
    expected = set(layout.id_range(Modality.IMAGE)) | {layout.end_id(Modality.IMAGE), layout.pad_id}
    assert set(torch.nonzero(allowed).flatten().tolist()) == expected
    text = layout.logit_mask(Modality.TEXT, allow_end=False)
    assert not bool(text[layout.mask_id])
    assert set(torch.nonzero(text).flatten().tolist()) == set(range(9))
    with pytest.raises(VocabError, match="smaller"):
        layout.logit_mask(Modality.TEXT, vocab_size=3)
    with pytest.raises(VocabError, match="no speech codebook"):
        VocabLayout(text_size=4, speech_size=0).logit_mask(Modality.SPEECH)


def test_begin_end_tokens() -> None:
    layout = VocabLayout(text_size=10, speech_size=5, image_size=7)
    assert layout.begin_id(Modality.IMAGE) == layout.special("begin_image")
    assert layout.end_id(Modality.SPEECH) == layout.special(SpecialToken.END_SPEECH)
    assert layout.end_id(Modality.TEXT) == layout.eos_id
    with pytest.raises(VocabError, match="text has no"):
        layout.begin_id(Modality.TEXT)


@given(layouts)
def test_serialisation_round_trip(layout: VocabLayout) -> None:
    again = VocabLayout.from_json(layout.to_json())
    assert again == layout
    assert again.special_tokens == layout.special_tokens
    assert json.loads(layout.to_json())["text_size"] == layout.text_size


def test_json_file_round_trip(tmp_path) -> None:
    layout = VocabLayout.omni_diffusion()
    path = tmp_path / "layout.json"
    layout.to_json(path)
    assert VocabLayout.from_json(path) == layout
    with pytest.raises(VocabError, match="unknown VocabLayout fields"):
        VocabLayout.from_dict({"text_size": 3, "colour": 1})
