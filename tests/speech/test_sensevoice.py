"""SenseVoiceSmall's front end and encoder against Omni-Diffusion's code (FunASR's front end,
its SenseVoiceSmall copy) on a tiny random model of the real layout: golden numbers in
`tests/fixtures/sensevoice/` (see its `make_fixture.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omni_blocks.speech import SenseVoiceEncoder, SenseVoiceFrontEnd
from omni_blocks.speech.sensevoice import apply_lfr, read_cmvn

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sensevoice"


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "sensevoice.safetensors"))


def test_the_front_end_gives_funasrs_features(golden: dict[str, torch.Tensor]) -> None:
    front = SenseVoiceFrontEnd(FIXTURE / "am.mvn")
    for i, length in enumerate(golden["feature_lengths"].tolist()):
        ours = front(golden[f"waveform.{i}"])
        assert ours.shape == (length, 560)
        torch.testing.assert_close(ours, golden["features"][i, :length], rtol=1e-4, atol=1e-3)


def test_the_encoder_gives_upstreams_outputs(golden: dict[str, torch.Tensor]) -> None:
    weights = {k.removeprefix("weights."): v for k, v in golden.items() if k.startswith("weights.")}
    encoder = SenseVoiceEncoder.from_state_dict(weights, attention_heads=2).eval()
    assert encoder.output_size == 16 and encoder.feature_size == 560
    features, lengths = golden["features"], golden["feature_lengths"]
    with torch.no_grad():
        out, out_lengths = encoder(features, lengths)
    assert out_lengths.tolist() == golden["output_lengths"].tolist()
    assert [encoder.slot_length(n) for n in lengths.tolist()] == out_lengths.tolist()
    for row, n in enumerate(out_lengths.tolist()):
        torch.testing.assert_close(out[row, :n], golden["outputs"][row, :n], rtol=1e-4, atol=1e-4)


def test_lfr_and_cmvn_helpers() -> None:
    frames = torch.arange(10.0)[:, None].expand(10, 2)
    stacked = apply_lfr(frames, 3, 2)
    assert stacked.shape == (5, 6)
    assert stacked[0].tolist() == [0, 0, 0, 0, 1, 1]  # the first frame repeated once in front
    assert stacked[-1].tolist() == [7, 7, 8, 8, 9, 9]
    stats = read_cmvn(FIXTURE / "am.mvn")
    assert stats.shape == (2, 560)


def test_bad_input_is_named(tmp_path: Path) -> None:
    front = SenseVoiceFrontEnd()
    with pytest.raises(ValueError, match="sample rate"):
        front(torch.zeros(800), sample_rate=8_000)
    with pytest.raises(ValueError, match="one mono waveform"):
        front(torch.zeros(2, 800))
    with pytest.raises(ValueError, match="CMVN"):
        SenseVoiceFrontEnd(stats=torch.zeros(2, 80))
    (tmp_path / "bad.mvn").write_text("<Nnet>\n</Nnet>\n")
    with pytest.raises(ValueError, match=r"am\.mvn"):
        read_cmvn(tmp_path / "bad.mvn")
    encoder = SenseVoiceEncoder(16, 8, 2, 8, 2, 1, 3)
    with pytest.raises(ValueError, match="frames of 16 features"):
        encoder(torch.zeros(1, 5, 12), torch.tensor([5]))
    with pytest.raises(ValueError, match="language"):
        SenseVoiceEncoder(language="xx")


def test_pretrained_sensevoice_reads_a_folder_and_refuses_a_pickle_by_default(
    golden: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from omni_blocks.config import block_config
    from omni_blocks.speech import PretrainedSenseVoice

    weights = {k.removeprefix("weights."): v for k, v in golden.items() if k.startswith("weights.")}
    (tmp_path / "st").mkdir()
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "st" / "model.safetensors")
    )
    encoder = PretrainedSenseVoice(str(tmp_path / "st"), attention_heads=2).eval()
    reference = SenseVoiceEncoder.from_state_dict(weights, attention_heads=2).eval()
    features, lengths = golden["features"], golden["feature_lengths"]
    with torch.no_grad():
        torch.testing.assert_close(encoder(features, lengths)[0], reference(features, lengths)[0])
    # saved with a module it is recorded by its shape, never by the path it came from
    assert block_config(encoder)["class_path"] == "omni_blocks.speech.SenseVoiceEncoder"
    (tmp_path / "pt").mkdir()
    torch.save(weights, tmp_path / "pt" / "model.pt")
    with pytest.raises(FileNotFoundError, match="allow_pickle"):
        PretrainedSenseVoice(str(tmp_path / "pt"), attention_heads=2)
    pickled = PretrainedSenseVoice(str(tmp_path / "pt"), attention_heads=2, allow_pickle=True)
    for a, b in zip(pickled.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
