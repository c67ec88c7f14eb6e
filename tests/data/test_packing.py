"""Packing: the same loss and gradients as padding, fewer rows, clear errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from omni_blocks.backbones import NativeTransformer
from omni_blocks.backbones.native import position_ids_from_segments
from omni_blocks.data import GreedyPacking, NoPacking, PackedRows
from omni_blocks.module import OmniDiffusionModule
from tiny_data import collate, copy_examples, tiny_layout


def lengths_batch(lengths: list[int], left: bool = False) -> torch.Tensor:
    seq = max(lengths)
    mask = torch.zeros(len(lengths), seq, dtype=torch.bool)
    for row, n in enumerate(lengths):
        if left:
            mask[row, seq - n :] = True
        else:
            mask[row, :n] = True
    return mask


def test_first_fit_decreasing_packs_short_examples_together() -> None:
    mask = lengths_batch([8, 2, 5, 3, 6])
    packed = GreedyPacking().plan(mask)
    assert packed is not None and packed.rows == 3  # 8 | 6 + 2 | 5 + 3
    assert packed.segment_ids.shape == (3, 8)
    # every real token appears once, padding never
    taken = packed.source[packed.source >= 0].sort().values
    assert torch.equal(taken, mask.flatten().nonzero().flatten())
    assert packed.segment_ids.max() == 2
    assert GreedyPacking().plan(lengths_batch([4, 4, 4])) is None  # nothing to gain
    assert NoPacking().plan(mask) is None


def test_pack_and_unpack_are_inverse_on_real_tokens() -> None:
    mask = lengths_batch([5, 2, 3, 1], left=True)
    ids = torch.arange(mask.numel()).view(mask.shape)
    packed = GreedyPacking().plan(mask)
    assert isinstance(packed, PackedRows)
    back = packed.unpack(packed.pack(ids, pad_id=-1).unsqueeze(-1).float()).squeeze(-1)
    assert torch.equal(back[mask], ids[mask].float())
    assert bool((back[~mask] == 0).all())


def test_positions_restart_with_every_example() -> None:
    segments = torch.tensor([[1, 1, 1, 2, 2, 3, 0, 0]])
    assert position_ids_from_segments(segments).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]


def test_a_packed_example_gets_the_logits_it_gets_alone() -> None:
    torch.manual_seed(0)
    net = NativeTransformer(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, shift_logits=True,
    ).eval()  # fmt: skip
    a, b = torch.randint(0, 50, (1, 6)), torch.randint(0, 50, (1, 3))
    row = torch.cat([a, b, torch.zeros(1, 2, dtype=torch.long)], dim=1)
    segments = torch.tensor([[1] * 6 + [2] * 3 + [0, 0]])
    out = net(row, segment_ids=segments)
    torch.testing.assert_close(out[:, :6], net(a))
    torch.testing.assert_close(out[:, 6:9], net(b))


def module(packing: Any) -> OmniDiffusionModule:
    layout = tiny_layout()
    torch.manual_seed(0)
    backbone = NativeTransformer(
        vocab_size=layout.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, shift_logits=True,
    )  # fmt: skip
    return OmniDiffusionModule(backbone, layout, packing=packing, seed=3)


def test_packed_training_gives_the_padded_loss_and_gradients() -> None:
    layout = tiny_layout()
    rows = copy_examples(layout, 8, max_prompt=9, seed=4)
    rows[0]["ids"] = torch.cat([rows[0]["ids"], rows[0]["ids"]])  # one long example
    rows[0]["target_mask"] = torch.cat([rows[0]["target_mask"], rows[0]["target_mask"]])
    batch = collate(rows, layout)
    results = []
    for packing in (NoPacking(), GreedyPacking()):
        m = module(packing)
        out = m.step(batch, torch.Generator().manual_seed(0))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), grads))
    plan = GreedyPacking().plan(batch["attention_mask"])
    assert plan is not None and plan.rows < len(rows)  # it did pack
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6)


def test_packing_needs_a_backbone_with_segment_ids() -> None:
    layout = tiny_layout()

    class Plain(torch.nn.Module):
        vocab_size = layout.vocab_size

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Embedding(layout.vocab_size, layout.vocab_size)

        def forward(self, ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
            return self.head(ids)

    m = OmniDiffusionModule(Plain(), layout, packing=GreedyPacking())
    batch = collate(copy_examples(layout, 4, max_prompt=9, seed=1), layout)
    for row in (0, 1):  # two short examples: they share a row
        batch["attention_mask"][row, 3:] = False
        batch["target_mask"][row, 3:] = False
        batch["target_mask"][row, 2] = True
    with pytest.raises(TypeError, match="segment_ids"):
        m.step(batch, torch.Generator().manual_seed(0))
