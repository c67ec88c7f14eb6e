"""OmniDiffusionModule: training, resuming, DDP, stages, saving and loading, bad input."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from omni_blocks.backbones import NativeTransformer
from omni_blocks.config import SerializationError
from omni_blocks.data.collate import BatchError
from omni_blocks.masking import AttenuatedTailPadMasking, SpanMasking
from omni_blocks.module import OmniDiffusionModule
from omni_blocks.optim import AdamWConfig, WarmupCosine
from omni_blocks.sampling import omni_diffusion_sampler
from omni_blocks.schedules import AntitheticTime, CosineSchedule
from tiny_data import (
    TASKS,
    CopyDataModule,
    collate,
    copy_examples,
    digit_data,
    digit_layout,
    digit_tokenizer,
    tiny_layout,
)


def tiny_backbone(vocab_size: int, **kwargs: Any) -> NativeTransformer:
    return NativeTransformer(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **kwargs,
    )


def make_module(seed: int = 0, **kwargs: Any) -> OmniDiffusionModule:
    torch.manual_seed(seed)
    layout = tiny_layout()
    kwargs.setdefault("optimizer", AdamWConfig(lr=3e-3))
    kwargs.setdefault("lr_schedule", WarmupCosine(warmup_steps=2, min_lr_ratio=0.1))
    return OmniDiffusionModule(tiny_backbone(layout.vocab_size), layout, **kwargs)


class LossRecorder(Callback):
    """The training loss of every step, in order."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))


class StopAfter(Callback):
    """Interrupts fitting after `steps` optimiser steps (like a preempted job)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def trainer(tmp_path: Path, max_steps: int, callbacks: list[Callback], **kwargs: Any) -> L.Trainer:
    kwargs.setdefault("limit_val_batches", 0)
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kwargs,
    )


def a_batch(n: int = 4) -> dict[str, Any]:
    layout = tiny_layout()
    return collate(copy_examples(layout, n), layout)


# ---------------------------------------------------------------------------------- training


def test_loss_goes_down(tmp_path: Path) -> None:
    record = LossRecorder()
    module = make_module(mask_strategy=AttenuatedTailPadMasking())
    trainer(tmp_path, 36, [record]).fit(module, CopyDataModule())
    first, last = record.losses[:6], record.losses[-6:]
    assert len(record.losses) == 36
    assert sum(last) / 6 < sum(first) / 6 - 0.5, record.losses


def test_resume_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    # 6 batches per epoch; the checkpoint is written after the last batch of epoch 0 (a
    # plain DataLoader restarts its epoch on resume, so resuming mid-epoch needs a resumable
    # loader; see the concept page).
    full = LossRecorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_train_steps=6)
    trainer(tmp_path / "a", 10, [full, checkpoint]).fit(make_module(), CopyDataModule())
    saved = tmp_path / "ckpt" / "epoch=0-step=6.ckpt"
    assert saved.is_file(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())

    resumed = LossRecorder()
    other_init = make_module(seed=123)  # weights come from the checkpoint, not from init
    trainer(tmp_path / "b", 10, [resumed]).fit(other_init, CopyDataModule(), ckpt_path=saved)
    assert len(full.losses) == 10 and len(resumed.losses) == 4
    assert resumed.losses == full.losses[6:]


def digit_module(seed: int = 0, dropout: float = 0.0) -> OmniDiffusionModule:
    torch.manual_seed(seed)
    layout = digit_layout(digit_tokenizer())
    return OmniDiffusionModule(
        tiny_backbone(layout.vocab_size, attention_dropout=dropout),
        layout,
        mask_strategy=AttenuatedTailPadMasking(),
        optimizer=AdamWConfig(lr=3e-3),
        lr_schedule=WarmupCosine(warmup_steps=2),
    )


def test_resume_mid_epoch_with_the_omni_data_module(tmp_path: Path) -> None:
    # captioning + ASR, 5 batches per epoch; the run is interrupted after 3 of its 8 steps
    # (mid-epoch), as a preempted job would be, and resumed with the same configuration
    full = LossRecorder()
    trainer(tmp_path / "a", 8, [full]).fit(digit_module(), digit_data())
    first = LossRecorder()
    part = trainer(tmp_path / "b", 8, [first, StopAfter(3)])
    part.fit(digit_module(), digit_data())
    part.save_checkpoint(tmp_path / "mid.ckpt")
    rest = LossRecorder()
    trainer(tmp_path / "c", 8, [rest]).fit(
        digit_module(seed=5), digit_data(), ckpt_path=tmp_path / "mid.ckpt"
    )
    assert len(full.losses) == 8
    assert first.losses + rest.losses == full.losses


def test_resume_with_dropout_is_bit_exact_and_the_loader_resumable(tmp_path: Path) -> None:
    # dropout draws from torch's global generator, which the module seeds per step
    full = LossRecorder()
    whole = digit_module(dropout=0.3)
    trainer(tmp_path / "a", 8, [full]).fit(whole, digit_data())
    first = LossRecorder()
    part = trainer(tmp_path / "b", 8, [first, StopAfter(3)])
    part.fit(digit_module(dropout=0.3), digit_data())
    part.save_checkpoint(tmp_path / "mid.ckpt")
    rest = LossRecorder()
    resumed = digit_module(seed=5, dropout=0.3)
    torch.manual_seed(12345)  # whatever the global generator holds, the steps draw the same
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path / "c", 8, [rest]).fit(
            resumed, digit_data(), ckpt_path=tmp_path / "mid.ckpt"
        )
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert first.losses + rest.losses == full.losses
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_trains_on_cpu(tmp_path: Path, precision: str) -> None:
    record = LossRecorder()
    module = make_module()
    trainer(tmp_path, 3, [record], precision=precision).fit(module, CopyDataModule())
    assert len(record.losses) == 3 and all(math.isfinite(x) for x in record.losses)
    expected = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert module.backbone.lm_head.weight.dtype == expected


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    batch = a_batch()
    module = make_module()
    module.eval()
    one = module.step(batch, module._generator(torch.device("cpu"), 0, 0, 3, 0))
    two = module.step(batch, module._generator(torch.device("cpu"), 0, 0, 3, 0))
    three = module.step(batch, module._generator(torch.device("cpu"), 0, 0, 4, 0))
    assert torch.equal(one.corruption.mask, two.corruption.mask)
    assert not torch.equal(one.corruption.mask, three.corruption.mask)
    # prompts are never masked
    assert not bool((one.corruption.mask & ~batch["target_mask"]).any())


class ParamChecksum(Callback):
    """Each process writes the sum of its parameters after fitting."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = sum(float(p.double().sum()) for p in pl_module.parameters())
        seen = pl_module.seen_tasks  # type: ignore[attr-defined]
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"checksum": total, "first_ids": seen})
        )


