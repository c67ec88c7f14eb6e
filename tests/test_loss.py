from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from omni_blocks.loss import masked_diffusion_loss, masked_token_nll
from omni_blocks.masking import Corruption, UniformMasking
from omni_blocks.schedules import (
    AntitheticTime,
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    LogLinearSchedule,
    MaskGITPowerSchedule,
    NoiseSchedule,
    PolynomialSchedule,
)
from omni_blocks.vocab import VocabLayout

MASK_ID = 3


def small_case() -> tuple[torch.Tensor, torch.Tensor, Corruption]:
    """Two rows, vocabulary of 4 (id 3 is [MASK]); hand-computable log-probabilities."""
    ln2 = math.log(2.0)
    logits = torch.tensor(
        [
            # row 0: masked at 0 and 1, position 2 unmasked (garbage logits)
            [[0.0, 0.0, 0.0, 0.0], [ln2, 0.0, 0.0, 0.0], [50.0, -50.0, 9.0, 1.0]],
            # row 1: masked at 2 only
            [[7.0, 7.0, 7.0, 7.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, ln2 + math.log(3), 0.0]],
        ]
    )
    targets = torch.tensor([[1, 0, 2], [0, 1, 2]])
    mask = torch.tensor([[True, True, False], [False, False, True]])
    noisy = torch.where(mask, torch.full_like(targets, MASK_ID), targets)
    return logits, targets, Corruption(noisy, mask)


# -log p by hand: row 0 pos 0: uniform over 4 -> log 4; pos 1: p(0) = 2 / (2 + 3) -> log 2.5;
# row 1 pos 2: p(2) = 6 / (6 + 3) -> log 1.5
NLL = {(0, 0): math.log(4), (0, 1): math.log(2.5), (1, 2): math.log(1.5)}


def test_token_nll_by_hand() -> None:
    logits, targets, corruption = small_case()
    nll = masked_token_nll(logits, targets, corruption.mask)
    expected = torch.zeros(2, 3)
    for (b, i), value in NLL.items():
        expected[b, i] = value
    torch.testing.assert_close(nll, expected)


def test_normalisations_by_hand() -> None:
    logits, targets, c = small_case()
    a, b, d = NLL[(0, 0)], NLL[(0, 1)], NLL[(1, 2)]
    token = masked_diffusion_loss(logits, targets, c, normalization="token")
    assert float(token) == pytest.approx((a + b + d) / 3, rel=1e-6)
    seq = masked_diffusion_loss(logits, targets, c, normalization="sequence")
    assert float(seq) == pytest.approx(((a + b) / 2 + d) / 2, rel=1e-6)
    # linear schedule: w(t) = 1 / t; N = 6 positions
    t = torch.tensor([0.5, 0.25])
    elbo = masked_diffusion_loss(
        logits, targets, c, normalization="elbo", t=t, schedule=LinearSchedule()
    )
    assert float(elbo) == pytest.approx((2 * (a + b) + 4 * d) / 6, rel=1e-6)
    target_mask = torch.tensor([[True, True, True], [False, True, True]])
    elbo5 = masked_diffusion_loss(
        logits,
        targets,
        c,
        normalization="elbo",
        t=t,
        schedule=LinearSchedule(),
        target_mask=target_mask,
    )
    assert float(elbo5) == pytest.approx((2 * (a + b) + 4 * d) / 5, rel=1e-6)


def test_loss_weight_is_honoured() -> None:
    logits, targets, c = small_case()
    a, d = NLL[(0, 0)], NLL[(1, 2)]
    weighted = Corruption(c.noisy_ids, c.mask, torch.tensor([[1.0, 0.0, 5.0], [9.0, 9.0, 0.5]]))
    token = masked_diffusion_loss(logits, targets, weighted)
    assert float(token) == pytest.approx((a + 0.5 * d) / 1.5, rel=1e-6)
    t = torch.tensor([0.5, 0.5])
    elbo = masked_diffusion_loss(
        logits, targets, weighted, normalization="elbo", t=t, schedule=LinearSchedule()
    )
    assert float(elbo) == pytest.approx(2 * (a + 0.5 * d) / 6, rel=1e-6)


