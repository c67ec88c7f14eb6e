"""`OmniDiffusionModule`: the LightningModule that trains and samples a masked-diffusion model.

The module holds the science and receives every block ready-made (it never builds one from a
string): the backbone, the [`VocabLayout`][omni_blocks.vocab.VocabLayout], the noise
schedule, the time sampler, the mask strategy, the sampler, the optimiser and the learning-rate
schedule. The Trainer holds the engineering (devices, DDP / FSDP, precision, checkpoints).

One training step on a batch of `omni_blocks.data.collate_sequences`
(`input_ids`, `maskable`, `attention_mask`, `task`):

1. `t = time_sampler.sample(batch)`: one diffusion time per row;
2. `corruption = mask_strategy(input_ids, maskable, t, schedule=..., layout=...)`: the noisy
   ids `x_t` (only target positions are ever masked);
3. `logits = backbone(corruption.noisy_ids, attention_mask)`;
4. `loss = masked_diffusion_loss(logits, input_ids, corruption, normalization=...)`.

Every random draw of a step comes from a generator seeded by `(seed, step, rank)`, so a run
resumed from a checkpoint draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from omni_blocks.data.collate import collate_sequences
from omni_blocks.data.templates import TaskTemplate
from omni_blocks.loss import NORMALIZATIONS, Normalization, masked_diffusion_loss
from omni_blocks.masking import Corruption, MaskStrategy, UniformMasking
from omni_blocks.optim import AdamWConfig, ConstantLR, LRSchedule, OptimizerFactory
from omni_blocks.sampling.base import Sampler
from omni_blocks.schedules import LinearSchedule, NoiseSchedule, TimeSampler, UniformTimeSampler
from omni_blocks.serialization import SerializationError, block_config, class_paths
from omni_blocks.typing import Logits, SeqMask, Times, TokenIds
from omni_blocks.vocab import VocabLayout

__all__ = ["CONFIG_NAME", "LAYOUT_NAME", "BatchError", "OmniDiffusionModule", "StepOutput"]

CONFIG_NAME = "omni_blocks.json"
"""File of a `save_pretrained` folder that records the module's blocks."""

LAYOUT_NAME = "layout.json"
"""File of a `save_pretrained` folder that records the vocabulary layout."""

BATCH_KEYS = ("input_ids", "maskable", "attention_mask")

# Class paths a downloaded configuration may name without `trust_class_paths=True`.
TRUSTED_PREFIXES = ("omni_blocks.", "torch.")

# Separate random streams for training and validation draws.
_TRAIN, _VAL = 0, 1


class BatchError(ValueError):
    """A batch the module cannot train on; the message names the bad key or row."""


@dataclass
class StepOutput:
    """Everything one loss computation produced (see `OmniDiffusionModule.step`).

    Attributes:
        loss: the scalar loss.
        logits: the backbone's logits on the noisy ids.
        corruption: the mask strategy's output.
        t: the diffusion times of the rows.
    """

    loss: Tensor
    logits: Logits
    corruption: Corruption
    t: Times


def _mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (a simple polynomial hash, stable across runs)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part) + 1) % (2**63 - 1)
    return seed


