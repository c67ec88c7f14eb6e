"""Small image tokenizers on the digits, side by side: PatchVQTokenizer vs a conv VQ-VAE.

Why the offline recipe tokenizes digits with `PatchVQTokenizer` (k-means codebook of
image patches) rather than a conv VQ-VAE: this script trains both on the same 1,497
digits of `sklearn.datasets.load_digits` (300 held out) and prints, per configuration,

- fit time on this machine's CPU,
- held-out reconstruction MSE per pixel (values in [0, 1]) and its ratio to PatchVQ's,
- the fraction of held-out digits whose codes survive encode -> decode -> encode.

The conv VQ-VAE is a standard one (defined here, it is not part of the library): conv
encoder / decoder with residual blocks, a codebook updated by exponential moving averages
(decay 0.95, dead codes restarted from the batch), straight-through gradients,
commitment loss 0.25, Adam with a one-cycle schedule.

    python benchmarks/image_tokenizers.py                     # about a minute on 1 core
    python benchmarks/image_tokenizers.py --figure docs/images/digits_reconstructions.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from sklearn.datasets import load_digits
from torch import Tensor, nn

from omni_blocks.tokenizers import PatchVQTokenizer


def digits_split() -> tuple[Tensor, Tensor, Tensor]:
    """(train images, held-out images, held-out labels); images in [0, 1], (n, 1, 8, 8)."""
    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)[:, None]
    labels = torch.tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[order[300:]], images[order[:300]], labels[order[:300]]


class _Res(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(F.silu(self.a(F.silu(x))))


class ConvVQVAE(nn.Module):
    """8x8 -> (grid x grid) codes with `downs` stride-2 convs; EMA codebook."""

    def __init__(self, grid: int, codes: int, width: int = 32, dim: int = 8) -> None:
        super().__init__()
        downs = {4: 1, 2: 2}[grid]
        enc: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv2d(dim, width, 3, padding=1), _Res(width)]
        for _ in range(downs):
            enc += [nn.SiLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
            dec += [nn.SiLU(), nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)]
        enc += [_Res(width), nn.SiLU(), nn.Conv2d(width, dim, 1)]
        dec += [_Res(width), nn.SiLU(), nn.Conv2d(width, 1, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.grid, self.codes, self.dim = grid, codes, dim
        self.register_buffer("codebook", torch.zeros(codes, dim))
        self.register_buffer("ema_count", torch.ones(codes))
        self.register_buffer("ema_sum", torch.zeros(codes, dim))

    def _flat(self, images: Tensor) -> Tensor:
        return rearrange(self.encoder(images * 2 - 1), "b d h w -> (b h w) d")

    def _nearest(self, flat: Tensor) -> Tensor:
        return torch.cdist(flat, self.codebook).argmin(dim=1)

    def fit(self, images: Tensor, epochs: int, batch: int = 128, decay: float = 0.95) -> None:
        opt = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()])
        steps = epochs * ((len(images) + batch - 1) // batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        with torch.no_grad():
            flat = self._flat(images[:512])
            pick = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))
            self.codebook.copy_(flat[pick[: self.codes]])
            self.ema_sum.copy_(self.codebook)
        for _ in range(epochs):
            for idx in torch.randperm(len(images)).split(batch):
                x = images[idx]
                flat = self._flat(x)
                code = self._nearest(flat)
                with torch.no_grad():  # EMA codebook update, dead-code restart
                    onehot = F.one_hot(code, self.codes).float()
                    self.ema_count.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
                    self.ema_sum.mul_(decay).add_(onehot.T @ flat, alpha=1 - decay)
                    n = self.ema_count.sum()
                    count = (self.ema_count + 1e-5) / (n + self.codes * 1e-5) * n
                    self.codebook.copy_(self.ema_sum / count[:, None])
                    dead = self.ema_count < 1e-2
                    if bool(dead.any()):
                        fresh = flat[torch.randint(len(flat), (int(dead.sum()),))]
                        self.codebook[dead], self.ema_sum[dead] = fresh, fresh
                        self.ema_count[dead] = 1.0
                quantized = self.codebook[code]
                straight = flat + (quantized - flat).detach()
                latents = rearrange(straight, "(b h w) d -> b d h w", h=self.grid, w=self.grid)
                loss = F.mse_loss(self.decoder(latents), x * 2 - 1)
                loss = loss + 0.25 * F.mse_loss(flat, quantized)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self._nearest(self._flat(images)).view(len(images), -1)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        latents = rearrange(self.codebook[codes], "b (h w) d -> b d h w", h=self.grid)
        return ((self.decoder(latents) + 1) / 2).clamp(0, 1)


def measure(model: PatchVQTokenizer | ConvVQVAE, held_out: Tensor) -> tuple[float, float]:
    """(held-out MSE, fraction of held-out images whose codes survive a round trip)."""
    codes = model.encode(held_out)
    decoded = model.decode(codes)
    mse = float(((decoded - held_out) ** 2).mean())
    same = (model.encode(decoded) == codes).all(dim=1).float().mean()
    return mse, float(same)


def save_figure(path: Path, held_out: Tensor, labels: Tensor, models: dict[str, Tensor]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [int((labels == d).nonzero()[0]) for d in range(10)]
    rows = {"held-out digit": held_out[picks], **{k: v[picks] for k, v in models.items()}}
    fig, axes = plt.subplots(len(rows), 10, figsize=(9, 0.95 * len(rows)))
    for r, (title, images) in enumerate(rows.items()):
        for c in range(10):
            ax = axes[r, c]
            ax.imshow(images[c, 0].numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=0.17, right=0.99, top=0.98, bottom=0.02, wspace=0.08, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="conv VQ-VAE epochs")
    parser.add_argument("--figure", type=Path, help="write held-out reconstructions (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train, held_out, labels = digits_split()
    print(f"digits: {len(train)} train, {len(held_out)} held out; 1 CPU thread")
    header = f"{'tokenizer':<34}{'tokens':>7}{'codes':>7}{'fit s':>8}{'MSE':>9}{'round trip':>12}"
    print(header)
    results: dict[tuple[int, int], float] = {}
    recon: dict[str, Tensor] = {}
    for patch, codes in [(2, 64), (2, 128), (4, 256), (4, 512)]:
        tok = PatchVQTokenizer(patch_size=patch, codebook_size=codes)
        start = time.perf_counter()
        tok.fit(train)
        seconds = time.perf_counter() - start
        mse, same = measure(tok, held_out)
        grid = 8 // patch
        results[(grid, codes)] = mse
        print(
            f"{'PatchVQTokenizer':<34}{grid * grid:>7}{codes:>7}{seconds:>8.2f}{mse:>9.4f}"
            f"{same:>12.1%}"
        )
        if (patch, codes) in [(2, 64), (4, 256)]:
            recon[f"PatchVQ {grid * grid} tokens"] = tok.decode(tok.encode(held_out))
    for grid, codes in [(4, 64), (2, 256)]:
        vae = ConvVQVAE(grid, codes)
        start = time.perf_counter()
        vae.fit(train, args.epochs)
        seconds = time.perf_counter() - start
        mse, same = measure(vae, held_out)
        name = f"conv VQ-VAE ({args.epochs} epochs)"
        print(
            f"{name:<34}{grid * grid:>7}{codes:>7}{seconds:>8.2f}{mse:>9.4f}{same:>12.1%}"
            f"   MSE x{mse / results[(grid, codes)]:.2f} PatchVQ's"
        )
    if args.figure is not None:
        save_figure(args.figure, held_out, labels, recon)


if __name__ == "__main__":
    main()
