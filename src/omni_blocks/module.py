"""`OmniDiffusionModule`: the LightningModule that trains and samples a masked-diffusion model.

The module holds the science and receives every block ready-made: the backbone, the
[`VocabLayout`][omni_blocks.vocab.VocabLayout], the noise schedule, the distribution of
training times, the mask strategy, the sampler, the optimiser and the learning-rate schedule.
The Trainer holds the engineering (devices, DDP / FSDP, precision, checkpoints); generation
lives in [`omni_blocks.generation`][omni_blocks.generation], saving and loading in
[`omni_blocks.checkpointing`][omni_blocks.checkpointing].

One training step on a batch of `omni_blocks.data.collate_sequences`
(`input_ids`, `target_mask`, `attention_mask`, `task`):

1. `t = time_distribution.sample(batch)`: one diffusion time per row;
2. `corruption = mask_strategy(input_ids, target_mask, t, schedule=..., layout=...)`: the
   noisy ids `x_t` (only target positions are ever masked);
3. `logits = backbone(corruption.noisy_ids, attention_mask)` (with a `packing` policy, on
   the examples packed several to a row, and put back in the batch's layout);
4. `loss = masked_diffusion_loss(logits, input_ids, corruption, normalization=...)`.

Every random draw of a step comes from a generator seeded by `(seed, step, rank)`, so a run
resumed from a checkpoint draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.checkpointing import PretrainedMixin
from omni_blocks.config import SerializationError, block_config, build_object
from omni_blocks.data.collate import check_batch
from omni_blocks.data.packing import NoPacking, Packing
from omni_blocks.data.templates import TASK_NAMES, TaskTemplate
from omni_blocks.generation import generate
from omni_blocks.loss import (
    NORMALIZATIONS,
    Normalization,
    TaskMeans,
    masked_diffusion_loss,
    task_losses,
)
from omni_blocks.masking import Corruption, MaskStrategy, UniformMasking
from omni_blocks.optim import AdamWConfig, ConstantLR, LRSchedule, OptimizerFactory
from omni_blocks.sampling.base import Sampler
from omni_blocks.schedules import LinearSchedule, NoiseSchedule, TimeDistribution, UniformTime
from omni_blocks.speech.encoders import SpeechEncoder
from omni_blocks.speech.projectors import Projector
from omni_blocks.speech.slots import select_slot_rows, speech_slots
from omni_blocks.typing import Logits, SeqMask, Times, TokenIds
from omni_blocks.vocab import Modality, VocabLayout

__all__ = ["OmniDiffusionModule", "StepOutput"]

# Separate random streams for training, validation, test, dropout and prediction draws.
_TRAIN, _VAL, _TEST, _DROPOUT, _PREDICT = 0, 1, 2, 3, 4
# Blocks are frozen dataclasses: one shared default instance is safe.
_SCHEDULE, _TIMES, _MASKING = LinearSchedule(), UniformTime(), UniformMasking()
_OPTIMIZER, _LR, _PACKING = AdamWConfig(), ConstantLR(), NoPacking()


@dataclass
class StepOutput:
    """Everything one loss computation produced (see `OmniDiffusionModule.step`)."""

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


class OmniDiffusionModule(PretrainedMixin, L.LightningModule):  # type: ignore[misc]
    """Masked discrete diffusion over the unified text + image + speech sequence.

    Every argument is a block (or a plain value), so a LightningCLI config chooses each by
    `class_path`; see the concept page *The module* for the YAML. Saving and loading
    (`save_pretrained`, `from_pretrained`, `push_to_hub`, `load_from_checkpoint`,
    `load_weights`) come from [`PretrainedMixin`][omni_blocks.checkpointing.PretrainedMixin].

    Args:
        backbone: the network from token ids to aligned logits (a
            [`Backbone`][omni_blocks.backbones.Backbone]).
        layout: the vocabulary layout of the ids the batches hold.
        schedule: the noise schedule (how many tokens are masked at time `t`).
        time_distribution: draws the diffusion time of each row.
        mask_strategy: decides which target tokens are masked.
        sampler: fills `[MASK]` positions at generation time; None for a module that only
            trains.
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
        packing: how the training and evaluation steps lay examples out for the backbone:
            [`NoPacking`][omni_blocks.data.packing.NoPacking] (one per row, padded) or
            [`GreedyPacking`][omni_blocks.data.packing.GreedyPacking] (several per row,
            attention kept inside each; the backbone must take `segment_ids`). The loss is
            the same either way, up to float rounding.
        speech_encoder: the encoder of the speech the model hears as features (templates
            with `speech_input: SpeechFeatures`): Omni-Diffusion's SenseVoiceSmall
            ([`SenseVoiceEncoder`][omni_blocks.speech.SenseVoiceEncoder]) or a small one
            ([`ConvSpeechEncoder`][omni_blocks.speech.ConvSpeechEncoder]); trained with the
            backbone. None: speech only as codes.
        speech_projector: maps the encoder's outputs to the backbone's embeddings
            ([`ResamplerProjector`][omni_blocks.speech.ResamplerProjector], upstream's);
            needed with `speech_encoder`.
        compile_backbone: compile the backbone's forward pass with `torch.compile` (in
            place: `backbone.compile()`; the weights' names do not change). It pays on long
            runs with fixed shapes (see `benchmarks/compile.py` for the figures on CPU: a
            first call that takes tens of seconds, then faster steps; new shapes recompile);
            off by default.

    Raises:
        ValueError: an unknown normalisation, a negative seed, or a backbone whose vocabulary
            is smaller than the layout's.
    """

    def __init__(
        self,
        backbone: nn.Module,
        layout: VocabLayout,
        schedule: NoiseSchedule = _SCHEDULE,
        time_distribution: TimeDistribution = _TIMES,
        mask_strategy: MaskStrategy = _MASKING,
        sampler: Sampler | None = None,
        normalization: Normalization = "token",
        optimizer: OptimizerFactory = _OPTIMIZER,
        lr_schedule: LRSchedule = _LR,
        seed: int = 0,
        init_from: str | None = None,
        packing: Packing = _PACKING,
        speech_encoder: SpeechEncoder | None = None,
        speech_projector: Projector | None = None,
        compile_backbone: bool = False,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}; got {normalization!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {seed!r}")
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module; got {type(backbone).__name__}")
        rows = getattr(backbone, "vocab_size", None)
        if isinstance(rows, int) and rows < layout.vocab_size:
            raise ValueError(
                f"the backbone has {rows} vocabulary rows but the layout needs "
                f"{layout.vocab_size} ({layout.describe()}); build the backbone with "
                f"vocab_size >= {layout.vocab_size} or call backbone.resize_vocab"
            )
        self.backbone = backbone
        self.layout = layout
        self.schedule = schedule
        self.time_distribution = time_distribution
        self.mask_strategy = mask_strategy
        self.sampler = sampler
        self.normalization: Normalization = normalization
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.seed = seed
        self.init_from = init_from
        self.packing = packing
        if (speech_encoder is None) != (speech_projector is None):
            raise ValueError("speech_encoder and speech_projector go together: give both or none")
        if (
            speech_encoder is not None
            and speech_projector is not None
            and speech_projector.input_size != speech_encoder.output_size
        ):
            raise ValueError(
                f"the speech projector takes {speech_projector.input_size} features but the "
                f"encoder gives {speech_encoder.output_size}"
            )
        self.speech_encoder = speech_encoder
        self.speech_projector = speech_projector
        self.processor = None  # the templates and tokenizers saved with the model, if any
        self._hub_mixin_config = None  # the folder's config.json is the backbone's
        self.compile_backbone = bool(compile_backbone)
        if self.compile_backbone:
            backbone.compile()
        self._initialized_from: str | None = None  # the weights loaded from init_from
        # one MeanMetric per task; every rank holds every built-in task's (DDP syncs them all)
        self.task_losses = TaskMeans(TASK_NAMES)
        self.save_hyperparameters(self.to_config())

    # ------------------------------------------------------------------ configuration
    def to_config(self) -> dict[str, Any]:
        """The module's arguments as JSON data (`class_path` / `init_args` per block).

        This is what checkpoints store as hyper-parameters and `save_pretrained` writes;
        `from_config` rebuilds the module from it. `init_from` is recorded as `None`: the
        weights it loaded are the module's own from then on. A backbone whose configuration
        cannot be recorded is recorded as `None` with a warning (pass it when loading).
        """
        try:
            backbone: dict[str, Any] | None = block_config(self.backbone)
        except SerializationError as err:
            warnings.warn(f"the backbone is not recorded in checkpoints: {err}", stacklevel=2)
            backbone = None
        blocks = ("schedule", "time_distribution", "mask_strategy", "lr_schedule", "packing")
        config: dict[str, Any] = {"backbone": backbone, "layout": self.layout.to_dict()}
        config.update({name: block_config(getattr(self, name)) for name in blocks})
        for name in ("speech_encoder", "speech_projector"):
            block = getattr(self, name)
            config[name] = None if block is None else block_config(block)
        config["sampler"] = None if self.sampler is None else block_config(self.sampler)
        config["optimizer"] = block_config(self.optimizer_factory)
        config.update(normalization=self.normalization, seed=self.seed, init_from=None)
        config["compile_backbone"] = self.compile_backbone
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> OmniDiffusionModule:
        """Build a module (fresh weights) from `to_config()` data or a YAML `model` section;
        `overrides` are ready-made blocks or values. A config read from a file must pass
        [`check_untrusted`][omni_blocks.config.check_untrusted] first (loaders do).

        Raises:
            ValueError: unknown keys, or a missing backbone.
        """
        if config.get("backbone", 0) is None and "backbone" not in overrides:
            raise ValueError("the configuration records no backbone; pass backbone=...")
        layout = config.get("layout")  # plain data (no class path), or a ready layout
        if isinstance(layout, Mapping):
            layout = VocabLayout.from_dict(layout)
        if isinstance(layout, VocabLayout):
            overrides = {"layout": layout, **overrides}
        module: OmniDiffusionModule = build_object(cls, config, **overrides)
        return module

    # ------------------------------------------------------------------ the loss
    def forward(
        self,
        input_ids: TokenIds,
        attention_mask: SeqMask | None = None,
        slots: EmbeddingSlots | None = None,
    ) -> Logits:
        """The backbone's logits (position `i` predicts token `i`); `slots` carry the
        embeddings of speech heard as features."""
        if slots is None:
            logits: Logits = self.backbone(input_ids, attention_mask)
        else:
            logits = self.backbone(input_ids, attention_mask, slots=slots)
        return logits

    def speech_slots(self, slot_mask: SeqMask, features: Sequence[Tensor]) -> EmbeddingSlots:
        """The embeddings of a batch's speech slots: its frames through the speech encoder
        and projector (see [`speech_slots`][omni_blocks.speech.speech_slots]).

        Raises:
            ValueError: the module has no speech encoder.
        """
        if self.speech_encoder is None or self.speech_projector is None:
            raise ValueError(
                "the batch holds speech as features (SpeechFeatures templates) but the module "
                "has no speech_encoder / speech_projector; build it with both, or write speech "
                "as codes (SpeechCodes)"
            )
        return speech_slots(self.speech_encoder, self.speech_projector, slot_mask, features)

    def _batch_slots(self, batch: Mapping[str, Any]) -> EmbeddingSlots | None:
        if batch.get("slot_mask") is None:
            return None
        return self.speech_slots(batch["slot_mask"], list(batch["speech_features"]))

    def step(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> StepOutput:
        """Corrupt the batch, run the backbone and compute the loss (no logging)."""
        config = getattr(self.backbone, "config", None)
        limit = getattr(config, "max_position_embeddings", None)
        check_batch(batch, self.layout, max_positions=limit if isinstance(limit, int) else None)
        ids, target, attention = batch["input_ids"], batch["target_mask"], batch["attention_mask"]
        t = self.time_distribution.sample(ids.shape[0], generator=generator, device=ids.device)
        corruption = self.mask_strategy(
            ids, target, t, schedule=self.schedule, layout=self.layout, generator=generator
        )
        slot_mask = batch.get("slot_mask")
        if slot_mask is not None and bool((corruption.mask & slot_mask).any()):
            # a speech slot is input, never a token to predict (FullSequenceMasking would
            # otherwise mask it too)
            corruption = Corruption(
                torch.where(slot_mask, ids, corruption.noisy_ids),
                corruption.mask & ~slot_mask,
                corruption.loss_weight,
            )
        logits = self._logits(corruption.noisy_ids, attention, self._batch_slots(batch))
        kwargs = {"t": t, "schedule": self.schedule, "target_mask": target}
        loss = masked_diffusion_loss(
            logits, ids, corruption, normalization=self.normalization, **kwargs
        )
        return StepOutput(loss=loss, logits=logits, corruption=corruption, t=t)

    def _logits(
        self, noisy_ids: TokenIds, attention: SeqMask, slots: EmbeddingSlots | None = None
    ) -> Logits:
        packed = self.packing.plan(attention)
        if packed is not None and slots is not None:
            raise ValueError(
                "packing does not take speech slots (features) yet; use packing: NoPacking "
                "for batches with speech heard as features"
            )
        if packed is None:
            # Without padding the attention needs no mask (the fast path of SDPA).
            return self(noisy_ids, None if bool(attention.all()) else attention, slots)
        ids = packed.pack(noisy_ids, pad_id=self.layout.pad_id)
        try:
            out = self.backbone(ids, segment_ids=packed.segment_ids)
        except TypeError as err:
            if "segment_ids" not in str(err):
                raise
            raise TypeError(
                f"{type(self.backbone).__name__} takes no `segment_ids`, which packing "
                "needs; use packing: NoPacking (or a NativeTransformer backbone)"
            ) from err
        logits: Logits = packed.unpack(out)
        return logits

    def _generator(self, device: torch.device, *parts: int) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(_mix_seed(self.seed, *parts))
        return generator

    def _micro_step(self, batch_idx: int) -> int:
        """Index of this micro-batch in the whole run, from the optimiser steps (which
        checkpoints restore exactly) rather than the epoch and batch index."""
        accumulate = (
            1 if self._trainer is None else max(1, int(self.trainer.accumulate_grad_batches))
        )
        return self.global_step * accumulate + batch_idx % accumulate

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step's loss; logs `train/loss`.

        Dropout draws from torch's global generator, which Lightning does not checkpoint: the
        step runs with that generator seeded from `(seed, step, rank)` too (and restored
        after), so a resumed run drops out the same units as an uninterrupted one.
        """
        ids = batch["input_ids"]
        parts = (_TRAIN, self._micro_step(batch_idx), self.global_rank)
        devices = [ids.device] if ids.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_mix_seed(self.seed, _DROPOUT, *parts))
            out = self.step(batch, self._generator(ids.device, *parts))
        self.log("train/loss", out.loss, prog_bar=True, batch_size=ids.shape[0])
        return out.loss

    def validation_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """The loss on a validation batch with fixed draws (comparable across epochs).

        Logs `val/loss`, and `val/loss/<task>` per task at the end of the epoch: the mean of
        each row's loss through a torchmetrics `MeanMetric` per task (synchronised across
        processes).
        """
        return self._evaluate(batch, (_VAL, dataloader_idx, batch_idx, self.global_rank), "val")

    def test_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """As `validation_step`, logged under `test/`."""
        return self._evaluate(batch, (_TEST, dataloader_idx, batch_idx, self.global_rank), "test")

    def _evaluate(self, batch: Mapping[str, Any], parts: tuple[int, ...], prefix: str) -> Tensor:
        ids, tasks = batch["input_ids"], list(batch.get("task") or [])
        out = self.step(batch, self._generator(ids.device, *parts))
        self.log(f"{prefix}/loss", out.loss, prog_bar=True, batch_size=len(ids), sync_dist=True)
        kwargs = {"t": out.t, "schedule": self.schedule, "target_mask": batch["target_mask"]}
        if tasks:
            losses = task_losses(
                out.logits, ids, out.corruption, tasks, normalization=self.normalization, **kwargs
            )
            self.task_losses.update(losses)
        return out.loss

    def on_validation_epoch_end(self) -> None:
        """Log `val/loss/<task>` (every process computes every task's metric, in order)."""
        self._log_task_losses("val")

    def on_test_epoch_end(self) -> None:
        """Log `test/loss/<task>`."""
        self._log_task_losses("test")

    def _log_task_losses(self, prefix: str) -> None:
        for task, value in self.task_losses.compute().items():
            self.log(f"{prefix}/loss/{task}", value)

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> list[dict[str, Any]]:
        """Generate every row's target region from its prompt (`Trainer.predict`,
        `omni-blocks predict`): the target is masked, the module's sampler fills it (rows
        grouped by their target's modality), and each row comes back as `task`,
        `target_modality` and the generated `target_ids`. A
        [`GenerationWriter`][omni_blocks.generation.GenerationWriter] writes them to files.

        Raises:
            ValueError: the module has no sampler.
        """
        if self.sampler is None:
            raise ValueError(
                "predicting needs a sampler: set model.sampler in the config (for example "
                "omni_blocks.sampling.omni_diffusion_sampler())"
            )
        ids, target, attention = batch["input_ids"], batch["target_mask"], batch["attention_mask"]
        tasks = list(batch.get("task") or ["?"] * len(ids))
        modalities = list(batch.get("target_modality") or [None] * len(ids))
        noisy = ids.masked_fill(target, self.layout.mask_id)
        out = noisy.clone()
        generator = self._generator(
            ids.device, _PREDICT, dataloader_idx, batch_idx, self.global_rank
        )
        for modality in sorted(set(modalities), key=str):
            rows = torch.tensor([i for i, m in enumerate(modalities) if m == modality])
            mask = attention[rows]
            slots = None
            if batch.get("slot_mask") is not None:
                slot_mask, features = select_slot_rows(
                    batch["slot_mask"], batch["speech_features"], rows.tolist()
                )
                slots = self.speech_slots(slot_mask, features) if bool(slot_mask.any()) else None
            sample = self.sampler(
                self.backbone,
                noisy[rows],
                layout=self.layout,
                modality=None if modality is None else Modality(modality),
                target_mask=target[rows],
                attention_mask=None if bool(mask.all()) else mask,
                generator=generator,
                slots=slots,
            )
            out[rows] = sample.ids
        return [
            {
                "task": tasks[i],
                "target_modality": modalities[i],
                "target_ids": out[i][target[i]].tolist(),
            }
            for i in range(len(ids))
        ]

    # ------------------------------------------------------------------ generation
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
        lenient_parse: bool = False,
    ) -> list[Any]:
        """The task's output for every example (see [`generate`][omni_blocks.generation.generate],
        which also returns NFE and trajectories); `sampler` replaces the module's for this call.

        Raises:
            ValueError: no sampler, or a template built for another layout.
        """
        sampler = sampler if sampler is not None else self.sampler
        if sampler is None:
            raise ValueError(
                "the module has no sampler; pass sampler=... or build the module with one "
                "(for example omni_blocks.sampling.omni_diffusion_sampler())"
            )
        result = generate(
            self.backbone,
            self.layout,
            sampler,
            template,
            examples,
            target_length,
            generator=generator,
            batch_size=batch_size,
            progress=progress,
            lenient_parse=lenient_parse,
            speech=self.speech_slots if self.speech_encoder is not None else None,
        )
        return result.outputs

    # ------------------------------------------------------------------ optimisation, stages
    def configure_optimizers(self) -> Any:
        """The optimiser of `optimizer` and a per-step `LambdaLR` following `lr_schedule`."""
        optimizer = self.optimizer_factory.build(self)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        total_steps = int(total) if math.isfinite(total) else 0
        schedule = self.lr_schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule.factor(step, total_steps)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def setup(self, stage: str) -> None:
        """Load `init_from` once, before fitting starts."""
        if stage == "fit" and self.init_from and self._initialized_from != self.init_from:
            self.load_weights(self.init_from)
            self._initialized_from = self.init_from
