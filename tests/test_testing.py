"""The exact mixture denoiser and trajectory pictures."""

from __future__ import annotations

import io

import pytest
import torch
from matplotlib.figure import Figure

from omni_blocks import VocabLayout
from omni_blocks.sampling import (
    FixedCountPlanner,
    MaskedDiffusionSampler,
    MaxProbScorer,
    RandomScorer,
    SchedulePlanner,
    ThresholdPlanner,
    TokenChoice,
)
from omni_blocks.sampling.trajectory import render_trajectory
from omni_blocks.testing import MixtureDenoiser

LAYOUT = VocabLayout(text_size=6, speech_size=0, image_size=0)
MASK = LAYOUT.mask_id
DATA = torch.tensor([[0, 1, 2, 3], [0, 1, 4, 5], [0, 2, 2, 2], [3, 3, 3, 3]])


def test_mixture_denoiser_is_the_posterior_of_the_data() -> None:
    model = MixtureDenoiser(DATA, mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    probs = model(torch.tensor([[0, MASK, MASK, MASK]])).softmax(-1)[0]
    # three sequences start with 0: position 1 is 1 (two of them) or 2 (one)
    torch.testing.assert_close(probs[1, [1, 2]], torch.tensor([2 / 3, 1 / 3]), atol=1e-6, rtol=0)
    probs = model(torch.tensor([[0, 1, MASK, MASK]])).softmax(-1)[0]
    torch.testing.assert_close(probs[3, [3, 5]], torch.tensor([0.5, 0.5]), atol=1e-6, rtol=0)
    assert model.matches(DATA).all()
    assert not model.matches(torch.tensor([[0, 1, 2, 5]])).any()


def test_one_token_per_step_always_reproduces_a_data_sequence() -> None:
    model = MixtureDenoiser(DATA, mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    ids = torch.full((64, 4), MASK)
    generator = torch.Generator().manual_seed(0)
    for scorer in (MaxProbScorer(), RandomScorer()):
        sampler = MaskedDiffusionSampler(
            planner=FixedCountPlanner(1), scorer=scorer, choice=TokenChoice(1.0)
        )
        out = sampler(model, ids, layout=LAYOUT, generator=generator)
        assert model.matches(out.ids).all()
    # in a random order (ancestral sampling) the draws follow the mixture: all four appear
    assert len({tuple(row) for row in out.ids.tolist()}) == 4


def test_all_at_once_mixes_sequences_and_the_threshold_avoids_it() -> None:
    model = MixtureDenoiser(DATA, mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    ids = torch.full((256, 4), MASK)
    ids[:, 0] = 0
    ids[128:, 0] = 3  # these rows can only be 3 3 3 3
    generator = torch.Generator().manual_seed(0)
    one_step = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=1), choice=TokenChoice(1.0))
    mixed = one_step(model, ids, layout=LAYOUT, generator=generator)
    assert mixed.nfe == 1 and model.matches(mixed.ids[:128]).float().mean() < 0.7
    careful = MaskedDiffusionSampler(planner=ThresholdPlanner(0.9), choice=TokenChoice(1.0))
    out = careful(model, ids, layout=LAYOUT, generator=generator)
    assert model.matches(out.ids).all()
    assert out.trajectory is not None
    # certain rows finish in one step, uncertain ones take one step per branching token
    assert out.trajectory[128:, 1:].eq(0).all()
    assert out.trajectory[:128, 1:].max() == 2


def test_mixture_denoiser_rejects_bad_data() -> None:
    with pytest.raises(ValueError, match="mask_id"):
        MixtureDenoiser(torch.tensor([[1, MASK]]), mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    with pytest.raises(ValueError, match="lie in"):
        MixtureDenoiser(torch.tensor([[1, 99]]), mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    model = MixtureDenoiser(DATA, mask_id=MASK, vocab_size=LAYOUT.vocab_size)
    with pytest.raises(ValueError, match="positions"):
        model(torch.tensor([[0, 1, 2]]))


def test_render_trajectory_draws_a_grid_and_a_labelled_strip() -> None:
    figure = render_trajectory(torch.arange(12), shape=(3, 4), title="order")
    assert isinstance(figure, Figure)
    image = figure.axes[0].images[0].get_array()
    assert image.shape == (3, 4) and image[2, 3] == 11
    strip = render_trajectory(torch.tensor([-1, 0, 2, 1]), labels=["a", "b", "c", "d"])
    texts = [t.get_text() for t in strip.axes[0].texts]
    assert texts == ["a", "b", "c", "d"]
    assert strip.axes[0].images[0].get_array().mask[0, 0]  # never masked: drawn grey
    buffer = io.BytesIO()
    strip.savefig(buffer, format="png")
    assert buffer.getvalue().startswith(b"\x89PNG")


def test_render_trajectory_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="holds 6 cells"):
        render_trajectory(torch.arange(5), shape=(2, 3))
    with pytest.raises(ValueError, match="labels"):
        render_trajectory(torch.arange(3), labels=["a"])
