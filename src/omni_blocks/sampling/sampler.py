"""`MaskedDiffusionSampler`: confidence-ordered unmasking assembled from swappable parts.

One step, for every row at once (no per-row Python loop):

1. run the denoiser on the current sequence (twice with classifier-free guidance);
2. take the logits of the *candidates*: positions still masked in the row's current block;
3. forbid ids the row may not write: `[MASK]` itself, ids outside the layout, and, when a
   modality is given, every id outside that modality (`VocabLayout.logit_mask`);
4. token choice, first half: temperature, top-p, top-k;
5. position penalty (Omni-Diffusion's tail penalty);
6. softmax; token choice, second half: pick a token per candidate (greedy or sampled);
7. scorer: a confidence per candidate;
8. planner: which candidates to unmask; only those positions are written.

Positions that do not hold `[MASK]` (prompt, padding, known tokens of an inpainting
target) are never written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from omni_blocks.sampling.base import Denoiser, SampleOutput, Sampler
from omni_blocks.sampling.choice import TokenChoice, TokenChooser
from omni_blocks.sampling.guidance import ClassifierFreeGuidance
from omni_blocks.sampling.penalties import CandidateLogits, NoPenalty, PositionPenalty
from omni_blocks.sampling.planners import SchedulePlanner, UnmaskPlanner
from omni_blocks.sampling.scorers import ConfidenceScorer, MaxProbScorer
from omni_blocks.typing import SeqMask, TokenIds
from omni_blocks.vocab import Modality, VocabLayout

__all__ = ["MaskedDiffusionSampler"]

StackedLogits = Float[Tensor, "rows seq vocab"]
_Guidance = ClassifierFreeGuidance | None
_Gathered = Float[Tensor, "n columns"]
# candidate logits over the allowed columns (all of the vocabulary, or one modality's ids)
# logits of one batch, or with guidance of two batches stacked (conditional first)


@dataclass(frozen=True)
class MaskedDiffusionSampler(Sampler):
    """Fill `[MASK]` positions over several steps, most confident first.

    Implements the [`Sampler`][omni_blocks.sampling.base.Sampler] protocol. Every part is a
    block chosen by configuration; the presets in
    [`omni_blocks.sampling.presets`][omni_blocks.sampling.presets] reproduce Dream, LLaDA,
    Fast-dLLM and Omni-Diffusion.

    Args:
        planner: how many and which candidates to unmask per step (and blocks).
        scorer: the confidence of a candidate.
        penalty: logit adjustment by position (Omni-Diffusion's tail penalty).
        choice: temperature, top-k, top-p and the token draw.
        guidance: classifier-free guidance; None for none.
        progress: show a tqdm progress bar over the steps.

    Example:
        ```python
        import torch
        from omni_blocks import VocabLayout
        from omni_blocks.sampling import MaskedDiffusionSampler, SchedulePlanner

        layout = VocabLayout(text_size=8, speech_size=0, image_size=0)
        model = lambda ids, attention_mask: torch.randn(*ids.shape, layout.vocab_size)
        ids = torch.tensor([[1, 2, layout.mask_id, layout.mask_id]])
        out = MaskedDiffusionSampler(planner=SchedulePlanner(num_steps=2))(
            model, ids, layout=layout, generator=torch.Generator().manual_seed(0))
        assert out.nfe == 2 and not (out.ids == layout.mask_id).any()
        ```
    """

    # frozen instances, safe to share; instance defaults (not default_factory) are what
    # LightningCLI / jsonargparse can show and override
    planner: UnmaskPlanner = SchedulePlanner()  # noqa: RUF009
    scorer: ConfidenceScorer = MaxProbScorer()  # noqa: RUF009
    penalty: PositionPenalty = NoPenalty()  # noqa: RUF009
    choice: TokenChooser = TokenChoice()  # noqa: RUF009
    guidance: ClassifierFreeGuidance | None = None
    progress: bool = False

    def __call__(
        self,
        model: Denoiser,
        ids: TokenIds,
        *,
        layout: VocabLayout,
        modality: Modality | None = None,
        target: SeqMask | None = None,
        attention_mask: SeqMask | None = None,
        generator: torch.Generator | None = None,
    ) -> SampleOutput:
        """Fill the `[MASK]` positions of `ids`.

        Args:
            model: the denoiser, called as `model(ids, attention_mask)`.
            ids: prompt and target; `layout.mask_id` marks positions to generate. Rows may
                have different prompt and target lengths (pad with any non-mask id and set
                `attention_mask`).
            layout: the vocabulary layout (mask id, modality ranges).
            modality: when given, generated ids are restricted to this modality's ids plus
                its end token and pad.
            target: the response region of each row (defaults to the masked positions). It
                must contain every masked position; blocks are counted over it, and
                classifier-free guidance masks everything outside it.
            attention_mask: False at padding the model must ignore.
            generator: makes sampling deterministic; it must live on the device of `ids`.
                The sampler runs under `torch.no_grad()` and leaves the model's mode alone:
                call `model.eval()` first so that dropout is off.

        Returns:
            The filled ids, the number of denoiser evaluations, and the trajectory: the step
            at which each position was unmasked (-1 where it was not masked).

        Raises:
            TypeError: `ids`, `target` or `attention_mask` has the wrong dtype.
            ValueError: shapes disagree, an id lies outside the layout, a masked position
                lies outside `target` or under padding, or the model returns logits of the
                wrong shape.
        """
        ids, target, attention_mask, mod = _check_inputs(
            ids, layout, modality, target, attention_mask
        )
        mask_id = layout.mask_id
        x = ids.clone()
        masked = x == mask_id
        trajectory = torch.full_like(x, -1)
        if not bool(masked.any()):
            return SampleOutput(ids=x, nfe=0, trajectory=trajectory)

        block_of = self.planner.blocks(target)
        num_blocks = int(block_of.max()) + 1
        budget = self._block_budgets(block_of, target, masked, num_blocks)
        total_steps = int(budget.sum(-1).max())
        prompt = target.logical_not() if attention_mask is None else attention_mask & ~target

        allowed: _Allowed | None = None
        step = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        current = torch.full_like(step, -1)
        nfe = 0
        with torch.no_grad(), tqdm(total=total_steps, disable=not self.progress) as bar:
            for global_step in range(total_steps):
                masked = x == mask_id
                if not bool(masked.any()):
                    break
                # each row works on its first block that still has masked positions
                block = torch.where(masked, block_of, num_blocks).amin(-1)
                step = torch.where(block == current, step, 0)
                current = block
                candidates = masked & (block_of == block.unsqueeze(-1))

                logits, evaluations = self._denoise(model, x, attention_mask, prompt, mask_id)
                nfe += evaluations
                if allowed is None:
                    allowed = _Allowed(layout, mod, logits.shape[-1], x.device)
                # flat indices of the candidates: cheaper to gather with than a bool mask
                where = candidates.flatten().nonzero().squeeze(-1)
                flat = allowed.logits(logits, where, self.guidance)
                del logits  # free the full logits before the next forward pass
                flat = self.choice.filter(flat)
                if not isinstance(self.penalty, NoPenalty):  # positions only when needed
                    index, length = _masked_rank(masked, where)
                    flat = self.penalty.apply(flat, index, length)
                probs = _softmax_(flat)
                tokens = self.choice.draw(probs, generator=generator)
                scores = self.scorer.score(probs, tokens, generator=generator)

                confidence = torch.full(x.shape, -math.inf, device=x.device)
                confidence.view(-1)[where] = scores.float()
                proposal = torch.zeros_like(x)
                proposal.view(-1)[where] = allowed.token_ids(tokens).to(x.dtype)
                num_steps = budget.gather(-1, block.clamp(max=num_blocks - 1).unsqueeze(-1))
                chosen = self.planner.select(
                    confidence,
                    candidates,
                    step=step,
                    num_steps=num_steps.squeeze(-1).clamp(min=1),  # finished rows: 0
                    generator=generator,
                )
                chosen = chosen & candidates
                x = torch.where(chosen, proposal, x)
                trajectory.masked_fill_(chosen, global_step)
                step = step + 1
                bar.update(1)
            bar.total = bar.n  # adaptive planners finish before their upper bound
            bar.refresh()

        left = int((x == mask_id).sum())
        if left:
            raise RuntimeError(
                f"planner {self.planner!r} left {left} position(s) masked after its "
                f"{total_steps} step(s); a planner must unmask every candidate by the end of "
                "its block's budget"
            )
        return SampleOutput(ids=x, nfe=nfe, trajectory=trajectory)

    def _block_budgets(
        self, block_of: Int[Tensor, "batch seq"], target: SeqMask, masked: SeqMask, num_blocks: int
    ) -> Int[Tensor, "batch blocks"]:
        """Steps of each row's blocks; blocks without a masked position get none."""
        rows = block_of.shape[0]
        index = block_of.clamp(min=0)
        positions = torch.zeros(rows, num_blocks, dtype=torch.long, device=block_of.device)
        positions.scatter_add_(-1, index, target.long())
        holes = torch.zeros_like(positions).scatter_add_(-1, index, (masked & target).long())
        target_length = target.sum(-1, keepdim=True).expand(rows, num_blocks)
        steps = self.planner.block_steps(positions.flatten(), target_length.flatten())
        return torch.where(holes > 0, steps.view(rows, num_blocks), 0)

    def _denoise(
        self,
        model: Denoiser,
        x: TokenIds,
        attention_mask: SeqMask | None,
        prompt: SeqMask,
        mask_id: int,
    ) -> tuple[StackedLogits, int]:
        """Logits of the current sequence; with guidance, conditional and unconditional
        stacked along the batch (`2 * batch` rows)."""
        if self.guidance is None:
            return _checked(model(x, attention_mask), x), 1
        uncond = self.guidance.unconditional(x, prompt, mask_id)
        both = torch.cat([x, uncond])
        mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        return _checked(model(both, mask), both), 2


def _checked(logits: Tensor, ids: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[:2] != ids.shape:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits of shape (batch, seq, vocab) = "
            f"({ids.shape[0]}, {ids.shape[1]}, vocab); got {shape}"
        )
    return logits


def _masked_rank(
    masked: SeqMask, where: Int[Tensor, " n"]
) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
    """Each candidate's index among its row's masked positions, and that row's count."""
    index = masked.long().cumsum(-1) - 1
    length = masked.sum(-1, keepdim=True).expand_as(index)
    return index.flatten()[where], length.flatten()[where]


class _Allowed:
    """The ids a sampler may write: never mask or ids beyond the layout; with a modality,
    only that modality's ids (plus its end token and pad)."""

    def __init__(
        self, layout: VocabLayout, modality: Modality | None, vocab: int, device: torch.device
    ) -> None:
        if vocab < layout.vocab_size:
            raise ValueError(
                f"the model's logits have {vocab} entries but the layout needs "
                f"{layout.vocab_size} (layout.vocab_size); resize the backbone's vocabulary"
            )
        if modality is None:
            allowed = torch.ones(vocab, dtype=torch.bool, device=device)
            allowed[layout.vocab_size :] = False
        else:
            allowed = layout.logit_mask(modality, vocab_size=vocab, device=device)
        allowed[layout.mask_id] = False
        self.banned = allowed.logical_not().nonzero().flatten()
        # a modality's ids are usually a small part of the vocabulary (Omni-Diffusion: 8,192
        # image ids of 176,000): then gather only those columns, so that every later step
        # (softmax, scores) works on them alone; otherwise fill the few banned columns
        ids = allowed.nonzero().flatten()
        self.columns: Tensor | None = ids if len(ids) <= vocab // 2 else None

    def logits(
        self, logits: StackedLogits, where: Int[Tensor, " n"], guidance: _Guidance
    ) -> _Gathered:
        """Float32 logits of the candidates (flat indices `where`), allowed columns only when
        the allowed ids are few, -inf on banned ids otherwise; guided when asked."""
        halves = logits.chunk(2) if guidance is not None else (logits,)
        flat = [self._gather(rearrange(half, "b s v -> (b s) v"), where) for half in halves]
        # guidance mixes finite logits; banned ids are filled afterwards (-inf - -inf is NaN)
        gathered = flat[0] if guidance is None else guidance.combine(flat[0], flat[1])
        if self.columns is None:
            gathered.index_fill_(-1, self.banned, -math.inf)
        return gathered

    def _gather(self, logits: Float[Tensor, "rows vocab"], where: Int[Tensor, " n"]) -> _Gathered:
        # both gathers copy, so in-place changes later do not touch the model's output
        if self.columns is not None:
            return logits[where.unsqueeze(-1), self.columns].float()
        return logits.index_select(0, where).float()

    def token_ids(self, tokens: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """Vocabulary ids of tokens picked among the gathered columns."""
        return tokens if self.columns is None else self.columns[tokens]


def _check_inputs(
    ids: Tensor,
    layout: VocabLayout,
    modality: Modality | str | None,
    target: Tensor | None,
    attention_mask: Tensor | None,
) -> tuple[TokenIds, SeqMask, SeqMask | None, Modality | None]:
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError(f"ids must be a 2-d tensor (batch, seq); got {_describe(ids)}")
    if ids.dtype.is_floating_point or ids.dtype in (torch.bool, torch.complex64):
        raise TypeError(f"ids must be an integer tensor; got dtype {ids.dtype}")
    if ids.numel() and (bool((ids < 0).any()) or bool((ids >= layout.vocab_size).any())):
        bad = ids[(ids < 0) | (ids >= layout.vocab_size)][0]
        raise ValueError(
            f"id {int(bad)} lies outside the layout's vocabulary [0, {layout.vocab_size})"
        )
    masked = ids == layout.mask_id
    for name, value in (("target", target), ("attention_mask", attention_mask)):
        if value is None:
            continue
        if not isinstance(value, Tensor) or value.shape != ids.shape:
            raise ValueError(
                f"{name} must have the shape of ids {tuple(ids.shape)}; got {_describe(value)}"
            )
        if value.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor; got dtype {value.dtype}")
    if target is None:
        target = masked
    elif bool((masked & ~target).any()):
        raise ValueError(
            f"{int((masked & ~target).sum())} masked position(s) lie outside `target`; the "
            "target region must contain every position to generate"
        )
    if attention_mask is not None and bool((masked & ~attention_mask).any()):
        raise ValueError("masked positions lie under padding (attention_mask False)")
    mod: Modality | None = None
    if modality is not None:
        try:
            mod = Modality(modality)
        except ValueError:
            valid = ", ".join(m.value for m in Modality)
            raise ValueError(f"unknown modality {modality!r}; valid: {valid}") from None
        if layout.size(mod) == 0:
            raise ValueError(f"the layout has no {mod.value} ids to generate")
    return ids, target, attention_mask, mod


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _softmax_(logits: CandidateLogits) -> CandidateLogits:
    """Softmax over the last dimension, in place (the logits are the sampler's own copy).

    Writing into the existing buffer instead of allocating a new one is measurably faster
    on CPU: a fresh multi-megabyte tensor costs page faults on every sampling step.
    """
    top = logits.amax(-1, keepdim=True)
    logits.sub_(top).exp_()
    return logits.div_(logits.sum(-1, keepdim=True))