class SpyModule(OmniDiffusionModule):
    """Records the first id of each training batch it sees."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not hasattr(self, "seen_tasks"):
            self.seen_tasks: list[int] = []
        self.seen_tasks.append(int(batch["input_ids"][0, 0]))
        return super().training_step(batch, batch_idx)


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layout = tiny_layout()
    module = SpyModule(tiny_backbone(layout.vocab_size), layout, optimizer=AdamWConfig(lr=3e-3))
    before = [p.detach().clone() for p in module.parameters()]
    fit = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        val_check_interval=3,
        callbacks=[ParamChecksum(str(tmp_path))],
        default_root_dir=tmp_path,
    )
    fit.fit(module, CopyDataModule())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # gradients were averaged: both replicas hold the same weights ...
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)
    # ... although each process trained on different batches (DistributedSampler)
    assert ranks[0]["first_ids"] != ranks[1]["first_ids"]
    # and the trained weights came back to this process
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))
    metrics = fit.callback_metrics
    assert {f"val/loss/{t}" for t in TASKS} <= set(metrics)


def test_validation_logs_loss_per_task(tmp_path: Path) -> None:
    module = make_module()
    fit = trainer(tmp_path, 1, [], limit_val_batches=2)
    fit.validate(module, CopyDataModule())
    metrics = fit.callback_metrics
    assert {"val/loss", "val/loss/copy", "val/loss/echo"} <= set(metrics)
    # val draws are fixed: validating twice gives the same loss
    first = float(metrics["val/loss"])
    fit.validate(module, CopyDataModule())
    assert float(fit.callback_metrics["val/loss"]) == first


@pytest.mark.parametrize("normalization", ["token", "sequence", "elbo"])
def test_every_normalization_trains(normalization: str) -> None:
    module = make_module(normalization=normalization, schedule=CosineSchedule())
    out = module.step(a_batch(), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert module.backbone.lm_head.weight.grad is not None


def test_lr_schedule_is_stepped_per_optimizer_step(tmp_path: Path) -> None:
    module = make_module(optimizer=AdamWConfig(lr=1e-2), lr_schedule=WarmupCosine(warmup_steps=4))
    lrs: list[float] = []

    class Lr(Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer(tmp_path, 6, [Lr()]).fit(module, CopyDataModule())
    assert lrs[:5] == pytest.approx([0.0, 2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert lrs[5] < 1e-2


# ---------------------------------------------------------------------------------- stages


def test_init_from_checkpoint_starts_stage_two(tmp_path: Path) -> None:
    stage1 = make_module()
    fit = trainer(tmp_path / "s1", 3, [])
    fit.fit(stage1, CopyDataModule())
    ckpt = tmp_path / "stage1.ckpt"
    fit.save_checkpoint(ckpt)

    stage2 = make_module(seed=7, init_from=str(ckpt), mask_strategy=SpanMasking())
    assert not torch.equal(stage2.backbone.lm_head.weight, stage1.backbone.lm_head.weight)
    stage2.setup("fit")
    assert torch.equal(stage2.backbone.lm_head.weight, stage1.backbone.lm_head.weight)
    # the recorded config does not point at stage 1 any more: its weights are the module's
    assert stage2.hparams["init_from"] is None


def test_init_from_save_pretrained_folder(tmp_path: Path) -> None:
    stage1 = make_module()
    stage1.save_pretrained(tmp_path / "stage1")
    stage2 = make_module(seed=3, init_from=str(tmp_path / "stage1"))
    trainer(tmp_path, 1, [], limit_train_batches=0).fit(stage2, CopyDataModule())
    for a, b in zip(stage1.parameters(), stage2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_init_from_mismatched_shapes_is_a_clear_error(tmp_path: Path) -> None:
    small = make_module()
    small.save_pretrained(tmp_path / "small")
    layout = tiny_layout()
    bigger = OmniDiffusionModule(
        NativeTransformer(
            vocab_size=layout.vocab_size,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        layout,
        init_from=str(tmp_path / "small"),
    )
    with pytest.raises(ValueError, match=r"do not fit.*shape mismatches"):
        bigger.setup("fit")
    with pytest.raises(FileNotFoundError):
        make_module(init_from=str(tmp_path / "nowhere.ckpt")).setup("fit")


# ---------------------------------------------------------------------------------- saving


def test_save_and_from_pretrained_give_identical_logits(tmp_path: Path) -> None:
    module = make_module(
        schedule=CosineSchedule(),
        time_distribution=AntitheticTime(shuffle=True),
        mask_strategy=AttenuatedTailPadMasking(pad_mask_ratio=0.5),
        normalization="sequence",
        sampler=omni_diffusion_sampler(num_steps=16, guidance_scale=1.5),
    )
    folder = module.save_pretrained(tmp_path / "saved")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "layout.json", "omni_blocks.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".ckpt")) for n in names)

    loaded = OmniDiffusionModule.from_pretrained(folder)
    assert loaded.layout == module.layout
    assert loaded.schedule == module.schedule
    assert loaded.time_distribution == module.time_distribution
    assert loaded.mask_strategy == module.mask_strategy
    assert loaded.normalization == "sequence"
    assert loaded.sampler == module.sampler
    ids = a_batch()["input_ids"]
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids), module(ids))


def test_load_from_checkpoint_round_trip(tmp_path: Path) -> None:
    module = make_module(mask_strategy=SpanMasking(mean_span_length=2.0))
    fit = trainer(tmp_path, 2, [])
    fit.fit(module, CopyDataModule())
    fit.save_checkpoint(tmp_path / "m.ckpt")
    # plain data only: readable without unpickling arbitrary objects
    raw = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert raw["hyper_parameters"]["mask_strategy"]["class_path"].endswith("SpanMasking")
    loaded = OmniDiffusionModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.mask_strategy == module.mask_strategy
    for a, b in zip(module.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_push_to_hub_uploads_the_saved_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import huggingface_hub.hub_mixin

    calls: dict[str, Any] = {}

    class RecordingApi:
        def __init__(self, token: str | None = None) -> None:
            calls["token"] = token

        def create_repo(self, repo_id: str, **kwargs: Any) -> Any:
            calls["create_repo"] = (repo_id, kwargs)
            return types.SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, **kwargs: Any) -> str:
            folder = Path(kwargs["folder_path"])
            calls["upload_folder"] = kwargs
            calls["files"] = sorted(p.name for p in folder.iterdir())
            calls["card"] = (folder / "README.md").read_text()
            calls["loaded"] = OmniDiffusionModule.from_pretrained(folder)
            return "https://hub.example/commit/1"

    # ModelHubMixin.push_to_hub: create the repository, save to a folder, upload it
    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", RecordingApi)
    module = make_module()
    url = module.push_to_hub("me/tiny-omni", private=True, token="t0k")
    assert url == "https://hub.example/commit/1"
    assert calls["token"] == "t0k"
    assert calls["create_repo"] == ("me/tiny-omni", {"private": True, "exist_ok": True})
    assert calls["upload_folder"]["repo_id"] == "me/tiny-omni"
    assert {"omni_blocks.json", "layout.json", "model.safetensors"} <= set(calls["files"])
    assert "library_name: omni-blocks" in calls["card"]
    assert torch.equal(calls["loaded"].backbone.lm_head.weight, module.backbone.lm_head.weight)


def test_untrusted_class_paths_are_refused(tmp_path: Path) -> None:
    folder = make_module().save_pretrained(tmp_path / "m")
    doc = json.loads((folder / "omni_blocks.json").read_text())
    doc["module"]["schedule"] = {"class_path": "subprocess.Popen", "init_args": {"args": "true"}}
    (folder / "omni_blocks.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"subprocess\.Popen.*trust_class_paths"):
        OmniDiffusionModule.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match=r"omni_blocks\.json"):
        OmniDiffusionModule.from_pretrained(tiny_backbone(8).save_pretrained(tmp_path / "bare"))


class Opaque(torch.nn.Module):
    """A custom backbone that does not keep its constructor arguments."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.head = torch.nn.Embedding(vocab, vocab)

    @property
    def vocab_size(self) -> int:
        return self.head.num_embeddings

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.head(ids)


