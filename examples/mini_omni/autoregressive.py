"""The autoregressive baseline: the same backbone with causal attention, decoded greedily.

The diffusion model and this baseline share everything but the attention pattern and the
objective: the same [`NativeTransformer`][omni_blocks.backbones.NativeTransformer] shape
(built with `causal=True, shift_logits=True`, so position `i` predicts token `i` from the
tokens before it), the same task sequences and batches (prompt, target, tail pads), and
the same optimiser. Training is teacher forcing: cross-entropy of every target token
given the true tokens before it. Decoding is greedy, one token per forward pass, restricted
to the target modality's ids (as the diffusion sampler is), and stops at the end token, so
its number of function evaluations (NFE) is the length of the response plus one.

No KV cache is used here (each step recomputes the prefix): that changes the wall time,
not the NFE, which is what the comparison counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from omni_blocks.backbones import NativeTransformer
from omni_blocks.optim import AdamWConfig, ConstantLR, LRSchedule, OptimizerFactory
from omni_blocks.vocab import Modality, VocabLayout


def next_token_loss(logits: Tensor, input_ids: Tensor, target_mask: Tensor) -> Tensor:
    """Mean cross-entropy of the target tokens given the tokens before them.

    `logits` are aligned (position `i` predicts token `i` from tokens `< i`, which is what a
    causal backbone with `shift_logits=True` returns); `target_mask` marks the target region
    and its tail pads, the same positions the diffusion loss covers.
    """
    return F.cross_entropy(logits[target_mask].float(), input_ids[target_mask])


@dataclass
class GreedyOutput:
    """Generated target regions (`(batch, max_new_tokens)`, pad after the end) and NFE."""

    ids: Tensor
    nfe: Tensor


@torch.no_grad()
def greedy_decode(
    model: NativeTransformer,
    prompts: list[Tensor],
    *,
    layout: VocabLayout,
    modality: Modality,
    max_new_tokens: int,
) -> GreedyOutput:
    """Decode a batch of prompts token by token, most likely token first.

    Prompts are left-padded (positions are counted over real tokens, so padding does not
    change the result). Each step appends a placeholder (`mask_id`) and reads the logits at
    its position, which, the attention being causal, depend on the tokens before it only.

    Args:
        model: a causal backbone with aligned logits (`causal=True, shift_logits=True`).
        prompts: 1-D global ids, one per row (everything before the target region).
        layout: gives the modality's allowed ids, the end token and the pad id.
        modality: the target modality; other ids are never emitted.
        max_new_tokens: the length of the target region.

    Returns:
        The target regions and, per row, the forward passes until its end token (inclusive).
    """
    if not model.causal:
        raise ValueError("greedy_decode needs a causal backbone (NativeTransformer(causal=True))")
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    batch = len(prompts)
    ids = torch.full((batch, width), layout.pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((batch, width), dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt.to(device)
        attention[row, width - len(prompt) :] = True
    allowed = layout.logit_mask(modality, vocab_size=model.vocab_size, device=device)
    stop = torch.tensor(
        sorted({layout.end_id(modality), layout.pad_id, layout.eos_id}), device=device
    )
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    nfe = torch.zeros(batch, dtype=torch.long, device=device)
    placeholder = torch.full((batch, 1), layout.mask_id, dtype=torch.long, device=device)
    awake = torch.ones((batch, 1), dtype=torch.bool, device=device)
    out = []
    for _ in range(max_new_tokens):
        logits = model(torch.cat([ids, placeholder], 1), torch.cat([attention, awake], 1))
        scores = logits[:, -1].float().masked_fill(~allowed, float("-inf"))
        token = torch.where(done, layout.pad_id, scores.argmax(dim=-1))
        nfe += (~done).long()
        done = done | torch.isin(token, stop)
        out.append(token)
        ids = torch.cat([ids, token[:, None]], 1)
        attention = torch.cat([attention, awake], 1)
        if bool(done.all()):
            break
    generated = torch.stack(out, dim=1)
    if generated.shape[1] < max_new_tokens:
        rest = max_new_tokens - generated.shape[1]
        generated = F.pad(generated, (0, rest), value=layout.pad_id)
    return GreedyOutput(ids=generated.cpu(), nfe=nfe.cpu())


class AutoregressiveModule(L.LightningModule):
    """Teacher-forced training of a causal backbone on the diffusion model's batches.

    Takes the same optimiser and learning-rate blocks as
    [`OmniDiffusionModule`][omni_blocks.module.OmniDiffusionModule], so that both models
    are optimised alike.

    Args:
        backbone: a `NativeTransformer` built with `causal=True, shift_logits=True`.
        optimizer: builds the optimiser at fit time.
        lr_schedule: the learning-rate multiplier per optimiser step.
    """

    def __init__(
        self,
        backbone: NativeTransformer,
        optimizer: OptimizerFactory = AdamWConfig(),  # noqa: B008 (frozen dataclasses)
        lr_schedule: LRSchedule = ConstantLR(),  # noqa: B008
    ) -> None:
        super().__init__()
        if not (backbone.causal and backbone.shift_logits):
            raise ValueError(
                "the autoregressive baseline needs NativeTransformer(causal=True, "
                "shift_logits=True)"
            )
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self.backbone(batch["input_ids"], batch["attention_mask"])
        loss = next_token_loss(logits, batch["input_ids"], batch["target_mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory.build(self)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = self.lr_schedule
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule.factor(step, total)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