class OmniDiffusionModule(L.LightningModule):
    """Masked discrete diffusion over the unified text + image + speech sequence.

    Every argument is a block (or a plain value), so a LightningCLI config chooses each by
    `class_path`; see the concept page *The module* for the YAML.

    Args:
        backbone: the network from token ids to aligned logits (a
            [`Backbone`][omni_blocks.backbones.Backbone], typed as `nn.Module` so that
            LightningCLI accepts any module by `class_path`).
        layout: the vocabulary layout of the ids the batches hold.
        schedule: the noise schedule (how many tokens are masked at time `t`).
        time_sampler: draws the diffusion time of each row.
        mask_strategy: decides which target tokens are masked.
        sampler: fills `[MASK]` positions at generation time (`generate`); may be `None` for
            a module that only trains.
        normalization: `"token"` (Omni-Diffusion), `"sequence"` or `"elbo"`; see
            [`masked_diffusion_loss`][omni_blocks.loss.masked_diffusion_loss].
        optimizer: builds the optimiser at fit time.
        lr_schedule: the learning-rate multiplier per optimiser step.
        seed: seeds the time and mask draws of every step (with the step count and the
            rank), which makes resumed runs repeat uninterrupted ones exactly.
        init_from: weights to start from (the previous stage of a multi-stage recipe): a
            Lightning `.ckpt`, a `save_pretrained` folder, or a hub repository id of one.
            Loaded once, when `fit` starts; a `ckpt_path` given to `fit` (resuming this same
            stage) is restored after it and wins.

    Raises:
        ValueError: an unknown normalisation, a negative seed, or a backbone whose vocabulary
            is smaller than the layout's.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layout: VocabLayout,
        schedule: NoiseSchedule = LinearSchedule(),  # noqa: B008 (frozen dataclasses)
        time_sampler: TimeSampler = UniformTimeSampler(),  # noqa: B008
        mask_strategy: MaskStrategy = UniformMasking(),  # noqa: B008
        sampler: Sampler | None = None,
        normalization: Normalization = "token",
        optimizer: OptimizerFactory = AdamWConfig(),  # noqa: B008
        lr_schedule: LRSchedule = ConstantLR(),  # noqa: B008
        seed: int = 0,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module; got {type(backbone).__name__}")
        backbone_vocab = getattr(backbone, "vocab_size", None)
        if isinstance(backbone_vocab, int) and backbone_vocab < layout.vocab_size:
            raise ValueError(
                f"the backbone has {backbone_vocab} vocabulary rows but the layout needs "
                f"{layout.vocab_size} ({layout.describe()}); build the backbone with "
                f"vocab_size >= {layout.vocab_size} or call backbone.resize_vocab"
            )
        self.backbone = backbone
        self.layout = layout
        self.schedule = schedule
        self.time_sampler = time_sampler
        self.mask_strategy = mask_strategy
        self.sampler = sampler
        self.normalization: Normalization = normalization
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.init_from = init_from
        self._initialized_from: str | None = None
        self._val_task_sums: dict[str, list[float]] = {}
        self.save_hyperparameters(self.to_config())

    # ------------------------------------------------------------------ configuration
    def to_config(self) -> dict[str, Any]:
        """The module's arguments as JSON data (`class_path` / `init_args` per block).

        This is what checkpoints store as hyper-parameters and `save_pretrained` writes;
        [`from_config`][omni_blocks.module.OmniDiffusionModule.from_config] rebuilds the
        module from it. `init_from` is recorded as `None`: the weights it loaded are part
        of the module's own state from then on.

        A backbone whose configuration cannot be recorded (a custom module that does not
        keep its constructor arguments) is recorded as `None` with a warning; pass it
        explicitly when loading (`from_config(config, backbone=...)`).
        """
        try:
            backbone: dict[str, Any] | None = block_config(self.backbone)
        except SerializationError as err:
            warnings.warn(f"the backbone is not recorded in checkpoints: {err}", stacklevel=2)
            backbone = None
        config: dict[str, Any] = {
            "backbone": backbone,
            "layout": self.layout.to_dict(),
            "schedule": block_config(self.schedule),
            "time_sampler": block_config(self.time_sampler),
            "mask_strategy": block_config(self.mask_strategy),
            "sampler": None if self.sampler is None else block_config(self.sampler),
            "normalization": self.normalization,
            "optimizer": block_config(self.optimizer_factory),
            "lr_schedule": block_config(self.lr_schedule),
            "seed": self.seed,
            "init_from": None,
        }
        return config

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, trust_class_paths: bool = True, **overrides: Any
    ) -> OmniDiffusionModule:
        """Build a module from `to_config()` data (fresh weights).

        Args:
            config: the module's configuration, as `to_config` writes it (or the `model`
                section of a LightningCLI config: `class_path` / `init_args` per block).
            trust_class_paths: allow class paths outside `omni_blocks` and `torch`; turn
                off for configurations downloaded from elsewhere.
            overrides: ready-made blocks or values that replace entries of `config`
                (for example `backbone=my_module`, `sampler=...`).

        Raises:
            ValueError: unknown keys, a missing backbone, or (without `trust_class_paths`)
                a class path outside the trusted packages.
        """
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        known = set(typing.get_type_hints(_init_of(cls))) - {"return"}
        unknown = sorted((set(config) | set(overrides)) - known)
        if unknown:
            raise ValueError(
                f"unknown OmniDiffusionModule arguments {unknown}; valid: {sorted(known)}"
            )
        if not trust_class_paths:
            _check_trusted(config)
        todo = {k: v for k, v in config.items() if k not in overrides}
        if todo.get("backbone", 0) is None:
            raise ValueError(
                "the configuration records no backbone (it could not be serialised when "
                "saved); pass backbone=... to rebuild the module"
            )
        layout = todo.pop("layout", None)
        values = _instantiate_blocks(cls, todo)
        if layout is not None:
            values["layout"] = (
                layout if isinstance(layout, VocabLayout) else (VocabLayout.from_dict(layout))
            )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ the loss
    def forward(self, input_ids: TokenIds, attention_mask: SeqMask | None = None) -> Logits:
        """The backbone's logits (position `i` predicts token `i`)."""
        logits: Logits = self.backbone(input_ids, attention_mask)
        return logits

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raise a clear error unless `batch` is what `collate_sequences` produces.

        Raises:
            BatchError: a missing key, wrong dtypes or shapes, an id outside the layout's
                vocabulary, or rows longer than the backbone's `max_position_embeddings`
                (the message names the tasks of the offending rows).
        """
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise BatchError(
                f"the batch lacks {missing}; expected keys {list(BATCH_KEYS)} (+ 'task') as "
                f"produced by omni_blocks.data.collate_sequences; got {sorted(batch)}"
            )
        ids, maskable, attention = (batch[k] for k in BATCH_KEYS)
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
            raise BatchError(
                f"batch['input_ids'] must be an int64 tensor (batch, seq); got {_describe(ids)}"
            )
        for name, value in (("maskable", maskable), ("attention_mask", attention)):
            if not isinstance(value, Tensor) or value.dtype != torch.bool:
                raise BatchError(f"batch[{name!r}] must be a bool tensor; got {_describe(value)}")
            if value.shape != ids.shape:
                raise BatchError(
                    f"batch[{name!r}] has shape {tuple(value.shape)} but input_ids "
                    f"{tuple(ids.shape)}"
                )
        tasks = batch.get("task")
        if tasks is not None and len(tasks) != ids.shape[0]:
            raise BatchError(f"batch['task'] names {len(tasks)} rows; the batch has {ids.shape[0]}")
        limit = _max_positions(self.backbone)
        if limit is not None and ids.shape[1] > limit:
            rows = attention.sum(dim=1) > limit
            names = _tasks_of(tasks, rows)
            raise BatchError(
                f"rows of {int(attention.sum(dim=1).max())} tokens (tasks {names}) exceed the "
                f"backbone's max_position_embeddings={limit}; filter or truncate the data "
                "(collate_sequences(max_length=...))"
            )
        if ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.layout.vocab_size:
                bad = ((ids < 0) | (ids >= self.layout.vocab_size)).any(dim=1)
                names = (
                    sorted({tasks[i] for i in bad.nonzero().flatten().tolist()}) if tasks else []
                )
                raise BatchError(
                    f"input_ids in [{low}, {high}] fall outside the layout's vocabulary "
                    f"[0, {self.layout.vocab_size}) (tasks {names}); the data and the module "
                    "use different layouts"
                )

    def step(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> StepOutput:
        """Corrupt the batch, run the backbone and compute the loss (no logging).

        Args:
            batch: `input_ids`, `maskable`, `attention_mask` (and `task`).
            generator: the random source of the time and mask draws.
        """
        self.check_batch(batch)
        ids: TokenIds = batch["input_ids"]
        maskable: SeqMask = batch["maskable"]
        attention: SeqMask = batch["attention_mask"]
        t = self.time_sampler.sample(ids.shape[0], generator=generator, device=ids.device)
        corruption = self.mask_strategy(
            ids, maskable, t, schedule=self.schedule, layout=self.layout, generator=generator
        )
        # Without padding the attention needs no mask (the fast path of SDPA).
        mask = None if bool(attention.all()) else attention
        logits = self(corruption.noisy_ids, mask)
        loss = masked_diffusion_loss(
            logits,
            ids,
            corruption,
            normalization=self.normalization,
            t=t,
            schedule=self.schedule,
            maskable=maskable,
        )
        return StepOutput(loss=loss, logits=logits, corruption=corruption, t=t)

    def _generator(self, device: torch.device, *parts: int) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(_mix_seed(self.seed, *parts))
        return generator

    def _micro_step(self, batch_idx: int) -> int:
        """Index of this micro-batch in the whole run (restored exactly on resume).

        Counted from the optimiser steps (`global_step`, saved in checkpoints) rather than
        from the epoch and batch index, which Lightning restores off by one when a
        checkpoint is written at the end of an epoch.
        """
        accumulate = 1
        if self._trainer is not None:
            accumulate = max(1, int(self.trainer.accumulate_grad_batches))
        return self.global_step * accumulate + batch_idx % accumulate

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step's loss; logs `train/loss`."""
        ids = batch["input_ids"]
        generator = self._generator(
            ids.device, _TRAIN, self._micro_step(batch_idx), self.global_rank
        )
        out = self.step(batch, generator)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=ids.shape[0])
        return out.loss

    def validation_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """The loss on a validation batch with fixed draws (comparable across epochs).

        Logs `val/loss`, and `val/loss/<task>` per task at the end of the epoch (gathered
        from every process, so tasks seen by only some ranks are fine).
        """
        ids = batch["input_ids"]
        generator = self._generator(ids.device, _VAL, dataloader_idx, batch_idx, self.global_rank)
        out = self.step(batch, generator)
        self.log("val/loss", out.loss, prog_bar=True, batch_size=ids.shape[0], sync_dist=True)
        tasks = batch.get("task")
        if tasks:
            self._accumulate_task_losses(batch, out, list(tasks))
        return out.loss

    def _accumulate_task_losses(
        self, batch: Mapping[str, Any], out: StepOutput, tasks: list[str]
    ) -> None:
        for task in sorted(set(tasks)):
            rows = torch.tensor([name == task for name in tasks], device=out.logits.device)
            c = out.corruption
            part = Corruption(
                noisy_ids=c.noisy_ids[rows],
                mask=c.mask[rows],
                loss_weight=None if c.loss_weight is None else c.loss_weight[rows],
            )
            loss = masked_diffusion_loss(
                out.logits[rows],
                batch["input_ids"][rows],
                part,
                normalization=self.normalization,
                t=out.t[rows],
                schedule=self.schedule,
                maskable=batch["maskable"][rows],
            )
            total = self._val_task_sums.setdefault(task, [0.0, 0.0])
            n = float(rows.sum())
            total[0] += float(loss) * n
            total[1] += n

    def on_validation_epoch_start(self) -> None:
        """Reset the per-task sums."""
        self._val_task_sums = {}

    def on_validation_epoch_end(self) -> None:
        """Log `val/loss/<task>`: the row-weighted mean over every process's batches."""
        sums = self._val_task_sums
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[dict[str, list[float]] | None] = [None] * (
                torch.distributed.get_world_size()
            )
            torch.distributed.all_gather_object(gathered, sums)
            merged: dict[str, list[float]] = {}
            for part in gathered:
                for task, (s, n) in (part or {}).items():
                    acc = merged.setdefault(task, [0.0, 0.0])
                    acc[0] += s
                    acc[1] += n
            sums = merged
        for task, (s, n) in sorted(sums.items()):
            if n > 0:
                # identical on every rank already: no further reduction
                self.log(f"val/loss/{task}", s / n, sync_dist=False, rank_zero_only=False)
        self._val_task_sums = {}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(
        self,
        template: TaskTemplate,
        examples: Sequence[Mapping[str, Any]],
        target_length: int | None = None,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
        sampler: Sampler | None = None,
        progress: bool = False,
    ) -> list[Any]:
        """Generate the task's output for every example.

        Builds each prompt with `template.prompt(example, target_length)` (the target region
        holds `mask_id`, or known tokens for inpainting), batches them, lets the sampler
        fill the masks restricted to `template.target_modality`, and parses each row's
        target region with `template.parse` (text for text tasks, local codes otherwise).

        Rows of a batch are aligned with padding that is neither attended nor generated, so
        an example's output does not depend on the other examples of its batch (up to the
        sampler's random draws).

        Args:
            template: the task's template (holds the layout and the text tokenizer).
            examples: examples with the task's input keys.
            target_length: positions of the target region (room for the response, its end
                token and tail pads); image tasks default to the image's token count.
            generator: makes sampling deterministic.
            batch_size: examples per sampler call (default: all at once).
            sampler: use this sampler instead of the module's.
            progress: show a tqdm bar over batches.

        Returns:
            One parsed output per example, in order.

        Raises:
            ValueError: no sampler, or a template built for another layout.
            DataError: a bad example (the message names its index).
        """
        sampler = sampler if sampler is not None else self.sampler
        if sampler is None:
            raise ValueError(
                "the module has no sampler; pass sampler=... or build the module with one "
                "(for example omni_blocks.sampling.omni_diffusion_sampler())"
            )
        if template.layout != self.layout:
            raise ValueError(
                f"the template's layout ({template.layout.describe()}) differs from the "
                f"module's ({self.layout.describe()})"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None; got {batch_size}")
        size = batch_size or max(1, len(examples))
        starts = range(0, len(examples), size)
        was_training = self.training
        self.eval()
        outputs: list[Any] = []
        try:
            for start in tqdm(starts, disable=not progress, desc=f"generate {template.name}"):
                chunk = examples[start : start + size]
                seqs = [
                    template.prompt(example, target_length, index=start + i)
                    for i, example in enumerate(chunk)
                ]
                batch = collate_sequences(seqs, self.layout, pad_targets=False)
                ids = batch["input_ids"].to(self.device)
                target = batch["maskable"].to(self.device)
                attention = batch["attention_mask"].to(self.device)
                result = sampler(
                    self.backbone,
                    ids,
                    layout=self.layout,
                    modality=template.target_modality,
                    target=target,
                    attention_mask=None if bool(attention.all()) else attention,
                    generator=generator,
                )
                for row in range(len(seqs)):
                    outputs.append(template.parse(result.ids[row][target[row]].cpu()))
        finally:
            self.train(was_training)
        return outputs

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """The optimiser of `optimizer` and a per-step `LambdaLR` following `lr_schedule`."""
        optimizer = self.optimizer_factory.build(self)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        total_steps = int(total) if math.isfinite(total) else 0
        schedule = self.lr_schedule

        def factor(step: int) -> float:
            return schedule.factor(step, total_steps)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ stages
    def setup(self, stage: str) -> None:
        """Load `init_from` once, before fitting starts."""
        if stage == "fit" and self.init_from and self._initialized_from != self.init_from:
            self.load_weights(self.init_from)
            self._initialized_from = self.init_from

    def load_weights(self, source: str | os.PathLike[str], *, strict: bool = True) -> None:
        """Copy weights into this module from a checkpoint of the previous stage.

        Args:
            source: a Lightning `.ckpt` file (read with `torch.load(weights_only=True)`), a
                `save_pretrained` folder, or a hub repository id of one.
            strict: require exactly this module's parameters.

        Raises:
            FileNotFoundError: nothing at `source`.
            ValueError: the weights do not fit this module (the message lists the missing,
                unexpected or mis-shaped tensors), or the `.ckpt` holds pickled objects.
        """
        path = Path(source).expanduser()
        if path.is_file():
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ValueError(
                    f"cannot read {path} with torch.load(weights_only=True): {err}. Lightning "
                    "checkpoints hold only plain data when the module and data module record "
                    "plain hyper-parameters; otherwise start from a save_pretrained folder"
                ) from err
            if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
                raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
            state = dict(checkpoint["state_dict"])
        else:
            # a save_pretrained folder: load it as a module, copy its weights
            local = Path(source).expanduser().is_dir()
            saved = type(self).from_pretrained(source, sampler=None, trust_class_paths=local)
            state = saved.state_dict()
        _load_matching(self, state, strict=strict, source=str(source))

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(
        self, folder: str | os.PathLike[str], *, max_shard_size: int | str = "5GB"
    ) -> Path:
        """Write the module as safetensors weights plus JSON configuration.

        The folder holds the backbone in its own layout (for a native backbone: Qwen2 /
        Dream `config.json` and `model.safetensors`, loadable by `NativeTransformer` and
        `transformers`), `layout.json` and `omni_blocks.json` (every block as
        `class_path` / `init_args`). Nothing is pickled. Returns the folder.

        Raises:
            SerializationError: a block whose configuration cannot be recorded.
        """
        from omni_blocks.backbones.checkpoint import save_state_dict

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.to_config()
        if config["backbone"] is None:
            block_config(self.backbone)  # raises the explanatory error
        config.pop("layout")
        saver = getattr(self.backbone, "save_pretrained", None)
        if callable(saver):
            saver(folder)
        else:
            state = {k: v for k, v in self.backbone.state_dict().items()}
            save_state_dict(state, folder, max_shard_size=max_shard_size)
        self.layout.to_json(folder / LAYOUT_NAME)
        from omni_blocks import __version__

        document = {"omni_blocks_version": __version__, "module": config}
        (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str | os.PathLike[str],
        *,
        revision: str | None = None,
        device: str | torch.device = "cpu",
        trust_class_paths: bool = False,
        **overrides: Any,
    ) -> OmniDiffusionModule:
        """Load a module written by `save_pretrained` (local folder or hub repository id).

        Args:
            pretrained: the folder, or a hub repository id (downloaded with
                `huggingface_hub.snapshot_download`, safetensors and JSON files only).
            revision: hub branch, tag or commit.
            device: where the weights are loaded.
            trust_class_paths: allow class paths outside `omni_blocks` and `torch` in the
                folder's `omni_blocks.json` (they are imported and called).
            overrides: blocks that replace recorded ones (for example another `sampler`).
                A given `backbone` receives the saved weights.

        Raises:
            FileNotFoundError: not a folder or repository, or no `omni_blocks.json` in it.
            ValueError: an untrusted class path, or weights that do not fit.
        """
        from omni_blocks.backbones.checkpoint import load_state_dict, resolve_checkpoint

        folder = resolve_checkpoint(pretrained, revision=revision)
        path = folder / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{pretrained!s} has no {CONFIG_NAME}: it is not an OmniDiffusionModule folder "
                "(a bare backbone loads with NativeTransformer.from_pretrained)"
            )
        config = dict(json.loads(path.read_text())["module"])
        if not trust_class_paths:
            _check_trusted(config)
        config["layout"] = VocabLayout.from_json(folder / LAYOUT_NAME)
        backbone = overrides.pop("backbone", None)
        if backbone is None:
            backbone = _load_backbone(config["backbone"], folder, device)
        else:
            backbone.to(device)
            _load_matching(
                backbone, load_state_dict(folder, device=device), strict=True, source=str(folder)
            )
        config.pop("backbone")
        module = cls.from_config(config, backbone=backbone, **overrides)
        return module.to(device)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload OmniDiffusionModule",
        folder: str | os.PathLike[str] | None = None,
    ) -> str:
        """`save_pretrained` into a folder, then upload it with `huggingface_hub`.

        Args:
            repo_id: `owner/name` of the model repository (created when missing).
            private: visibility of a created repository.
            token: hub token (default: the logged-in one).
            revision: branch to push to.
            commit_message: the commit's message.
            folder: where to write the files first (default: a temporary folder).

        Returns:
            The URL of the commit.
        """
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(folder) if folder is not None else Path(tmp)
            self.save_pretrained(target)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(target),
                repo_type="model",
                revision=revision,
                commit_message=commit_message,
            )
        return str(getattr(info, "commit_url", info))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: str | torch.device | None = None,
        strict: bool = True,
        **overrides: Any,
    ) -> OmniDiffusionModule:
        """Rebuild a module from a Lightning checkpoint of this class.

        The blocks come from the checkpoint's hyper-parameters (plain JSON, see
        `to_config`), the weights from its `state_dict`; the file is read with
        `torch.load(weights_only=True)`.

        Args:
            checkpoint_path: the `.ckpt` file.
            map_location: where the weights go (default: CPU).
            strict: require exactly this module's parameters.
            overrides: blocks or values replacing recorded ones.
        """
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        config = checkpoint.get("hyper_parameters")
        if not isinstance(config, Mapping) or "layout" not in config:
            raise ValueError(f"{checkpoint_path!s} records no OmniDiffusionModule hyper-parameters")
        module = cls.from_config(config, **overrides)
        _load_matching(module, checkpoint["state_dict"], strict=strict, source=str(checkpoint_path))
        return module.to(map_location or "cpu")