def test_unrecordable_backbone_warns_and_save_pretrained_explains() -> None:
    layout = tiny_layout()
    with pytest.warns(UserWarning, match="not recorded"):
        module = OmniDiffusionModule(Opaque(layout.vocab_size), layout)
    with pytest.raises(SerializationError, match="takes \\['vocab'\\]"):
        module.save_pretrained("/nonexistent-never-written")
    config = module.to_config()
    rebuilt = OmniDiffusionModule.from_config(config, backbone=Opaque(layout.vocab_size))
    assert rebuilt.layout == layout
    with pytest.raises(ValueError, match="pass backbone="):
        OmniDiffusionModule.from_config(config)


# ---------------------------------------------------------------------------------- bad input


def test_bad_arguments_are_clear() -> None:
    layout = tiny_layout()
    # beartype (in the tests) or the module's own check (without it) names the argument
    with pytest.raises((ValueError, TypeError), match="normalization"):
        OmniDiffusionModule(tiny_backbone(layout.vocab_size), layout, normalization="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size >= 80"):
        OmniDiffusionModule(tiny_backbone(50), layout)
    with pytest.raises(ValueError, match="unknown OmniDiffusionModule arguments \\['lr'\\]"):
        OmniDiffusionModule.from_config({**make_module().to_config(), "lr": 1.0})


