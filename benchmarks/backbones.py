"""Backbones: torch.compile, gradient checkpointing, bf16, and native vs transformers.

Prints, for one small Qwen2-shaped model (all figures measured side by side in this run):

- eager vs `torch.compile(fullgraph=True)` time of a training step (forward + backward, with
  a padding mask), the compile time, and the largest logit difference (fullgraph proves the
  forward has no graph break);
- bytes of activations saved for the backward pass with and without gradient checkpointing
  (counted with `torch.autograd.graph.saved_tensors_hooks`), and the step-time ratio;
- bf16 vs float32 logits (largest difference) and step time;
- NativeTransformer vs HFBackbone (transformers' Qwen2 with `is_causal=False`) forward
  time on the same weights, and their largest logit difference.

Usage: `python benchmarks/backbones.py [--device cuda] [--no-compile]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

from omni_blocks.backbones import HFBackbone, NativeTransformer


def compare(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function; calls alternate so that load drifts hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def saved_bytes(net: NativeTransformer, x: torch.Tensor, mask: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, mask).float().logsumexp(-1).mean().backward()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dims = {
        "vocab_size": 1024,
        "hidden_size": args.hidden,
        "intermediate_size": 3 * args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": max(args.hidden // 32, 2),
        "num_key_value_heads": 2,
        "rope_theta": 1e6,
    }
    net = NativeTransformer(**dims).to(device).train()
    x = torch.randint(0, 1024, (args.batch, args.seq), device=device)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, args.seq // 2 :] = False  # one padded row
    print(f"model: {dims}, batch {args.batch} x seq {args.seq}, device {device}")

    def train_step(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            model.zero_grad(set_to_none=True)
            loss = model(x, mask).float().logsumexp(-1).mean()
            loss.backward()
            return loss

        return run

    plain_bytes = saved_bytes(net, x, mask)
    ckpt_net = NativeTransformer(**dims, gradient_checkpointing=True).to(device).train()
    ckpt_net.load_state_dict(net.state_dict())
    ckpt_bytes = saved_bytes(ckpt_net, x, mask)
    half = NativeTransformer(**dims).to(device)
    half.load_state_dict(net.state_dict())
    half = half.to(torch.bfloat16).train()
    steps = {
        "eager": train_step(net),
        "checkpointed": train_step(ckpt_net),
        "bf16": train_step(half),
    }
    if not args.no_compile:
        compiled = torch.compile(net, fullgraph=True)
        start = time.perf_counter()
        compiled(x, mask).float().sum().backward()
        print(f"torch.compile(fullgraph=True): compiled in {time.perf_counter() - start:.1f} s")
        with torch.no_grad():
            diff = (compiled(x, mask) - net(x, mask)).abs().max().item()
        print(f"  max |logit diff| compiled vs eager: {diff:.2e}")
        steps["compiled"] = train_step(compiled)
    times = compare(steps, args.repeats)
    eager = times["eager"]
    for name, seconds in times.items():
        print(f"train step {name:>12}: {seconds * 1e3:8.1f} ms  ({seconds / eager:.2f}x eager)")
    print(
        f"gradient checkpointing: activations saved for backward {plain_bytes / 2**20:.1f} MiB "
        f"-> {ckpt_bytes / 2**20:.1f} MiB ({plain_bytes / ckpt_bytes:.1f}x less)"
    )
    with torch.no_grad():
        net.eval()
        half.eval()
        diff = (half(x, mask).float() - net(x, mask)).abs().max().item()
        scale = net(x, mask).abs().max().item()
    print(f"bf16 vs fp32: max |logit diff| {diff:.3f} (max |logit| {scale:.2f})")

    with tempfile.TemporaryDirectory() as folder:
        net.save_pretrained(folder)
        hf = HFBackbone(folder).to(device).eval()
        with torch.no_grad():
            fwd = compare({"native": lambda: net(x, mask), "hf": lambda: hf(x, mask)}, args.repeats)
            native_s, hf_s = fwd["native"], fwd["hf"]
            diff = (hf(x, mask) - net(x, mask))[mask].abs().max().item()
    print(
        f"forward: native {native_s * 1e3:.1f} ms, transformers Qwen2 {hf_s * 1e3:.1f} ms "
        f"(hf / native = {hf_s / native_s:.2f}), max |logit diff| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
