"""Sampler overhead and threshold-vs-fixed-step decoding.

1. Overhead: the time of a full `MaskedDiffusionSampler` run divided by the time of the same
   number of bare `NativeTransformer` forward passes on the same inputs (a small model, batch
   of 4 sequences of 256 tokens, CPU). Everything the sampler adds (scoring, penalties,
   planning, bookkeeping) shows up as the ratio above 1. Target: <= 1.05 for the default
   sampler. Both run in one thread and are timed by the process's CPU time (what other
   processes on a shared machine do to the wall clock does not count), alternating; the
   ratio is the median of the per-pair ratios. A second ratio splits each sampler run
   itself into the forward passes it made and everything else (total / its own forward
   passes), which is immune to run-to-run noise. A third runs the sampler on a denoiser
   that returns stored logits (no forward pass at all) and divides its time by the forward
   passes': `1 + that` is the overhead with nothing else mixed in.
2. Threshold vs fixed steps: NFE and sample quality of Fast-dLLM's threshold planner against
   fixed-step schedules, with the exact denoiser of a small data set
   ([`MixtureDenoiser`][omni_blocks.testing.MixtureDenoiser]): quality is the share of
   samples that are exactly a data sequence (1.0 for one token per step).

Run: `PYTHONPATH=src python benchmarks/sampler_overhead.py [--threads 1] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from omni_blocks import Modality, VocabLayout
from omni_blocks.backbones import NativeTransformer
from omni_blocks.sampling import (
    FixedCountPlanner,
    MaskedDiffusionSampler,
    SchedulePlanner,
    ThresholdPlanner,
    TokenChoice,
    fast_dllm_sampler,
    llada_sampler,
    omni_diffusion_sampler,
)
from omni_blocks.testing import MixtureDenoiser


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds this process spends in `fn` (robust to other processes' load)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def bare(net: NativeTransformer, ids: torch.Tensor, attention: torch.Tensor, n: int) -> None:
    """`n` forward passes, each output dropped at once (as the sampler does)."""
    for _ in range(n):
        net(ids, attention)


def small_model(layout: VocabLayout, head_scale: float) -> NativeTransformer:
    """A 4-layer NativeTransformer; `head_scale` sharpens its (untrained) predictions."""
    model = NativeTransformer(
        vocab_size=layout.vocab_size,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    return model


class TimedModel:
    """Calls a model and adds up the CPU time of its forward passes."""

    def __init__(self, net: NativeTransformer) -> None:
        self.net = net
        self.seconds = 0.0

    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        start = time.process_time()
        logits = self.net(ids, attention_mask)
        self.seconds += time.process_time() - start
        return logits


def overhead(repeats: int, num_steps: int, head_scale: float) -> None:
    layout = VocabLayout(text_size=1024, speech_size=0, image_size=1024)
    batch, seq, prompt = 4, 256, 32
    gen = torch.Generator().manual_seed(0)
    ids = torch.full((batch, seq), layout.mask_id)
    ids[:, :prompt] = torch.randint(0, 1024, (batch, prompt), generator=gen)
    # different prompt lengths per row: left padding, hidden by the attention mask
    attention = torch.ones(batch, seq, dtype=torch.bool)
    for row, pad in enumerate([0, 4, 9, 17]):
        ids[row, :pad] = layout.pad_id
        attention[row, :pad] = False
    # An untrained network predicts near-uniform distributions, which a trained one does
    # not (and which make top-p sort the whole vocabulary): its output head is scaled so
    # that predictions are about as peaked as a trained model's. Row "flat" keeps it as is.
    torch.manual_seed(0)
    model = small_model(layout, head_scale)
    flat = small_model(layout, 1.0)
    with torch.no_grad():
        peak = model(ids, attention).softmax(-1).amax(-1).mean().item()
        flat_peak = flat(ids, attention).softmax(-1).amax(-1).mean().item()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"model: NativeTransformer {params:.1f}M parameters, vocab {layout.vocab_size}; "
        f"batch {batch} x {seq} tokens ({seq - prompt} to generate), {num_steps} steps, "
        f"{torch.get_num_threads()} thread(s); mean max probability {peak:.2f} "
        f"(head x{head_scale:g}), flat model {flat_peak:.4f}"
    )

    cases = {
        "default (max-prob, schedule)": (
            MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=num_steps)),
            model,
            None,
        ),
        "omni-diffusion (entropy, top-p, tail penalty)": (
            omni_diffusion_sampler(num_steps, position_penalty=2.0),
            model,
            None,
        ),
        "llada (blocks of 32), image ids only": (
            llada_sampler(num_steps, block_length=32),
            model,
            Modality.IMAGE,
        ),
        "sampled tokens (T=1, top-k 50)": (
            MaskedDiffusionSampler(
                planner=SchedulePlanner(num_steps=num_steps), choice=TokenChoice(1.0, top_k=50)
            ),
            model,
            None,
        ),
        "omni-diffusion on the flat model": (
            omni_diffusion_sampler(num_steps, position_penalty=2.0),
            flat,
            None,
        ),
    }
    print(
        f"{'sampler':46s} {'sampler':>8s} {'bare':>8s} {'ratio':>6s} {'in-run':>7s} "
        f"{'alone':>6s}   (CPU seconds; in-run: total / its own forward passes; alone: "
        "1 + sampler on stored logits / forward passes)"
    )
    with torch.no_grad():
        for name, (sampler, net, modality) in cases.items():
            net(ids, attention)  # warm-up
            runs, bares, ratios, splits, alone = [], [], [], [], []
            for r in range(repeats):
                timed_net = TimedModel(net)
                start = time.process_time()
                out = sampler(
                    timed_net,
                    ids,
                    layout=layout,
                    modality=modality,
                    attention_mask=attention,
                    generator=torch.Generator().manual_seed(r),
                )
                runs.append(time.process_time() - start)
                bares.append(timed(lambda net=net, n=out.nfe: bare(net, ids, attention, n)))
                ratios.append(runs[-1] / bares[-1])
                splits.append(runs[-1] / timed_net.seconds)
                stored = net(ids, attention)
                alone.append(
                    1
                    + timed(
                        lambda sampler=sampler, stored=stored, modality=modality, r=r: sampler(
                            lambda i, m=None, stored=stored: stored,
                            ids,
                            layout=layout,
                            modality=modality,
                            attention_mask=attention,
                            generator=torch.Generator().manual_seed(r),
                        )
                    )
                    / bares[-1]
                )
            print(
                f"{name:46s} {statistics.median(runs):8.3f} {statistics.median(bares):8.3f} "
                f"{statistics.median(ratios):6.3f} {statistics.median(splits):7.3f} "
                f"{statistics.median(alone):6.3f}"
            )


def threshold_vs_steps(samples: int) -> None:
    layout = VocabLayout(text_size=16, speech_size=0, image_size=0)
    gen = torch.Generator().manual_seed(0)
    # 1024 sequences of 32 tokens from a sticky random walk over 8 symbols (each token is its
    # predecessor -1, +0 or +1 mod 8): some positions are easy given their neighbours, and
    # with one prompt token the continuation stays uncertain for a while
    count, length, prompt = 1024, 32, 1
    moves = torch.randint(-1, 2, (count, length), generator=gen)
    moves[:, 0] = torch.randint(0, 8, (count,), generator=gen)
    data = moves.cumsum(-1).remainder(8)
    model = MixtureDenoiser(data, mask_id=layout.mask_id, vocab_size=layout.vocab_size)
    rows = torch.randint(0, count, (samples,), generator=gen)
    ids = data[rows].clone()
    ids[:, prompt:] = layout.mask_id
    print(
        f"\nexact denoiser of {count} sequences x {length} tokens; {samples} samples, "
        f"{length - prompt} tokens to generate each, temperature 1; quality = share of samples "
        "that are a data sequence; NFE for the batch, steps per row on average"
    )
    print(f"{'decoding':36s} {'NFE':>5s} {'steps/row':>10s} {'quality':>8s}")
    cases = {
        "one token per step": MaskedDiffusionSampler(planner=FixedCountPlanner(1)),
        **{
            f"schedule, {n} steps": MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=n))
            for n in (16, 8, 4)
        },
        **{
            f"threshold {t}": MaskedDiffusionSampler(planner=ThresholdPlanner(t))
            for t in (0.99, 0.9, 0.8)
        },
        "threshold 0.9, blocks of 8": fast_dllm_sampler(0.9, block_length=8),
    }
    for name, sampler in cases.items():
        sampler = replace(sampler, choice=TokenChoice(temperature=1.0))
        out = sampler(model, ids, layout=layout, generator=torch.Generator().manual_seed(1))
        assert out.trajectory is not None
        per_row = (out.trajectory.max(-1).values + 1).float().mean().item()
        if not isinstance(sampler.planner, FixedCountPlanner | SchedulePlanner):
            # adaptive: a row's steps are the distinct steps at which it unmasked something
            per_row = sum(len(set(r[r >= 0].tolist())) for r in out.trajectory) / samples
        quality = model.matches(out.ids).float().mean().item()
        print(f"{name:36s} {out.nfe:5d} {per_row:10.1f} {quality:8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--head-scale", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overhead(args.repeats, args.steps, args.head_scale)
    threshold_vs_steps(args.samples)


if __name__ == "__main__":
    main()