@given(
    st.integers(1, 4),
    st.integers(1, 12),
    st.integers(0, 2**31),
    st.sampled_from(["token", "sequence", "elbo"]),
)
def test_unmasked_positions_are_ignored(batch: int, seq: int, seed: int, norm: str) -> None:
    g = torch.Generator().manual_seed(seed)
    vocab = 7
    logits = torch.randn(batch, seq, vocab, generator=g)
    targets = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.rand(batch, seq, generator=g) < 0.5
    c = Corruption(torch.where(mask, 6, targets), mask)
    t = torch.rand(batch, generator=g).clamp(min=0.01)
    kwargs = {"normalization": norm, "t": t, "schedule": CosineSchedule()}
    base = masked_diffusion_loss(logits, targets, c, **kwargs)  # type: ignore[arg-type]
    noisy_logits = torch.where(mask[..., None], logits, 100 * torch.randn_like(logits))
    other_targets = torch.where(mask, targets, (targets + 1) % vocab)
    again = masked_diffusion_loss(noisy_logits, other_targets, c, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(base, again)
    leaf = logits.clone().requires_grad_(True)
    masked_diffusion_loss(leaf, targets, c, **kwargs).backward()  # type: ignore[arg-type]
    assert leaf.grad is not None
    assert bool((leaf.grad[~mask] == 0).all())


@pytest.mark.parametrize("norm", ["token", "sequence", "elbo"])
def test_nothing_masked_gives_zero_with_a_graph(norm: str) -> None:
    logits = torch.randn(2, 4, 5, requires_grad=True)
    targets = torch.zeros(2, 4, dtype=torch.long)
    c = Corruption(targets.clone(), torch.zeros(2, 4, dtype=torch.bool))
    loss = masked_diffusion_loss(
        logits, targets, c, normalization=norm, t=torch.zeros(2), schedule=LinearSchedule()
    )  # type: ignore[arg-type]
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert logits.grad is not None and bool((logits.grad == 0).all())


@pytest.mark.parametrize(
    "schedule",
    [
        LinearSchedule(),
        CosineSchedule(),
        PolynomialSchedule(2.0),
        MaskGITPowerSchedule(2.0),
        LogLinearSchedule(),
        GeometricSchedule(),
    ],
    ids=repr,
)
def test_elbo_of_a_time_independent_model_is_its_token_nll(schedule: NoiseSchedule) -> None:
    # For a model whose prediction does not depend on x_t, E_t E_{x_t}[ELBO loss] equals its
    # mean token NLL, since int_0^1 w(t) (1 - alpha(t)) dt = alpha(0) - alpha(1) ~ 1.
    # This ties schedule, time sampler, mask strategy and loss together.
    g = torch.Generator().manual_seed(0)
    layout = VocabLayout(text_size=16, speech_size=0, image_size=0)
    batch, seq, vocab = 4096, 32, layout.vocab_size
    targets = torch.randint(0, 16, (batch, seq), generator=g)
    logits = torch.randn(1, seq, vocab, generator=g).expand(batch, seq, vocab)
    target_mask = torch.ones(batch, seq, dtype=torch.bool)
    t = AntitheticTime(eps=1e-4).sample(batch, generator=g)
    c = UniformMasking()(targets, target_mask, t, schedule=schedule, layout=layout, generator=g)
    elbo = masked_diffusion_loss(
        logits, targets, c, normalization="elbo", t=t, schedule=schedule, target_mask=target_mask
    )
    full = masked_token_nll(logits, targets, target_mask).mean()
    assert float(elbo) == pytest.approx(float(full), rel=0.03)


def test_bad_input_raises_clear_errors() -> None:
    logits, targets, c = small_case()
    unchecked = getattr(masked_diffusion_loss, "__wrapped__", masked_diffusion_loss)
    with pytest.raises(ValueError, match="normalization must be one of"):
        unchecked(logits, targets, c, normalization="mean")
    with pytest.raises(ValueError, match="needs the times"):
        unchecked(logits, targets, c, normalization="elbo")
    with pytest.raises(ValueError, match=r"targets has shape \(2, 2\)"):
        unchecked(logits, targets[:, :2], c)
    int_mask = Corruption(c.noisy_ids, c.mask)
    int_mask.mask = c.mask.long()  # attribute writes bypass the run-time check of __init__
    with pytest.raises(TypeError, match=r"corruption\.mask must be a bool tensor"):
        unchecked(logits, targets, int_mask)
    with pytest.raises(ValueError, match=r"target id 9 .* \[0, 4\)"):
        unchecked(logits, torch.where(c.mask, 9, targets), c)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        unchecked(
            logits,
            targets,
            c,
            normalization="elbo",
            t=torch.tensor([0.5, 2.0]),
            schedule=LinearSchedule(),
        )
    with pytest.raises(ValueError, match="loss_weight must be finite"):
        unchecked(logits, targets, Corruption(c.noisy_ids, c.mask, -torch.ones(2, 3)))
    # through the public (run-time type-checked in tests) entry point
    with pytest.raises((TypeError, ValueError)):
        masked_diffusion_loss(logits, targets[:, :2], c)
    with pytest.raises(ValueError):
        masked_diffusion_loss(
            logits,
            targets,
            c,
            normalization="elbo",
            t=torch.tensor([0.5, 2.0]),
            schedule=LinearSchedule(),
        )
