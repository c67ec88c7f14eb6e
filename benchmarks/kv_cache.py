"""Fast-dLLM's prefix and dual cache against the uncached sampler, by prompt length.

An 8-layer `NativeTransformer` (Dream's shifted logits, grouped-query attention) generates
256 tokens after prompts of 256, 1,024 and 2,048 tokens, in blocks of 32, with

- fixed steps: a schedule of 4 or 8 steps per block (8 blocks), and one token per step
  (32 steps a block: LLaDA's setting, the baseline of Fast-dLLM's speed-ups);
- threshold: Fast-dLLM's confidence threshold 0.9 inside each block;

each with no cache, the prefix cache and the dual cache (refreshed once per block). For each
it prints the generated tokens per second (wall clock, one process), the NFE (forward passes,
a cached one counting as one), the speed-up against the uncached fixed-step run at the same
prompt length, and the share of generated tokens equal to the uncached run of the same
planner. Every configuration runs in this one process, one after another, on the same
inputs, so the ratios are side by side.

The weights are random (speed does not depend on them) with the output head scaled so that
predictions are about as peaked as a trained model's; the NFE of threshold decoding, which
follows the model's confidence, is therefore only indicative here, and the token agreement
of a random model is a lower bound (its predictions have no structure for the cache to
keep). The quality of cached decoding on real tasks is measured by the miniature recipe.

Run: `PYTHONPATH=src python benchmarks/kv_cache.py [--threads 2] [--plot kv_cache.png]`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from omni_blocks import VocabLayout
from omni_blocks.backbones import NativeTransformer
from omni_blocks.sampling import (
    BlockPlanner,
    DecodingCache,
    DualCache,
    MaskedDiffusionSampler,
    NoCache,
    PrefixCache,
    SchedulePlanner,
    ThresholdPlanner,
)

GENERATED, BLOCK = 256, 32


def model(layout: VocabLayout, layers: int, hidden: int, head_scale: float) -> NativeTransformer:
    torch.manual_seed(0)
    net = NativeTransformer(
        vocab_size=layout.vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=max(1, hidden // 64),
        shift_logits=True,
        max_position_embeddings=4096,
    ).eval()
    with torch.no_grad():
        net.lm_head.weight.mul_(head_scale)
    return net


def run(
    sampler: MaskedDiffusionSampler, net: NativeTransformer, ids: torch.Tensor, layout: VocabLayout
) -> tuple[torch.Tensor, int, float]:
    start = time.perf_counter()
    out = sampler(net, ids, layout=layout, generator=torch.Generator().manual_seed(0))
    return out.ids, out.nfe, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps-per-block", type=int, nargs="+", default=[4, 8, 32])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--head-scale", type=float, default=30.0)
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = VocabLayout(text_size=1024, speech_size=0, image_size=1024)
    net = model(layout, args.layers, args.hidden, args.head_scale)
    params = sum(p.numel() for p in net.parameters()) / 1e6
    planners = {
        f"fixed {k}/block": BlockPlanner(SchedulePlanner(num_steps=k * GENERATED // BLOCK), BLOCK)
        for k in args.steps_per_block
    }
    planners[f"threshold {args.threshold}"] = BlockPlanner(ThresholdPlanner(args.threshold), BLOCK)
    caches: dict[str, DecodingCache] = {
        "none": NoCache(),
        "prefix": PrefixCache(),
        "dual": DualCache(),
    }
    print(
        f"NativeTransformer, {args.layers} layers x {args.hidden} wide ({params:.1f}M "
        f"parameters), vocab {layout.vocab_size}; {GENERATED} tokens generated in blocks of "
        f"{BLOCK}; batch 1; {args.threads} thread(s); wall-clock seconds. Speed-up: against "
        "the uncached first planner at the same prompt length; agree: share of generated "
        "tokens equal to the uncached run of the same planner (random weights: a lower bound)"
    )
    print(
        f"{'prompt':>6s}  {'planner':18s} {'cache':7s} {'NFE':>4s} {'seconds':>8s} "
        f"{'tokens/s':>9s} {'speed-up':>9s} {'agree':>6s}"
    )
    results: dict[tuple[str, str], list[float]] = {}
    gen = torch.Generator().manual_seed(1)
    for prompt in args.prompts:
        ids = torch.full((1, prompt + GENERATED), layout.mask_id)
        ids[:, :prompt] = torch.randint(0, layout.text_size, (1, prompt), generator=gen)
        with torch.no_grad():
            net(ids[:, :64])  # warm-up
            peak = net(ids).softmax(-1)[0, prompt:].amax(-1)
        print(
            f"prompt {prompt}: the model's max probability at the masked positions: mean "
            f"{peak.mean().item():.2f}, above {args.threshold}: "
            f"{(peak > args.threshold).float().mean().item():.0%}"
        )
        base_speed = None
        for planner_name, planner in planners.items():
            reference = None
            for cache_name, cache in caches.items():
                sampler = replace(MaskedDiffusionSampler(planner=planner), cache=cache)
                out, nfe, seconds = run(sampler, net, ids, layout)
                speed = GENERATED / seconds
                base_speed = base_speed or speed
                if reference is None:
                    reference = out
                agree = (out[:, prompt:] == reference[:, prompt:]).float().mean().item()
                results.setdefault((planner_name, cache_name), []).append(speed)
                print(
                    f"{prompt:6d}  {planner_name:18s} {cache_name:7s} {nfe:4d} {seconds:8.2f} "
                    f"{speed:9.1f} {speed / base_speed:8.1f}x {agree:6.3f}"
                )
    if args.plot is not None:
        plot(args.prompts, results, args.plot)


def plot(prompts: list[int], results: dict[tuple[str, str], list[float]], path: Path) -> None:
    """Tokens per second against prompt length: colour by planner, line style by cache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    styles = {"none": "-", "prefix": "--", "dual": ":"}
    planners = list(dict.fromkeys(planner for planner, _ in results))
    colors = dict(zip(planners, plt.cm.tab10.colors, strict=False))
    for (planner, cache), speeds in results.items():
        ax.plot(
            prompts, speeds, styles[cache], marker="o", color=colors[planner],
            label=f"{planner}, {cache}",
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(prompts, [str(p) for p in prompts])
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("generated tokens / second")
    ax.set_title("Prefix and dual cache against prompt length (CPU, random weights)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
