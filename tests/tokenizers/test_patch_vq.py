"""PatchVQTokenizer on the real digits: held-out reconstruction, round trip, files, errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits

from omni_blocks.tokenizers import ImageTokenizer, PatchVQTokenizer
from omni_blocks.tokenizers.patch_vq import PatchVQFitReport
from omni_blocks.vocab import Modality


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): the 1,797 8x8 digits scaled from 0..16 to [0, 1]; 300 held out."""
    images = torch.tensor(load_digits().images / 16.0, dtype=torch.float32)[:, None]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[300:]], images[order[:300]]


@pytest.fixture(scope="module")
def fitted(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[PatchVQTokenizer, PatchVQFitReport]:
    tokenizer = PatchVQTokenizer()  # 2x2 patches, 64 codes: 16 tokens per digit
    report = tokenizer.fit(digits[0])
    return tokenizer, report


def test_held_out_reconstruction_is_good(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
) -> None:
    train, held_out = digits
    tokenizer, report = fitted
    assert report.converged and report.iterations <= 100
    history = report.mse_history
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(history))  # Lloyd
    held_out_mse = tokenizer.reconstruction_error(held_out)
    # predicting every held-out digit by the mean training digit
    baseline = float(((train.mean(0, keepdim=True) - held_out) ** 2).mean())
    print(
        f"held-out MSE {held_out_mse:.4f} (train {report.train_mse:.4f}, mean-digit {baseline:.4f})"
    )
    assert held_out_mse < 0.01  # measured 0.0055: RMSE 0.074, about 1.2 of the 16 grey levels
    assert held_out_mse < 0.15 * baseline
    assert held_out_mse < 1.5 * report.train_mse  # no overfitting to the training digits


def test_round_trip_gives_identical_codes(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
) -> None:
    tokenizer = fitted[0]
    codes = tokenizer.encode(digits[1])
    assert codes.shape == (300, 16) and codes.dtype == torch.long
    assert torch.equal(tokenizer.encode(tokenizer.decode(codes)), codes)
    assert len(codes.unique()) > 32  # the codebook is used, not collapsed


@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 5))
def test_any_code_grid_survives_a_round_trip(
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport], seed: int, batch: int
) -> None:
    tokenizer = fitted[0]
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, tokenizer.codebook_size, (batch, 16), generator=gen)
    images = tokenizer.decode(codes)
    assert images.shape == (batch, 1, 8, 8)
    assert torch.equal(tokenizer.encode(images), codes)


def test_encode_is_deterministic_and_batch_independent(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
) -> None:
    tokenizer, held_out = fitted[0], digits[1][:20]
    codes = tokenizer.encode(held_out)
    assert torch.equal(codes, tokenizer.encode(held_out))
    singles = torch.cat([tokenizer.encode(image[None]) for image in held_out])
    assert torch.equal(codes, singles)
    as_bytes = (held_out * 255).round().to(torch.uint8)
    assert torch.equal(tokenizer.encode(as_bytes), tokenizer.encode(as_bytes.float() / 255))


def test_fit_is_reproducible_and_codes_are_sorted_by_brightness(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
) -> None:
    tokenizer = fitted[0]
    again = PatchVQTokenizer()
    again.fit(digits[0], progress=True)
    assert torch.equal(again.codebook, tokenizer.codebook)
    brightness = tokenizer.codebook.sum(dim=1)
    assert torch.all(brightness[1:] >= brightness[:-1])
    assert tokenizer.encode(torch.zeros(1, 1, 8, 8)).eq(0).all()  # blank background: code 0
    assert len(torch.unique(tokenizer.codebook, dim=0)) == 64


def test_protocol_and_shapes(fitted: tuple[PatchVQTokenizer, PatchVQFitReport]) -> None:
    tokenizer = fitted[0]
    assert isinstance(tokenizer, ImageTokenizer)
    assert tokenizer.modality is Modality.IMAGE
    assert (tokenizer.image_size, tokenizer.channels, tokenizer.grid_size) == (8, 1, 4)
    assert (tokenizer.codebook_size, tokenizer.tokens_per_item) == (64, 16)
    coarse = PatchVQTokenizer(patch_size=4, codebook_size=256)
    assert (coarse.grid_size, coarse.tokens_per_item) == (2, 4)


def test_save_load_and_state_dict(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
    tmp_path: Path,
) -> None:
    tokenizer, held_out = fitted[0], digits[1]
    folder = tokenizer.save(tmp_path / "digits_vq")
    assert json.loads((folder / "config.json").read_text())["codebook_size"] == 64
    loaded = PatchVQTokenizer.load(folder)
    assert torch.equal(loaded.encode(held_out), tokenizer.encode(held_out))
    fresh = PatchVQTokenizer()
    assert not fresh.is_fitted
    fresh.load_state_dict(tokenizer.state_dict())  # what a Lightning checkpoint carries
    assert fresh.is_fitted and torch.equal(fresh.codebook, tokenizer.codebook)
    (folder / "config.json").write_text(json.dumps({"class": "Other"}))
    with pytest.raises(ValueError, match="does not describe a PatchVQTokenizer"):
        PatchVQTokenizer.load(folder)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        PatchVQTokenizer.load(tmp_path / "missing")


def test_errors(
    digits: tuple[torch.Tensor, torch.Tensor],
    fitted: tuple[PatchVQTokenizer, PatchVQFitReport],
    tmp_path: Path,
) -> None:
    tokenizer, images = fitted[0], digits[1][:4]
    with pytest.raises(RuntimeError, match="call fit"):
        PatchVQTokenizer().encode(images)
    with pytest.raises(RuntimeError, match="call fit"):
        PatchVQTokenizer().save(tmp_path / "unfitted")
    with pytest.raises(ValueError, match="1 channel"):
        tokenizer.encode(images.expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="8x8"):
        tokenizer.encode(torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"0\.\.16"):
        tokenizer.encode(images * 16)  # raw load_digits values
    with pytest.raises(TypeError, match="dtype"):
        tokenizer.encode((images * 16).long())
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="outside the codebook"):
        tokenizer.decode(torch.full((1, 16), 64))
    with pytest.raises(ValueError, match=r"\(batch, 16\)"):
        tokenizer.decode(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="must divide"):
        PatchVQTokenizer(patch_size=3)
    with pytest.raises(ValueError, match="distinct"):
        PatchVQTokenizer(codebook_size=64).fit(torch.zeros(10, 1, 8, 8))
    with pytest.raises(ValueError, match="num_iters"):
        PatchVQTokenizer().fit(images, num_iters=0)
