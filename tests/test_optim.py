"""Optimiser and learning-rate schedule blocks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omni_blocks.backbones import NativeTransformer
from omni_blocks.optim import AdamWConfig, ConstantLR, WarmupCosine, WarmupLinear, decay_groups


def test_warmup_cosine_matches_the_formula() -> None:
    s = WarmupCosine(warmup_steps=10, min_lr_ratio=0.2)
    assert [s.factor(i, 110) for i in (0, 5, 10)] == [0.0, 0.5, 1.0]
    mid = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert s.factor(60, 110) == pytest.approx(mid)
    assert s.factor(110, 110) == pytest.approx(0.2)
    assert s.factor(500, 110) == pytest.approx(0.2)  # stays at the floor past the end
    # a fixed total_steps wins over the Trainer's estimate
    assert WarmupCosine(total_steps=100).factor(100, 7) == pytest.approx(0.0)


def test_warmup_ratio_and_linear_decay() -> None:
    s = WarmupLinear(warmup_ratio=0.1)
    assert s.factor(5, 100) == pytest.approx(0.5)
    assert s.factor(55, 100) == pytest.approx(0.5)
    assert s.factor(100, 100) == pytest.approx(0.0)
    assert ConstantLR(warmup_steps=4).factor(2, 10) == 0.5
    assert ConstantLR().factor(0, 0) == 1.0


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: WarmupCosine(warmup_steps=-1), "warmup_steps"),
        (lambda: WarmupCosine(warmup_steps=3, warmup_ratio=0.1), "not both"),
        (lambda: WarmupLinear(min_lr_ratio=1.5), "min_lr_ratio"),
        (lambda: WarmupCosine(total_steps=0), "total_steps"),
        (lambda: AdamWConfig(lr=0.0), "lr"),
        (lambda: AdamWConfig(betas=(0.9, 1.0)), "betas"),
        (lambda: AdamWConfig(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_bad_values_are_named(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_biases_and_norms_are_not_decayed() -> None:
    net = NativeTransformer(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=True,
    )
    net.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    decay, plain = decay_groups(net, 0.1)
    names = {id(p): n for n, p in net.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}  # type: ignore[attr-defined]
    undecayed = {names[id(p)] for p in plain["params"]}  # type: ignore[attr-defined]
    assert all(n.endswith("bias") or "norm" in n for n in undecayed)
    assert "model.embed_tokens.weight" in decayed  # tied head appears once
    assert "model.layers.0.mlp.up_proj.weight" not in decayed | undecayed  # frozen
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    grouped = sum(p.numel() for g in (decay, plain) for p in g["params"])  # type: ignore[attr-defined]
    assert grouped == trainable
    optimizer = AdamWConfig(lr=1e-3, weight_decay=0.1).build(net)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_nothing_to_train_is_an_error() -> None:
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        AdamWConfig().build(frozen)
    assert isinstance(AdamWConfig().build(nn.Linear(2, 2)), torch.optim.AdamW)