def test_bad_batches_are_named() -> None:
    module = make_module()
    batch = a_batch()
    with pytest.raises(BatchError, match="lacks \\['target_mask'\\]"):
        module.step({k: v for k, v in batch.items() if k != "target_mask"})
    with pytest.raises(BatchError, match="must be a bool tensor"):
        module.step({**batch, "attention_mask": batch["attention_mask"].long()})
    too_big = batch["input_ids"].clone()
    too_big[1, 0] = 999
    with pytest.raises(BatchError, match=r"outside the layout's vocabulary.*\['echo'\]"):
        module.step({**batch, "input_ids": too_big})
    layout = tiny_layout()
    short = OmniDiffusionModule(tiny_backbone(layout.vocab_size, max_position_embeddings=8), layout)
    with pytest.raises(BatchError, match="max_position_embeddings=8"):
        short.step(batch)


COMPILE_CHECK = """
import torch
from test_module import a_batch, make_module
eager, compiled = make_module(), make_module(compile_backbone=True)
compiled.backbone.load_state_dict(eager.backbone.state_dict())
batch = a_batch()
loss_eager = eager.step(batch, torch.Generator().manual_seed(0)).loss
loss_compiled = compiled.step(batch, torch.Generator().manual_seed(0)).loss
torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-4, atol=1e-5)
assert compiled.to_config()["compile_backbone"] is True
# compiling in place keeps the weights' names (checkpoints load either way)
assert eager.state_dict().keys() == compiled.state_dict().keys()
print("same loss", float(loss_eager), float(loss_compiled))
"""


def test_compile_backbone_computes_the_same_loss() -> None:
    # in a fresh interpreter: torch.compile cannot trace the beartype checks the test
    # suite wraps every function in
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "src")])}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_CHECK], capture_output=True, text=True, env=env, cwd=here
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same loss" in done.stdout
