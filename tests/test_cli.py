"""The `omni-blocks` LightningCLI: YAML with class_path blocks, fit, stages, bad configs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import pytest
import torch
import yaml

from omni_blocks.cli import cli
from omni_blocks.masking import AttenuatedTailPadMasking
from omni_blocks.optim import WarmupCosine
from omni_blocks.schedules import CosineSchedule

CONFIG = """
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: 2
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  limit_val_batches: 1
  num_sanity_val_steps: 0
model:
  backbone:
    class_path: omni_blocks.backbones.NativeTransformer
    init_args:
      vocab_size: 80
      hidden_size: 32
      intermediate_size: 64
      num_hidden_layers: 2
      num_attention_heads: 4
  layout: {text_size: 40, speech_size: 16, image_size: 16}
  schedule:
    class_path: omni_blocks.schedules.CosineSchedule
  mask_strategy:
    class_path: omni_blocks.masking.AttenuatedTailPadMasking
    init_args: {pad_mask_ratio: 0.6}
  optimizer:
    class_path: omni_blocks.optim.AdamWConfig
    init_args: {lr: 0.003}
  lr_schedule:
    class_path: omni_blocks.optim.WarmupCosine
    init_args: {warmup_steps: 1}
  sampler:
    class_path: omni_blocks.sampling.MaskedDiffusionSampler
    init_args:
      planner:
        class_path: omni_blocks.sampling.SchedulePlanner
        init_args: {num_steps: 8}
      scorer:
        class_path: omni_blocks.sampling.EntropyScorer
      penalty:
        class_path: omni_blocks.sampling.TailPenalty
data:
  class_path: tiny_data.CopyDataModule
  init_args: {batch_size: 4}
"""


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when sys.argv carries arguments besides `args`
    monkeypatch.setattr("sys.argv", ["omni-blocks"])


def write_config(tmp_path: Path, **changes: Any) -> Path:
    config = yaml.safe_load(CONFIG)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_from_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    run = cli(["fit", "--config", str(path), f"--trainer.default_root_dir={tmp_path}"])
    assert run.trainer.global_step == 2
    model = run.model
    assert model.schedule == CosineSchedule()
    assert model.mask_strategy == AttenuatedTailPadMasking(pad_mask_ratio=0.6)
    assert model.lr_schedule == WarmupCosine(warmup_steps=1)
    assert run.trainer.optimizers[0].defaults["lr"] == 0.003
    sampler = run.model.sampler
    assert sampler.planner.num_steps == 8 and type(sampler.penalty).__name__ == "TailPenalty"
    # the checkpointed configuration rebuilds the same sampler
    rebuilt = type(run.model).from_config(dict(run.model.hparams))
    assert rebuilt.sampler == sampler
    assert (tmp_path / "config.yaml").is_file()  # the resolved config next to the run


def test_command_line_overrides_a_block(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    run = cli(
        [
            "--config",
            str(path),
            "--model.mask_strategy=omni_blocks.masking.SpanMasking",
            "--model.mask_strategy.mean_span_length=2",
            "--model.normalization=elbo",
        ],
        run=False,
    )
    assert type(run.model.mask_strategy).__name__ == "SpanMasking"
    assert run.model.normalization == "elbo"


def test_stage_two_starts_from_stage_one(tmp_path: Path) -> None:
    stage1 = write_config(tmp_path / "s1", **{"trainer.enable_checkpointing": True})
    first = cli(["fit", "--config", str(stage1), f"--trainer.default_root_dir={tmp_path / 's1'}"])
    (ckpt,) = (tmp_path / "s1").rglob("*.ckpt")

    stage2 = write_config(
        tmp_path / "s2",
        **{"model.init_from": str(ckpt), "trainer.limit_train_batches": 0, "seed_everything": 1},
    )
    second = cli(["fit", "--config", str(stage2), f"--trainer.default_root_dir={tmp_path / 's2'}"])
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_bad_class_path_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path, **{"model.schedule": {"class_path": "omni_blocks.schedules.NoSuchSchedule"}}
    )
    with pytest.raises(SystemExit):
        cli(["--config", str(path)], run=False)
    assert "NoSuchSchedule" in capsys.readouterr().err


def test_bad_block_value_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(
        tmp_path,
        **{
            "model.mask_strategy": {
                "class_path": "omni_blocks.masking.AttenuatedTailPadMasking",
                "init_args": {"pad_mask_ratio": 2.0},
            }
        },
    )
    with pytest.raises((SystemExit, ValueError)) as info:
        cli(["--config", str(path)], run=False)
    message = str(info.value) + capsys.readouterr().err
    assert "pad_mask_ratio" in message


def test_layout_too_big_for_the_backbone_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path, **{"model.backbone.init_args.vocab_size": 50})
    with pytest.raises(ValueError, match="vocab_size >= 80"):
        cli(["--config", str(path)], run=False)


DOCS = Path(__file__).resolve().parent.parent / "docs"
YAML_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)


def doc_yaml(page: str) -> list[dict[str, Any]]:
    return [yaml.safe_load(block) for block in YAML_FENCE.findall((DOCS / page).read_text())]


def test_trainer_sections_of_the_tutorial_parse() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy

    from omni_blocks.backbones.native import DecoderLayer

    sections = [block["trainer"] for block in doc_yaml("tutorials/multi-gpu.md")]
    assert len(sections) == 3
    cpu, ddp, fsdp = sections
    assert cpu["accelerator"] == "cpu" and ddp["strategy"] == "ddp"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--strategy", type=Union[str, Strategy])  # noqa: UP007 (jsonargparse)
    strategy = parser.instantiate(parser.parse_object({"strategy": fsdp["strategy"]}))
    fsdp_strategy = strategy.strategy
    assert isinstance(fsdp_strategy, FSDPStrategy)
    assert fsdp_strategy.kwargs["auto_wrap_policy"]._module_classes == {DecoderLayer}


def test_model_sections_of_the_concept_page_parse(tmp_path: Path) -> None:
    optim, stage2 = doc_yaml("concepts/module.md")
    config = yaml.safe_load(CONFIG)
    config["model"].update(optim["model"])
    config["model"]["init_from"] = stage2["model"]["init_from"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = cli(["--config", str(path)], run=False)
    assert run.model.lr_schedule == WarmupCosine(warmup_ratio=0.03)
    assert run.model.optimizer_factory.lr == 1e-5
    assert run.model.init_from == "runs/stage1/checkpoints/last.ckpt"
