"""Packed against padded training on the miniature recipe's real batches.

The miniature (`examples/mini_omni`) trains on a mixture of eight tasks whose sequences run
from a few dozen tokens (ASR of a spoken digit) to over a hundred (inpainting an image): a
batch padded to its longest example is mostly padding. This script takes the miniature's
own final-stage batches (its corpus, tokenizers, templates, mixture and collator, from the
cache that `make demo` fills) and times training steps of the miniature's model
(`NativeTransformer`, 4 layers x 128) on the same batches with

- `NoPacking()`: one example per row, padded (the miniature's setting);
- `GreedyPacking()`: examples packed first-fit-decreasing into rows of the longest length,

alternating the two in rounds, and prints the real (non-padding) tokens per second of each,
the speed-up, and the ideal speed-up `padded tokens / real tokens` of these batches (what a
packing with no padding and no attention overhead would give). Goal: the speed-up within 10%
of the ideal. Both sides see identical corruptions (same seeds), and the script prints the
largest difference between their losses.

Run: `PYTHONPATH=src python benchmarks/packing.py [--batches 40] [--rounds 3] [--threads 1]`
(the first run builds the corpus and tokenizers, a few minutes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from mini_omni.corpus import load_or_build_corpus  # noqa: E402
from mini_omni.presets import PRESETS  # noqa: E402
from mini_omni.run import INSTRUCTIONS, STAGES, backbone  # noqa: E402
from mini_omni.tasks import build_task_data, make_templates  # noqa: E402
from mini_omni.tokenizing import build_tokenizers  # noqa: E402

from omni_blocks.data import (  # noqa: E402
    GreedyPacking,
    NoPacking,
    OmniDataModule,
    Packing,
    TaskMixture,
    TemplateDataset,
)
from omni_blocks.masking import AttenuatedTailPadMasking  # noqa: E402
from omni_blocks.module import OmniDiffusionModule  # noqa: E402
from omni_blocks.schedules import AntitheticTime  # noqa: E402


def miniature_batches(workdir: Path, count: int, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """`count` batches of the miniature's final stage, as its trainer would see them."""
    preset = PRESETS["mini"]
    corpus = load_or_build_corpus(workdir, progress=False)
    tokenizers = build_tokenizers(corpus, workdir, extra_texts=list(INSTRUCTIONS.values()))
    tasks = build_task_data(corpus, tokenizers, pairings=preset.pairings, seed=seed)
    templates = make_templates(tokenizers)
    mixture = STAGES[-1].mixture
    datasets = {t: TemplateDataset(tasks.train[t], templates[t]) for t in mixture}
    train = TaskMixture(datasets, mixture, num_samples=count * preset.batch_size, seed=seed)
    data = OmniDataModule(
        tokenizers.layout,
        train,
        batch_size=preset.batch_size,
        seed=seed,
        extra_tail_pad=(1, 8),
        pad_targets=False,
    )
    data.setup("fit")
    loader: DataLoader[Any] = data.train_dataloader()
    return tokenizers, [batch for _, batch in zip(range(count), loader, strict=False)]


def train_steps(
    module: OmniDiffusionModule, batches: list[dict[str, Any]], optimizer: torch.optim.Optimizer
) -> tuple[float, list[float]]:
    """CPU seconds of one forward, backward and AdamW step per batch; the losses."""
    losses = []
    start = time.process_time()
    for i, batch in enumerate(batches):
        out = module.step(batch, torch.Generator().manual_seed(i))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
    return time.process_time() - start, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "mini_omni")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--length", type=int, default=96, help="packed row length (0: the longest example)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizers, batches = miniature_batches(args.workdir, args.batches, args.seed)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    args.length = args.length or None
    plans = [GreedyPacking(args.length).plan(b["attention_mask"]) for b in batches]
    packed = sum(
        b["attention_mask"].numel() if p is None else p.source.numel()
        for b, p in zip(batches, plans, strict=True)
    )
    rows = sum(len(b["input_ids"]) for b in batches)
    packed_rows = sum(
        len(b["input_ids"]) if p is None else p.rows for b, p in zip(batches, plans, strict=True)
    )
    print(
        f"{len(batches)} batches of the miniature's final stage: {rows} examples, {real} real "
        f"tokens; padded: {padded} positions ({real / padded:.0%} real); packed: "
        f"{packed_rows} rows, {packed} positions ({real / packed:.0%} real)"
    )
    print(f"ideal speed-up (padded / real tokens): {padded / real:.2f}x")

    policies: dict[str, Packing] = {"padded": NoPacking(), "packed": GreedyPacking(args.length)}
    seconds: dict[str, list[float]] = {name: [] for name in policies}
    losses: dict[str, list[float]] = {}

    def fresh(packing: Packing) -> tuple[OmniDiffusionModule, torch.optim.Optimizer]:
        torch.manual_seed(0)
        module = OmniDiffusionModule(  # the miniature's training settings
            backbone(tokenizers, PRESETS["mini"]),
            tokenizers.layout,
            time_distribution=AntitheticTime(),
            mask_strategy=AttenuatedTailPadMasking(pad_mask_ratio=0.6),
            normalization="sequence",
            packing=packing,
            seed=0,
        )
        module.train()
        return module, torch.optim.AdamW(module.parameters(), lr=1e-3)

    for _ in range(args.rounds):
        for name, packing in policies.items():
            train_steps(*fresh(packing)[:1], batches[:2], fresh(packing)[1])  # warm-up
            module, optimizer = fresh(packing)
            took, losses[name] = train_steps(module, batches, optimizer)
            seconds[name].append(took)
    speeds = {name: real / statistics.median(s) for name, s in seconds.items()}
    for name, speed in speeds.items():
        print(
            f"{name:7s} {statistics.median(seconds[name]):7.2f} CPU s  {speed:8.0f} real tokens/s"
        )
    ratio = speeds["packed"] / speeds["padded"]
    print(
        f"speed-up {ratio:.2f}x of an ideal {padded / real:.2f}x ({ratio / (padded / real):.0%} "
        "of ideal)"
    )
    gap = max(abs(a - b) for a, b in zip(losses["padded"], losses["packed"], strict=True))
    print(f"largest loss difference over {len(batches)} steps: {gap:.2e}")


if __name__ == "__main__":
    main()
