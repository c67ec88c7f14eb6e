"""Task mixtures, the mixture sampler and `OmniDataModule` (resume, DDP sharding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from omni_blocks import Modality, VocabLayout
from omni_blocks.data import (
    DataError,
    MixtureOrder,
    OmniDataModule,
    SequenceCollator,
    TaskMixture,
    TaskSequence,
    TemplateDataset,
    TtsTemplate,
)
from omni_blocks.tokenizers import TextTokenizer

LAYOUT = VocabLayout(text_size=64, speech_size=16, image_size=16)


def sequences(task: str, n: int, start: int) -> list[TaskSequence]:
    """`n` sequences whose first id identifies them (`start + i`)."""
    out = []
    for i in range(n):
        length = 3 + (start + i) % 5
        ids = torch.full((length,), 7)
        ids[0] = start + i
        target_mask = torch.arange(length) >= 2
        out.append(TaskSequence(ids, target_mask, task, Modality.TEXT))
    return out


def mixture(**kw: Any) -> TaskMixture:
    data = {"a": sequences("a", 10, 0), "b": sequences("b", 3, 20), "c": sequences("c", 30, 30)}
    return TaskMixture(data, **kw)


def test_counts_follow_ratios_exactly() -> None:
    mix = mixture(ratios={"a": 0.5, "b": 0.3, "c": 0.2}, num_samples=1001, seed=1)
    counts = mix.counts()
    assert sum(counts.values()) == 1001
    assert all(abs(counts[n] - r * 1001) < 1 for n, r in mix.ratios.items())
    order = mix.order(epoch=0)
    tasks = [mix[int(i)].task for i in order]
    for name, ratio in mix.ratios.items():
        assert abs(tasks.count(name) / len(tasks) - ratio) < 1e-3
    # a small task cycles through all of its items, a large one is subsampled without repeats
    b = [int(i) for i in order if mix[int(i)].task == "b"]
    assert set(b) == {10, 11, 12} and max(b.count(i) for i in set(b)) == 100
    # interleaved: the first 100 positions already hold every task in about its ratio
    head = tasks[:100]
    assert 35 <= head.count("a") <= 65 and 15 <= head.count("b") <= 45


def test_default_ratios_are_proportional_and_order_is_seeded() -> None:
    mix = mixture(seed=3)
    assert mix.num_samples == 43 and mix.counts() == {"a": 10, "b": 3, "c": 30}
    assert sorted(mix.order(0).tolist()) == list(range(43))  # one pass over every item
    assert torch.equal(mix.order(0), mixture(seed=3).order(0))
    assert not torch.equal(mix.order(0), mix.order(1))
    assert not torch.equal(mix.order(0), mixture(seed=4).order(0))
    assert mix[0].ids[0] == 0 and mix[10].ids[0] == 20 and mix[42].ids[0] == 59
    with pytest.raises(IndexError):
        mix[43]


def test_mixture_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="ratios name tasks"):
        mixture(ratios={"a": 1.0})
    with pytest.raises(ValueError, match="positive and finite"):
        mixture(ratios={"a": 1.0, "b": 0.0, "c": 1.0})
    with pytest.raises(ValueError, match="empty"):
        TaskMixture({"a": []})


def test_sampler_shards_and_resumes() -> None:
    mix = mixture(seed=0)
    order = mix.order(2).tolist()
    ranks = [list(MixtureOrder(mix, rank=r, world_size=3, start_epoch=2)) for r in range(3)]
    assert all(len(r) == 14 for r in ranks)
    assert sorted(i for r in ranks for i in r) == sorted(
        order[:42]
    )  # disjoint, the odd one dropped
    resumed = MixtureOrder(mix, rank=1, world_size=3, start=12, start_epoch=2)
    assert list(resumed) == ranks[1][4:]
    resumed.set_epoch(0)  # ignored: the skip applies to the first iteration only
    assert len(list(resumed)) == 14


def test_template_dataset_checks_eagerly() -> None:
    tok = TextTokenizer.train_bpe(["one two three"] * 5, vocab_size=270)
    layout = VocabLayout(text_size=tok.codebook_size, speech_size=8, image_size=0)
    template = TtsTemplate(layout, tok)
    good = {"text": "one two", "speech_codes": torch.tensor([1, 2])}
    data = TemplateDataset([good, good], template)
    assert len(data) == 2 and data[1].task == "tts"
    bad = [good, {"id": "u9", "text": "three", "speech_codes": torch.tensor([8])}]
    with pytest.raises(DataError, match=r"id='u9' \(index 1\)"):
        TemplateDataset(bad, template)
    lazy = TemplateDataset(bad, template, eager=False)
    assert lazy[0].task == "tts"
    with pytest.raises(DataError, match="index 1"):
        lazy[1]


def test_collator_pads_are_reproducible() -> None:
    seqs = sequences("a", 4, 0)
    collate = SequenceCollator(LAYOUT, extra_tail_pad=(1, 16), seed=5)
    first, again = collate(seqs), collate(list(seqs))
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert first["input_ids"].shape[1] >= max(len(s) for s in seqs) + 1


# ---------------------------------------------------------------------------- Lightning
class Recorder(pl.LightningModule):
    """A tiny model whose loss depends on the batch; records the ids of every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(LAYOUT.vocab_size, 4)
        self.seen: list[list[int]] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        assert batch["input_ids"].shape == batch["target_mask"].shape
        self.seen.append(batch["input_ids"][:, 0].tolist())
        out: torch.Tensor = self.embed(batch["input_ids"])[batch["target_mask"]].pow(2).mean()
        return out

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp: Path, max_steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp,
    )


def test_resume_mid_epoch_sees_the_same_batches(tmp_path: Path) -> None:
    def data() -> OmniDataModule:
        mix = mixture(ratios={"a": 1, "b": 1, "c": 2}, seed=7)
        return OmniDataModule(LAYOUT, mix, batch_size=4, seed=7)

    # 43 samples / 4 -> 11 batches per epoch: 15 steps cross an epoch boundary
    full = Recorder()
    trainer(tmp_path, 15).fit(full, datamodule=data())
    assert len(full.seen) == 15 and full.seen[11] != full.seen[0]  # epoch 1 has its own order
    # a checkpoint saved after max_steps stopped the run mid-epoch
    part = Recorder()
    first = trainer(tmp_path, 6)
    first.fit(part, datamodule=data())
    first.save_checkpoint(tmp_path / "mid.ckpt")
    rest = Recorder()
    trainer(tmp_path, 15).fit(rest, datamodule=data(), ckpt_path=tmp_path / "mid.ckpt")
    assert part.seen + rest.seen == full.seen
    # a ModelCheckpoint checkpoint one batch into the second epoch
    every = ModelCheckpoint(dirpath=tmp_path / "cb", every_n_train_steps=12, save_top_k=-1)
    part = Recorder()
    pl.Trainer(
        max_steps=13,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[every],
        default_root_dir=tmp_path,
    ).fit(part, datamodule=data())
    rest = Recorder()
    (ckpt,) = (tmp_path / "cb").glob("*step=12*.ckpt")
    trainer(tmp_path, 15).fit(rest, datamodule=data(), ckpt_path=ckpt)
    assert part.seen[:12] + rest.seen == full.seen
