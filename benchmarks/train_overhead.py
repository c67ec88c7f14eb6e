"""Training throughput: `OmniDiffusionModule` under a Lightning `Trainer` vs a bare PyTorch loop.

Both sides train the same backbone (same initial weights) on the same batches, with the same
time sampler, mask strategy, loss, AdamW and warm-up/cosine learning-rate schedule, and the
same per-step random draws; the bare loop is what one would write by hand:

```text
t = time_distribution.sample(B); corruption = mask_strategy(ids, target_mask, t, ...)
loss = masked_diffusion_loss(backbone(corruption.noisy_ids, mask), ids, corruption)
loss.backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()
```

Each round times `--steps` steps of each side after `--warmup` untimed steps (the timer
starts at the first timed batch and stops after the last, so Trainer start-up is not
counted; the Trainer's own work between batches is). Rounds alternate between the two
sides; the script prints the median tokens/s of each (wall clock, and per CPU-second of
the process, which other processes on a shared machine do not inflate), their ratio, the
median of the per-round ratios, and the largest difference between the two sides' losses
(0 when both do exactly the same work).

The Trainer runs with the logger, checkpointing and progress bar off (`--lightning-defaults`
keeps Lightning's defaults: CSV/TensorBoard logger and progress bar).

Usage: `python benchmarks/train_overhead.py [--steps 30] [--rounds 3] [--hidden 256]
[--layers 4] [--seq 128] [--batch 8] [--threads 1] [--device cpu]`.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from omni_blocks.backbones import NativeTransformer
from omni_blocks.loss import masked_diffusion_loss
from omni_blocks.masking import AttenuatedTailPadMasking
from omni_blocks.module import OmniDiffusionModule, _mix_seed
from omni_blocks.optim import AdamWConfig, WarmupCosine
from omni_blocks.schedules import LinearSchedule, UniformTime
from omni_blocks.vocab import VocabLayout


def make_batches(
    layout: VocabLayout, count: int, batch: int, seq: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Batches in the `collate_sequences` format: a text prompt, then a target + tail pads."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(0, layout.text_size, (batch, seq), generator=generator)
        prompt = torch.randint(seq // 4, seq // 2, (batch, 1), generator=generator)
        answer = torch.randint(seq // 2, seq, (batch, 1), generator=generator)
        position = torch.arange(seq).expand(batch, seq)
        ids = torch.where(position >= answer, torch.full_like(ids, layout.pad_id), ids)
        out.append(
            {
                "input_ids": ids,
                "target_mask": position >= prompt,
                "attention_mask": torch.ones(batch, seq, dtype=torch.bool),
                "task": ["bench"] * batch,
            }
        )
    return out


def clocks() -> tuple[float, float]:
    """(wall time, CPU time of this process)."""
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple[float, float], stop: tuple[float, float]) -> tuple[float, float]:
    return stop[0] - start[0], stop[1] - start[1]


class Timer(Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = (0.0, 0.0)
        self.stop = (0.0, 0.0)
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            self.start = clocks()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        if str(module.device).startswith("cuda"):
            torch.cuda.synchronize()
        self.stop = clocks()


def run_lightning(
    module: OmniDiffusionModule,
    loader: DataLoader[Any],
    steps: int,
    warmup: int,
    device: str,
    defaults: bool,
) -> tuple[float, list[float]]:
    timer = Timer(warmup)
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            max_steps=warmup + steps,
            accelerator=device,
            devices=1,
            logger=None if defaults else False,
            enable_checkpointing=False,
            enable_progress_bar=defaults,
            enable_model_summary=False,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            callbacks=[timer],
            default_root_dir=root,
        )
        trainer.fit(module, train_dataloaders=loader)
    return elapsed(timer.start, timer.stop), timer.losses


def run_bare(
    module: OmniDiffusionModule,
    loader: DataLoader[Any],
    steps: int,
    warmup: int,
    device: str,
) -> tuple[float, list[float]]:
    """The hand-written loop over the module's own blocks (no Lightning anywhere)."""
    backbone = module.backbone.to(device).train()
    layout, schedule = module.layout, module.schedule
    time_distribution, mask_strategy = module.time_distribution, module.mask_strategy
    optimizer = module.optimizer_factory.build(backbone)
    total = warmup + steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: module.lr_schedule.factor(step, total)
    )
    losses: list[float] = []
    start = (0.0, 0.0)
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader):
        if step == total:
            break
        if step == warmup:
            start = clocks()
        ids = batch["input_ids"].to(device)
        target_mask = batch["target_mask"].to(device)
        attention = batch["attention_mask"].to(device)
        # the same draws as the module: one generator per step, seeded by (seed, step, rank)
        generator = torch.Generator(device=ids.device)
        generator.manual_seed(_mix_seed(module.seed, 0, step, 0))
        t = time_distribution.sample(ids.shape[0], generator=generator, device=ids.device)
        corruption = mask_strategy(
            ids, target_mask, t, schedule=schedule, layout=layout, generator=generator
        )
        logits = backbone(corruption.noisy_ids, None if bool(attention.all()) else attention)
        loss = masked_diffusion_loss(
            logits, ids, corruption, normalization="token", t=t, schedule=schedule
        )
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return elapsed(start, clocks()), losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--lightning-defaults",
        action="store_true",
        help="keep Lightning's default logger and progress bar",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    layout = VocabLayout(text_size=args.text_size, speech_size=512, image_size=512)
    torch.manual_seed(0)
    backbone = NativeTransformer(
        vocab_size=layout.vocab_size,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
    )
    initial = copy.deepcopy(backbone.state_dict())
    total = args.warmup + args.steps
    batches = make_batches(layout, total, args.batch, args.seq)
    loader: DataLoader[Any] = DataLoader(batches, batch_size=None, shuffle=False)  # type: ignore[arg-type]
    tokens = args.steps * args.batch * args.seq

    def fresh_module() -> OmniDiffusionModule:
        backbone.load_state_dict(initial)
        backbone.zero_grad(set_to_none=True)  # no gradient left over from the previous run
        return OmniDiffusionModule(
            backbone,
            layout,
            schedule=LinearSchedule(),
            time_distribution=UniformTime(),
            mask_strategy=AttenuatedTailPadMasking(),
            optimizer=AdamWConfig(lr=1e-3, weight_decay=0.01),
            lr_schedule=WarmupCosine(warmup_steps=2, min_lr_ratio=0.1),
        )

    params = sum(p.numel() for p in backbone.parameters())
    print(
        f"model: {params / 1e6:.2f} M parameters (hidden {args.hidden}, {args.layers} layers, "
        f"vocab {layout.vocab_size}); batch {args.batch} x {args.seq} tokens; "
        f"{args.steps} timed steps after {args.warmup} warm-up, {args.rounds} rounds; "
        f"device {args.device}, {args.threads} thread(s)"
    )
    sides = ("bare PyTorch loop", "Lightning Trainer")
    # wall-clock and CPU-time rates: on a shared machine other processes slow the wall clock
    # of both sides unevenly, while the CPU time of this (single-threaded) process counts
    # only its own work, Lightning's included
    rates: dict[str, dict[str, list[float]]] = {
        clock: {side: [] for side in sides} for clock in ("wall", "cpu")
    }
    max_diff = 0.0
    for _ in range(args.rounds):
        (wall, cpu), bare_losses = run_bare(
            fresh_module(), loader, args.steps, args.warmup, args.device
        )
        rates["wall"][sides[0]].append(tokens / wall)
        rates["cpu"][sides[0]].append(tokens / cpu)
        (wall, cpu), pl_losses = run_lightning(
            fresh_module(), loader, args.steps, args.warmup, args.device, args.lightning_defaults
        )
        rates["wall"][sides[1]].append(tokens / wall)
        rates["cpu"][sides[1]].append(tokens / cpu)
        diffs = [abs(a - b) for a, b in zip(bare_losses, pl_losses, strict=True)]
        max_diff = max(max_diff, *diffs)
    ratio = float("nan")
    for clock, unit in (("wall", "tokens/s"), ("cpu", "tokens per CPU-second")):
        print(f"-- {clock} clock")
        median = {side: statistics.median(r) for side, r in rates[clock].items()}
        for side, rate in median.items():
            spread = ", ".join(f"{r:,.0f}" for r in rates[clock][side])
            print(f"{side:>18}: {rate:>10,.0f} {unit} (rounds: {spread})")
        ratio = median[sides[1]] / median[sides[0]]
        print(f"{'Lightning / bare':>18}: {ratio:.3f}  (overhead {100 * (1 - ratio):+.1f}%)")
        # both sides of a round run back to back: the median of per-round ratios is less
        # sensitive to load that drifts over the run than the ratio of the medians
        paired = statistics.median(
            pl / bare
            for pl, bare in zip(rates[clock][sides[1]], rates[clock][sides[0]], strict=True)
        )
        print(f"{'paired ratio':>18}: {paired:.3f}  (median over rounds of Lightning / bare)")
    print(f"{'max |loss diff|':>18}: {max_diff:.2e} (same batches, draws and updates)")
    if not math.isfinite(ratio):
        raise SystemExit("non-finite throughput")


if __name__ == "__main__":
    main()
