"""Task datasets, their stage-wise mixture with ratios, and the Lightning data module.

Omni-Diffusion trains in stages, each on its own mixture of tasks (stage 1: text-to-image
and captioning; stage 2 adds ASR and TTS; stage 3 spoken VQA and speech-to-image). One
[`TaskMixture`][omni_blocks.data.mixture.TaskMixture] is one stage's mixture: named task
datasets and the fraction of each epoch drawn from each.

The order is a pure function of `(seed, epoch)`: each epoch takes exactly
`round(ratio * num_samples)` items from each task (largest remainders), interleaved by a
seeded shuffle; within a task, items follow seeded permutations (a smaller task cycles
through fresh permutations, a larger one is subsampled). A
[`MixtureOrder`][omni_blocks.data.mixture.MixtureOrder] walks that order, shards it
across ranks, and can start part-way through an epoch, which is how
[`OmniDataModule`][omni_blocks.data.mixture.OmniDataModule] resumes a run from a mid-epoch
checkpoint with the same batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import copy
import itertools
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from omni_blocks.data.collate import TaskBatch, collate_sequences
from omni_blocks.data.dropout import PromptDropout
from omni_blocks.data.sequence import DataError, TaskSequence
from omni_blocks.data.templates import TaskTemplate
from omni_blocks.vocab import VocabLayout

__all__ = [
    "MixtureOrder",
    "OmniDataModule",
    "ResumableLoader",
    "SequenceCollator",
    "TaskMixture",
    "TemplateDataset",
]


class TemplateDataset(Dataset[TaskSequence]):
    """Examples of one task, built into sequences by its template.

    Args:
        examples: the examples (dicts, see [`TaskTemplate`][omni_blocks.data.templates]).
        template: the task's template.
        eager: build (and so check) every example now, so that a bad one fails before
            training starts rather than mid-epoch; otherwise items are built on access
            (still with errors naming the example).
        progress: show a tqdm bar while building eagerly.

    Raises:
        DataError: (eager) the first bad example, named by its id and index.
    """

    def __init__(
        self,
        examples: Sequence[Mapping[str, Any]],
        template: TaskTemplate,
        *,
        eager: bool = True,
        progress: bool = False,
    ) -> None:
        self.examples = examples
        self.template = template
        self._built: list[TaskSequence] | None = None
        if eager:
            self._built = [
                template.build(example, index=i)
                for i, example in enumerate(
                    tqdm(examples, disable=not progress, desc=f"build {template.name}")
                )
            ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> TaskSequence:
        if self._built is not None:
            return self._built[index]
        return self.template.build(self.examples[index], index=index)


class TaskMixture(Dataset[TaskSequence]):
    """Named task datasets mixed with ratios: one training stage's data.

    Items are addressed by a flat index over the concatenated datasets; the epoch order
    (which flat indices, in which order) comes from
    [`order`][omni_blocks.data.mixture.TaskMixture.order].

    Args:
        datasets: task name -> a sized dataset of `TaskSequence`s (a list, a
            [`TemplateDataset`][omni_blocks.data.mixture.TemplateDataset], ...).
        ratios: task name -> weight (normalised to sum to one). None: proportional to the
            datasets' sizes (plain concatenation).
        num_samples: items per epoch. None: the total size of the datasets.
        seed: seed of the order.

    Raises:
        ValueError: an empty dataset, ratios that are not positive and finite, or ratio
            names that differ from the dataset names.
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        ratios: Mapping[str, float | int] | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        if not datasets:
            raise ValueError("TaskMixture needs at least one dataset")
        self.names = list(datasets)
        self.datasets = [datasets[n] for n in self.names]
        sizes = [len(d) for d in self.datasets]
        empty = [n for n, s in zip(self.names, sizes, strict=True) if s == 0]
        if empty:
            raise ValueError(f"TaskMixture datasets {empty} are empty")
        if ratios is None:
            weights = [float(s) for s in sizes]
        else:
            if set(ratios) != set(self.names):
                raise ValueError(
                    f"ratios name tasks {sorted(ratios)} but the datasets are {sorted(self.names)}"
                )
            weights = [float(ratios[n]) for n in self.names]
            bad = {
                n: w
                for n, w in zip(self.names, weights, strict=True)
                if not w > 0 or not math.isfinite(w)
            }
            if bad:
                raise ValueError(f"ratios must be positive and finite, got {bad}")
        total = sum(weights)
        self.ratios = {n: w / total for n, w in zip(self.names, weights, strict=True)}
        self.sizes = dict(zip(self.names, sizes, strict=True))
        self.offsets = dict(zip(self.names, [0, *itertools.accumulate(sizes)][:-1], strict=True))
        self.num_samples = int(num_samples) if num_samples is not None else sum(sizes)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.seed = int(seed)

    def __len__(self) -> int:
        """Number of addressable items (all datasets); an epoch has `num_samples`."""
        return sum(self.sizes.values())

    def __getitem__(self, index: int) -> TaskSequence:
        for name, dataset in zip(self.names, self.datasets, strict=True):
            offset = self.offsets[name]
            if offset <= index < offset + self.sizes[name]:
                item: TaskSequence = dataset[index - offset]
                return item
        raise IndexError(f"TaskMixture index {index} out of range [0, {len(self)})")

    def counts(self) -> dict[str, int]:
        """Items per task in each epoch: `ratio * num_samples`, rounded by largest remainder."""
        exact = [self.ratios[n] * self.num_samples for n in self.names]
        counts = [math.floor(x) for x in exact]
        by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
        for i in by_remainder[: self.num_samples - sum(counts)]:
            counts[i] += 1
        return dict(zip(self.names, counts, strict=True))

    def order(self, epoch: int = 0) -> torch.Tensor:
        """The flat indices of epoch `epoch`, in order (a pure function of seed and epoch)."""
        generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
        labels, picks = [], []
        for task, (name, count) in enumerate(self.counts().items()):
            size = self.sizes[name]
            rounds = -(-count // size)
            perm = torch.cat([torch.randperm(size, generator=generator) for _ in range(rounds)])
            picks.append(perm[:count] + self.offsets[name])
            labels.append(torch.full((count,), task))
        flat = torch.cat(picks)
        # interleave tasks: shuffle positions, keeping each task's own order
        shuffle = torch.randperm(len(flat), generator=generator)
        task_of = torch.cat(labels)[shuffle]
        out = torch.empty_like(flat)
        for task, pick in enumerate(picks):
            out[task_of == task] = pick
        return out


def _mix(seed: int, epoch: int) -> int:
    return zlib.crc32(f"{seed}:{epoch}".encode())


class MixtureOrder(DistributedSampler[int]):
    """Walks a [`TaskMixture`][omni_blocks.data.mixture.TaskMixture]'s epoch orders.

    Rank `r` of `world_size` takes positions `r, r + world_size, ...` of the epoch order
    (the tail that does not split evenly is dropped), so every rank sees the same number of
    items. The sampler counts its own epochs: its first iteration is epoch `start_epoch`,
    starting at position `start` (to resume mid-epoch), the next one `start_epoch + 1` from
    the beginning, and so on. `set_epoch` is ignored, because after a restart Lightning's
    epoch number can differ from the data's (a checkpoint saved when `max_steps` stopped a
    run mid-epoch counts that epoch as done). It subclasses `DistributedSampler` so that
    Lightning uses it as it is instead of wrapping it.

    Args:
        mixture: the mixture.
        rank: this process's rank.
        world_size: number of processes.
        start: positions of epoch `start_epoch` already consumed (by all ranks together; a
            multiple of `world_size`).
        start_epoch: the epoch of the first iteration.
    """

    def __init__(
        self,
        mixture: TaskMixture,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        start_epoch: int = 0,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank=}, {world_size=}")
        if start < 0 or start % world_size:
            raise ValueError(f"start must be a non-negative multiple of {world_size=}, got {start}")
        super().__init__(mixture, num_replicas=world_size, rank=rank, shuffle=False)
        self.mixture = mixture
        self.start = int(start)
        self.start_epoch = int(start_epoch)
        self.iterations = 0

    @property
    def next_epoch(self) -> int:
        """The epoch the next iteration walks."""
        return self.start_epoch + self.iterations

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the sampler counts epochs itself (see the class docstring)."""

    def __len__(self) -> int:
        """Items per rank in a whole epoch (a resumed epoch yields only its remainder)."""
        return self.mixture.num_samples // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        order = self.mixture.order(self.next_epoch)
        usable = len(order) // self.num_replicas * self.num_replicas
        skip = min(self.start, usable) if self.iterations == 0 else 0
        self.iterations += 1
        return iter(order[skip + self.rank : usable : self.num_replicas].tolist())


class SequenceCollator:
    """A picklable `collate_fn`: [`collate_sequences`][omni_blocks.data.collate.collate_sequences]
    with fixed options.

    A ranged `extra_tail_pad` (and `prompt_dropout`'s draws, made first) come from a
    generator seeded by `seed` and a checksum of the batch's ids, so the same batch gets the
    same pads and drops whatever the worker count and after a resume.
    """

    def __init__(
        self,
        layout: VocabLayout,
        *,
        pad_to_multiple_of: int | None = None,
        extra_tail_pad: int | tuple[int, int] = 0,
        pad_targets: bool = True,
        max_length: int | None = None,
        seed: int = 0,
        tail_pads_if_no_eos: bool = False,
        prompt_dropout: PromptDropout | None = None,
    ) -> None:
        self.layout = layout
        self.prompt_dropout = prompt_dropout
        self.pad_to_multiple_of = pad_to_multiple_of
        self.extra_tail_pad = extra_tail_pad
        self.pad_targets = pad_targets
        self.max_length = max_length
        self.seed = seed
        self.tail_pads_if_no_eos = tail_pads_if_no_eos

    def __call__(self, seqs: Sequence[TaskSequence]) -> TaskBatch:
        bad = [type(s).__name__ for s in seqs if not isinstance(s, TaskSequence)]
        if bad:
            raise DataError(f"the data loader yields {bad[0]}, not TaskSequence")
        checksum = zlib.crc32(torch.cat([s.ids for s in seqs]).numpy().tobytes())
        generator = torch.Generator().manual_seed(_mix(self.seed, checksum))
        if self.prompt_dropout is not None:
            seqs = self.prompt_dropout(seqs, generator)
        return collate_sequences(
            seqs,
            self.layout,
            pad_to_multiple_of=self.pad_to_multiple_of,
            extra_tail_pad=self.extra_tail_pad,
            pad_targets=self.pad_targets,
            max_length=self.max_length,
            generator=generator,
            tail_pads_if_no_eos=self.tail_pads_if_no_eos,
        )


class ResumableLoader(DataLoader[TaskSequence]):
    """A `DataLoader` over a [`MixtureOrder`][omni_blocks.data.mixture.MixtureOrder] that
    Lightning can checkpoint and restore (its `state_dict` / `load_state_dict` interface).

    The state is the position in the mixture's order, `(epoch, samples consumed)`, read from
    the trainer's progress when the checkpoint is written; restoring it makes the order
    resume exactly where the interrupted run stopped.

    Args:
        position: returns `(epoch, consumed samples, rank, world size)` now.
        *args: `DataLoader`'s arguments; its `sampler` must be a `MixtureOrder`.
        **kwargs: `DataLoader`'s keyword arguments.
    """

    def __init__(self, position: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, MixtureOrder):
            raise TypeError("ResumableLoader needs a MixtureOrder sampler")
        self._position = position

    def state_dict(self) -> dict[str, int]:
        """`{"epoch": ..., "start": ...}`: where the order stands."""
        epoch, start, _, _ = self._position()
        return {"epoch": int(epoch), "start": int(start)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue the order from a saved position (before the first batch is drawn)."""
        order = self.sampler
        assert isinstance(order, MixtureOrder)
        order.start_epoch, order.start, order.iterations = (
            int(state["epoch"]),
            int(state["start"]),
            0,
        )


class OmniDataModule(pl.LightningDataModule):
    """Batches of task sequences for `Trainer.fit`, reproducible across resumes.

    Training batches follow the train mixture's seeded order (see
    [`TaskMixture`][omni_blocks.data.mixture.TaskMixture]); a run resumed from a mid-epoch
    checkpoint skips the batches it already trained on (read from the trainer's restored
    progress), so it sees the same batches as an uninterrupted run. This holds for
    checkpoints written by `ModelCheckpoint` (any step) and by `trainer.save_checkpoint`
    after `max_steps` stopped a run mid-epoch; from one saved that way exactly at an epoch's
    end, Lightning 2.6 first runs a one-batch epoch, which shifts the order. Validation
    batches are in dataset order.

    Args:
        layout: the vocabulary (pad id for collation).
        train: the training data: a `TaskMixture`, or any sized dataset / list of
            `TaskSequence`s (wrapped as a one-task mixture).
        val: validation data (a sized dataset / list of `TaskSequence`s), or None.
        test: test data, or None. `test_dataloader` and `predict_dataloader` read it, else
            the validation data, else every training example once, in order (so that
            `omni-blocks test` and `predict` run on any config).
        batch_size: sequences per batch and device.
        val_batch_size: for validation; defaults to `batch_size`.
        num_workers: data-loader worker processes.
        seed: seed of the training order (a `TaskMixture` passed in keeps its own) and of
            the tail pads.
        extra_tail_pad: pads appended to each target (Omni-Diffusion: `(1, 16)`).
        pad_targets: whether the alignment pads are targets too (see
            [`collate_sequences`][omni_blocks.data.collate.collate_sequences]).
        pad_to_multiple_of: round row lengths up to a multiple of this.
        max_length: the backbone's maximum length: longer sequences raise `DataError`,
            extra pads beyond it are dropped.
        drop_last: drop a last incomplete training batch.
        tail_pads_if_no_eos: give `extra_tail_pad` only to sequences without an eos yet
            (Omni-Diffusion's rule; see `collate_sequences`).
        prompt_dropout: drop some training rows' prompts, for classifier-free guidance
            ([`PromptDropout`][omni_blocks.data.dropout.PromptDropout]); None: none.
    """

    def __init__(
        self,
        layout: VocabLayout,
        train: Any,
        val: Any = None,
        *,
        test: Any = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        extra_tail_pad: int | tuple[int, int] = (1, 16),
        pad_targets: bool = True,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        drop_last: bool = False,
        tail_pads_if_no_eos: bool = False,
        prompt_dropout: PromptDropout | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be positive, got {batch_size}, {val_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.layout = layout
        self.train = (
            train if isinstance(train, TaskMixture) else TaskMixture({"train": train}, seed=seed)
        )
        self.val = val
        self.test = test
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.drop_last = drop_last
        self.collator = SequenceCollator(
            layout,
            pad_to_multiple_of=pad_to_multiple_of,
            extra_tail_pad=extra_tail_pad,
            pad_targets=pad_targets,
            max_length=max_length,
            seed=seed,
            tail_pads_if_no_eos=tail_pads_if_no_eos,
        )
        # training batches only: validation and test rows keep their prompts
        self.train_collator = copy.copy(self.collator)
        self.train_collator.prompt_dropout = prompt_dropout

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches per epoch and rank (before Lightning's `limit_train_batches`)."""
        per_rank = self.train.num_samples // world_size
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def _resume_point(self) -> tuple[int, int, int, int]:
        """`(epoch, samples of it consumed by all ranks, rank, world_size)` of the trainer.

        Read from the trainer's restored progress: the batches trained so far, over the
        batches per epoch (after `limit_train_batches`).
        """
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 0, 1
        world = int(trainer.world_size)
        per_epoch = self.batches_per_epoch(world)
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            per_epoch = min(per_epoch, limit)
        elif limit is not None:
            per_epoch = int(per_epoch * limit)
        # `processed`, not `completed`: ModelCheckpoint saves in on_train_batch_end, after the
        # batch was processed but before Lightning counts it as completed
        total = trainer.fit_loop.epoch_loop.batch_progress.total
        done = int(getattr(total, "processed", total.completed))
        if per_epoch < 1:
            return 0, 0, int(trainer.global_rank), world
        epoch, batches = divmod(done, per_epoch)
        return epoch, batches * self.batch_size * world, int(trainer.global_rank), world

    def train_dataloader(self) -> DataLoader[TaskSequence]:
        """Training batches in the mixture's order, resuming mid-epoch when restarted."""
        epoch, start, rank, world = self._resume_point()
        sampler = MixtureOrder(
            self.train, rank=rank, world_size=world, start=start, start_epoch=epoch
        )
        return ResumableLoader(
            self._resume_point,
            self.train,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.train_collator,
            drop_last=self.drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader[TaskSequence] | list[Any]:
        """Validation batches in dataset order: none without `val` while fitting; for
        `Trainer.validate` (`omni-blocks validate`) the test data's fallback (see `test`)."""
        if self.val is None:
            trainer = self.trainer
            validating = trainer is not None and trainer.state.fn == "validate"
            return self._in_order(self._evaluation_data()) if validating else []
        return DataLoader(
            self.val,
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collator,
        )

    def test_dataloader(self) -> DataLoader[TaskSequence]:
        """Test batches in dataset order: `test`, else `val`, else every training example."""
        return self._in_order(self._evaluation_data())

    def predict_dataloader(self) -> DataLoader[TaskSequence]:
        """The examples to generate for, as `test_dataloader` (`omni-blocks predict`)."""
        return self._in_order(self._evaluation_data())

    def _evaluation_data(self) -> Any:
        if self.test is not None:
            return self.test
        if self.val is not None:
            return self.val
        return torch.utils.data.ConcatDataset(self.train.datasets)

    def _in_order(self, data: Any) -> DataLoader[TaskSequence]:
        return DataLoader(
            data,
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self.collator,
        )