# ---------------------------------------------------------------------------------- helpers


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _tasks_of(tasks: Any, rows: Tensor) -> list[str]:
    """The distinct task names of the rows flagged in `rows`."""
    if not tasks:
        return []
    return sorted({str(tasks[i]) for i in rows.nonzero().flatten().tolist()})


def _max_positions(backbone: nn.Module) -> int | None:
    config = getattr(backbone, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def _init_of(cls: type) -> Any:
    return getattr(cls, "__init__")  # noqa: B009 (mypy refuses cls.__init__)


def _check_trusted(config: Any) -> None:
    bad = sorted({p for p in class_paths(config) if not p.startswith(TRUSTED_PREFIXES)})
    if bad:
        raise ValueError(
            f"the configuration names classes outside {TRUSTED_PREFIXES}: {bad}. They would be "
            "imported and called; pass trust_class_paths=True if you trust the source"
        )


def _instantiate_blocks(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Build the entries of `config` (`class_path` dicts, plain values) with jsonargparse.

    Each entry is parsed against the type of `cls.__init__`'s parameter of the same name,
    exactly as LightningCLI parses the `model` section of a YAML config.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    names = set(typing.get_type_hints(_init_of(cls))) - {"return"}
    parser.add_class_arguments(
        cls, "module", skip=names - set(config), instantiate=False, fail_untyped=False
    )
    parsed = parser.parse_object({"module": dict(config)})
    # `instantiate` since jsonargparse 4.49; `instantiate_classes` before (now deprecated)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    built = instantiate(parsed)
    return {k: getattr(built.module, k) for k in config}


def _load_backbone(
    config: Mapping[str, Any], folder: Path, device: str | torch.device
) -> nn.Module:
    """The saved backbone of a `save_pretrained` folder."""
    path = str(config.get("class_path", ""))
    init_args = dict(config.get("init_args") or {})
    if path == "omni_blocks.backbones.NativeTransformer":
        from omni_blocks.backbones import NativeTransformer

        return NativeTransformer.from_pretrained(
            folder,
            device=device,
            shift_logits=init_args.get("shift_logits"),
            gradient_checkpointing=bool(init_args.get("gradient_checkpointing", False)),
        )
    if path == "omni_blocks.backbones.HFBackbone":
        from omni_blocks.backbones import HFBackbone

        return HFBackbone(str(folder), shift_logits=init_args.get("shift_logits")).to(device)
    from omni_blocks.backbones.checkpoint import load_state_dict

    (backbone,) = _instantiate_blocks(_BackboneOnly, {"backbone": dict(config)}).values()
    _load_matching(
        backbone, load_state_dict(folder, device=device), strict=True, source=str(folder)
    )
    return typing.cast(nn.Module, backbone).to(device)


class _BackboneOnly:
    """A signature with just the backbone, to build one with jsonargparse."""

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone


def _load_matching(
    module: nn.Module, state: Mapping[str, Tensor], *, strict: bool, source: str
) -> None:
    """`module.load_state_dict(state)` with an error that names what does not fit."""
    own = module.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong or (strict and (missing or unexpected)):
        raise ValueError(
            f"the weights of {source} do not fit this {type(module).__name__}: "
            f"{len(wrong)} shape mismatches {wrong[:3]}, {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}; the previous "
            "stage must use the same backbone shape and layout"
        )
    module.load_state_dict(dict(state), strict=strict)
