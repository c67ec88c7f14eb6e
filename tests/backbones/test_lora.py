"""LoRA by configuration: only the adapters and the new vocabulary rows train; merging and
saving work."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from omni_blocks.backbones import LoraBackbone, NativeTransformer
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig
from tiny_data import CopyDataModule


def base(vocab: int) -> NativeTransformer:
    torch.manual_seed(0)
    return NativeTransformer(vocab, 32, 64, 2, 4, num_key_value_heads=2)


def test_only_adapters_and_new_rows_train(tmp_path: Path) -> None:
    data = CopyDataModule(batch_size=4)
    vocab = data.layout.vocab_size
    old = 40  # the "pretrained" vocabulary: rows from 40 on are the new tokens
    backbone = base(vocab)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    lora = LoraBackbone(backbone, r=2, alpha=4.0, dropout=0.0, new_rows_from=old)
    counts = lora.trainable_parameters()
    assert 0 < counts["trainable"] < counts["total"] / 2
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names)

    module = OmniDiffusionModule(lora, data.layout, optimizer=AdamWConfig(lr=1e-2))
    L.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    ).fit(module, data)  # fmt: skip

    merged = lora.merged()
    after = merged.state_dict()
    # merged: old rows of the embedding and head unchanged, new rows trained
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(after[key][:old], before[key][:old]), key
        assert not torch.equal(after[key][old:], before[key][old:]), key
    # the projections moved by the adapters; norms did not
    assert not torch.equal(
        after["model.layers.0.self_attn.q_proj.weight"],
        before["model.layers.0.self_attn.q_proj.weight"],
    )
    assert torch.equal(after["model.norm.weight"], before["model.norm.weight"])
    # the merged backbone computes what the adapted one does
    ids = torch.randint(0, vocab, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(ids), lora.eval()(ids), rtol=1e-4, atol=1e-5)


def test_saved_and_loaded_with_the_module(tmp_path: Path) -> None:
    data = CopyDataModule(batch_size=4)
    lora = LoraBackbone(base(data.layout.vocab_size), r=2, new_rows_from=40)
    module = OmniDiffusionModule(lora, data.layout)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.add_(0.1)  # a non-zero update
    module.save_pretrained(tmp_path / "saved")
    loaded = OmniDiffusionModule.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded.backbone, LoraBackbone)
    ids = torch.randint(0, data.layout.vocab_size, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone.eval()(ids), lora.eval()(ids))


def test_bad_lora_arguments() -> None:
    with pytest.raises(ValueError, match="r must"):
        LoraBackbone(base(50), r=0)
    with pytest.raises(ValueError, match="new_rows_from"):
        LoraBackbone(base(50), new_rows_from=50)
    with pytest.raises(RuntimeError, match="before wrapping"):
        LoraBackbone(base(50)).resize_vocab(60)
