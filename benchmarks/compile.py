"""`torch.compile` of the backbone: what it costs and what it gives, for sampling and training.

The same `NativeTransformer` (4 layers x 256, vocab 2,056) eager and compiled
(`backbone.compile()`, what `OmniDiffusionModule(compile_backbone=True)` does), side by side
in this one process:

1. a forward pass on 4 x 256 tokens (the shape a sampler repeats at every step);
2. a 32-step sampling run (`MaskedDiffusionSampler`, schedule planner);
3. training steps (forward, backward, AdamW) on batches of one shape, and on batches whose
   padded length changes from batch to batch (as collated batches do), which recompile.

It prints the one-off compile time (the first call) and the median time per call after it,
and the break-even: how many calls the compile time takes to pay back. The largest
difference between the eager and compiled logits shows the two compute the same function.

Run: `PYTHONPATH=src python benchmarks/compile.py [--threads 2] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable

# a cold compile: inductor keeps compiled kernels on disk between processes, which would
# make a second run of this script look cheaper than a user's first
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))

import torch

from omni_blocks import VocabLayout
from omni_blocks.backbones import NativeTransformer
from omni_blocks.sampling import MaskedDiffusionSampler, SchedulePlanner


def clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def net_for(layout: VocabLayout) -> NativeTransformer:
    torch.manual_seed(0)
    return NativeTransformer(
        vocab_size=layout.vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def compare(
    name: str, eager: Callable[[int], object], compiled: Callable[[int], object], repeats: int
) -> None:
    first = clock(lambda: compiled(0))
    eager(0)  # warm-up
    e = statistics.median(clock(lambda i=i: eager(i)) for i in range(1, repeats + 1))
    c = statistics.median(clock(lambda i=i: compiled(i)) for i in range(1, repeats + 1))
    gain = e - c
    even = f"{first / gain:10.0f}" if gain > 0 else "     never"
    print(f"{name:44s} {first:8.2f} {e * 1e3:9.1f} {c * 1e3:9.1f} {e / c:6.2f}x {even}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = VocabLayout(text_size=1024, speech_size=0, image_size=1024)
    eager = net_for(layout).eval()
    compiled = copy.deepcopy(eager)
    compiled.compile()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1024, (4, 256), generator=gen)
    print(
        f"NativeTransformer 4 x 256, vocab {layout.vocab_size}, {args.threads} thread(s), "
        f"torch {torch.__version__}. compile: seconds of the first call (later rows reuse "
        "what earlier ones compiled); break-even: calls until the compile time is paid back"
    )
    print(
        f"{'':44s} {'compile':>8s} {'eager ms':>9s} {'comp. ms':>9s} {'speed':>7s} "
        f"{'break-even':>10s}"
    )
    with torch.no_grad():
        compare("forward, 4 x 256", lambda i: eager(ids), lambda i: compiled(ids), args.repeats)
        masked = ids.clone()
        masked[:, 32:] = layout.mask_id
        sampler = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=32))
        compare(
            "sampling run, 32 steps",
            lambda i: sampler(eager, masked, layout=layout),
            lambda i: sampler(compiled, masked, layout=layout),
            max(2, args.repeats // 2),
        )

    def trainer(net: NativeTransformer, lengths: list[int]) -> Callable[[int], object]:
        net.train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step(i: int) -> object:
            x = torch.randint(0, 1024, (8, lengths[i % len(lengths)]), generator=gen)
            loss = torch.nn.functional.cross_entropy(net(x).flatten(0, 1), x.flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return loss

        return step

    with torch.no_grad():
        gap = (eager(ids) - compiled(ids)).abs().max().item()
    print(f"largest |eager - compiled| logit: {gap:.1e}")
    for label, lengths in [
        ("training step, 8 x 128", [128]),
        ("training step, 8 x 96..128", [96, 112, 104, 128, 120]),
    ]:
        fresh = net_for(layout)
        other = copy.deepcopy(fresh)
        other.compile()
        compare(label, trainer(fresh, lengths), trainer(other, lengths), args.repeats)


if __name__ == "__main__":
    main()
