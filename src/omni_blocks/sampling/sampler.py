"""`MaskedDiffusionSampler`: confidence-ordered unmasking assembled from swappable parts.

Before the first step the planner makes its plan (blocks, and a step budget per block).
Then every step, for every row at once (no per-row Python loop):

1. the plan names the *candidates*: positions still masked in each row's current block;
2. run the denoiser on the current sequence (twice with classifier-free guidance);
3. keep the candidates' logits over the ids the row may write (`VocabLayout.logit_mask`:
   never `[MASK]` itself nor ids outside the layout, and, when a modality is given, only
   that modality's ids); non-finite logits are an error;
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
from typing import Literal

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from omni_blocks.backbones.base import EmbeddingSlots
from omni_blocks.sampling.base import Denoiser, SampleOutput, Sampler
from omni_blocks.sampling.cache import CachedDenoiser, DecodingCache, NoCache
from omni_blocks.sampling.choice import TokenChoice, TokenChooser
from omni_blocks.sampling.guidance import ClassifierFreeGuidance, Guidance
from omni_blocks.sampling.penalties import NoPenalty, PositionPenalty
from omni_blocks.sampling.planners import SchedulePlanner, UnmaskPlanner
from omni_blocks.sampling.scorers import ConfidenceScorer, MaxProbScorer
from omni_blocks.typing import SeqMask, TokenIds
from omni_blocks.vocab import Modality, VocabLayout

__all__ = ["MaskedDiffusionSampler", "NonFiniteLogitsError"]

StackedLogits = Float[Tensor, "rows window vocab"]
"""Logits of one batch, or with guidance of two batches stacked (conditional first), over
the whole sequence or the window a key/value cache recomputed."""

Gathered = Float[Tensor, "n columns"]
"""Candidate logits over the allowed columns (all of the vocabulary, or one modality's ids)."""


class NonFiniteLogitsError(FloatingPointError):
    """The denoiser returned NaN or infinite logits at a position being generated."""


@dataclass(frozen=True)
class MaskedDiffusionSampler(Sampler):
    """Fill `[MASK]` positions over several steps, most confident first.

    Every part is a block chosen by configuration; the presets in
    [`omni_blocks.sampling.presets`][omni_blocks.sampling.presets] reproduce Dream, LLaDA,
    Fast-dLLM and Omni-Diffusion.

    Args:
        planner: how many and which candidates to unmask per step (and blocks).
        scorer: the confidence of a candidate.
        penalty: logit adjustment by position (Omni-Diffusion's tail penalty).
        choice: temperature, top-k, top-p and the token draw.
        guidance: classifier-free guidance; None for none.
        cache: which positions a step recomputes: [`NoCache`][omni_blocks.sampling.cache.NoCache]
            (all, exact), or Fast-dLLM's
            [`PrefixCache`][omni_blocks.sampling.cache.PrefixCache] /
            [`DualCache`][omni_blocks.sampling.cache.DualCache] (the current block only,
            the rest from keys and values refreshed once per block; needs a
            `CachingBackbone`).
        restrict_to_modality: with a `modality` given, write only that modality's ids (plus
            its end token and pad). Upstream samplers do not restrict; their presets set
            False.
        ban_mask: never write `[MASK]`. Upstream samplers do not ban it: a position whose
            chosen token is `[MASK]` stays masked and is predicted again at a later step (or
            kept as `[MASK]` after the last one).
        nonfinite: what a NaN or infinite logit at a candidate position does: `"raise"` a
            [`NonFiniteLogitsError`][omni_blocks.sampling.sampler.NonFiniteLogitsError]
            naming the step and rows (a model that overflows in bf16 would otherwise fill
            the target with one token, silently), or `"ban"`: treat those ids as banned at
            that position (an error only when nothing finite is left).
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
    # LightningCLI can show and override
    planner: UnmaskPlanner = SchedulePlanner()  # noqa: RUF009
    scorer: ConfidenceScorer = MaxProbScorer()  # noqa: RUF009
    penalty: PositionPenalty = NoPenalty()  # noqa: RUF009
    choice: TokenChooser = TokenChoice()  # noqa: RUF009
    guidance: ClassifierFreeGuidance | None = None
    cache: DecodingCache = NoCache()  # noqa: RUF009
    restrict_to_modality: bool = True
    ban_mask: bool = True
    nonfinite: Literal["raise", "ban"] = "raise"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.nonfinite not in ("raise", "ban"):
            raise ValueError(f"nonfinite must be 'raise' or 'ban'; got {self.nonfinite!r}")

    def __call__(
        self,
        model: Denoiser,
        ids: TokenIds,
        *,
        layout: VocabLayout,
        modality: Modality | None = None,
        target_mask: SeqMask | None = None,
        attention_mask: SeqMask | None = None,
        generator: torch.Generator | None = None,
        slots: EmbeddingSlots | None = None,
    ) -> SampleOutput:
        """Fill the `[MASK]` positions of `ids`.

        Args:
            model: the denoiser, called as `model(ids, attention_mask)` (with `slots=...`
                when there are slots).
            ids: prompt and target; `layout.mask_id` marks positions to generate. Rows may
                have different prompt and target lengths (pad with any non-mask id and set
                `attention_mask`).
            layout: the vocabulary layout (mask id, modality ranges).
            modality: when given (and `restrict_to_modality`), generated ids are restricted
                to this modality's ids plus its end token and pad.
            target_mask: the target region of each row (defaults to the masked positions).
                It must contain every masked position; blocks are counted over it, and
                classifier-free guidance masks everything outside it.
            attention_mask: False at padding the model must ignore.
            generator: makes sampling deterministic; it must live on the device of `ids`.
                The sampler runs under `torch.no_grad()` and leaves the model's mode alone:
                call `model.eval()` first so that dropout is off.
            slots: embeddings given in place of token embeddings (the speech the model
                hears); they sit in the prompt and pass to the model unchanged at every step.

        Returns:
            The filled ids, the number of denoiser evaluations, and the trajectory: the step
            at which each position was unmasked (-1 where it was not masked).

        Raises:
            TypeError: `ids`, `target_mask` or `attention_mask` has the wrong dtype, or
                `generator` is not a `torch.Generator`.
            ValueError: shapes disagree, an id lies outside the layout, a masked position
                lies outside `target_mask` or under padding, or the model returns logits of
                the wrong shape.
            NonFiniteLogitsError: NaN / inf logits at a candidate (with `nonfinite="raise"`).
        """
        ids, target_mask, attention_mask, mod = _check_inputs(
            ids, layout, modality, target_mask, attention_mask, generator
        )
        if slots is not None and bool((slots.positions.to(ids.device) & target_mask).any()):
            raise ValueError("embedding slots lie in the target region; they belong to the prompt")
        mask_id = layout.mask_id
        x = ids.clone()
        masked = x == mask_id
        trajectory = torch.full_like(x, -1)
        if not bool(masked.any()):
            return SampleOutput(ids=x, nfe=0, trajectory=trajectory)

        plan = self.planner.plan(target_mask, masked)
        runner = CachedDenoiser(self.cache, model)
        denoise = _Denoise(runner, self.guidance, target_mask, attention_mask, slots, layout)
        allowed: _Allowed | None = None
        nfe = 0
        with torch.no_grad(), tqdm(total=plan.max_steps, disable=not self.progress) as bar:
            for global_step in range(plan.max_steps):
                masked = x == mask_id
                if not bool(masked.any()):
                    break
                # 1. the candidates: positions still masked in each row's current block
                now = plan.advance(masked)
                candidates = now.candidates
                # 2. the denoiser's logits (conditional and unconditional with guidance), of
                # the positions from column `offset` on that the cache recomputed
                logits, offset = denoise(x, now.block)
                nfe += denoise.evaluations
                if allowed is None:
                    restrict = mod if self.restrict_to_modality else None
                    allowed = _Allowed(layout, restrict, logits.shape[-1], self.ban_mask)
                # 3. the candidates' logits over the ids they may take; flat indices are
                # cheaper to gather with than a bool mask
                where = candidates.flatten().nonzero().squeeze(-1)
                local = _window_index(where, x.shape[1], logits.shape[1], offset)
                flat = allowed.logits(logits, local, self.guidance, self.nonfinite, global_step)
                del logits  # free the full logits before the next forward pass
                # 4. temperature, top-p, top-k: usually only the few tokens left are kept
                kept = self.choice.filter(flat)
                flat = kept.logits
                # 5. position penalty
                if self.penalty.changes_logits:
                    index, length = self.penalty.positions(masked, where)
                    flat = self.penalty.apply(flat, index, length)
                # 6. probabilities and the chosen tokens
                probs = flat.softmax(-1)
                del flat
                tokens = self.choice.draw(probs, generator=generator)
                # 7. confidence
                scores = self.scorer.score(probs, tokens, generator=generator)
                confidence = torch.full(x.shape, -math.inf, device=x.device)
                confidence.view(-1)[where] = scores.float()
                proposal = torch.zeros_like(x)
                columns = kept.token_columns(tokens)
                proposal.view(-1)[where] = allowed.token_ids(columns).to(x.dtype)
                # 8. the planner's choice; only those positions are written
                chosen = self.planner.select(
                    confidence,
                    candidates,
                    step=now.step,
                    num_steps=now.num_steps,
                    generator=generator,
                )
                chosen = chosen & candidates
                x = torch.where(chosen, proposal, x)
                trajectory.masked_fill_(chosen, global_step)
                bar.update(1)
            bar.total = bar.n  # adaptive planners finish before their upper bound
            bar.refresh()

        never = (x == mask_id) & (trajectory < 0)
        if bool(never.any()):
            raise RuntimeError(
                f"planner {self.planner!r} left {int(never.sum())} position(s) masked after "
                f"its {plan.max_steps} step(s); a planner must unmask every candidate by the "
                "end of its block's budget"
            )
        return SampleOutput(ids=x, nfe=nfe, trajectory=trajectory)


def _window_index(where: Tensor, seq: int, width: int, offset: int) -> Tensor:
    """Flat indices over `(batch, seq)` as flat indices over a window `(batch, width)` that
    starts at column `offset`."""
    if width == seq:
        return where
    return (where // seq) * width + (where % seq - offset)


class _Denoise:
    """The denoiser's logits of the current sequence: one pass, or with guidance the
    conditional and unconditional passes stacked along the batch (`2 * batch` rows)."""

    def __init__(
        self,
        model: CachedDenoiser,
        guidance: Guidance | None,
        target_mask: SeqMask,
        attention_mask: SeqMask | None,
        slots: EmbeddingSlots | None,
        layout: VocabLayout,
    ) -> None:
        self.model, self.guidance = model, guidance
        self.target_mask, self.attention_mask, self.slots = target_mask, attention_mask, slots
        self.layout = layout
        self.evaluations = 1 if guidance is None else 2

    def __call__(self, x: TokenIds, block: SeqMask) -> tuple[StackedLogits, int]:
        if self.guidance is None:
            return self._run(x, self.attention_mask, self.slots, block)
        uncond = self.guidance.unconditional_input(
            x,
            target_mask=self.target_mask,
            attention_mask=self.attention_mask,
            mask_id=self.layout.mask_id,
            pad_id=self.layout.pad_id,
        )
        both = torch.cat([x, uncond.ids])
        masks = [self.attention_mask, uncond.attention_mask]
        mask = None
        if any(m is not None for m in masks):
            mask = torch.cat(
                [torch.ones_like(x, dtype=torch.bool) if m is None else m for m in masks]
            )
        slots = EmbeddingSlots.concat([self.slots, uncond.slots], [x.shape, x.shape])
        return self._run(both, mask, slots, torch.cat([block, block]))

    def _run(
        self, ids: TokenIds, mask: SeqMask | None, slots: EmbeddingSlots | None, block: SeqMask
    ) -> tuple[Tensor, int]:
        logits, offset = self.model(ids, mask, slots, block)
        return _checked(logits, ids, offset), offset


def _checked(logits: Tensor, ids: Tensor, offset: int) -> Tensor:
    if offset:  # a window from the cache: checked by the backbone
        return logits
    if not isinstance(logits, Tensor) or logits.ndim != 3 or logits.shape[:2] != ids.shape:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits of shape (batch, seq, vocab) = "
            f"({ids.shape[0]}, {ids.shape[1]}, vocab); got {shape}"
        )
    return logits


class _Allowed:
    """The ids a sampler may write, from `VocabLayout.logit_mask`, and the gathering of the
    candidates' logits over them."""

    def __init__(
        self, layout: VocabLayout, modality: Modality | None, vocab: int, ban_mask: bool
    ) -> None:
        if vocab < layout.vocab_size:
            raise ValueError(
                f"the model's logits have {vocab} entries but the layout needs "
                f"{layout.vocab_size} (layout.vocab_size); resize the backbone's vocabulary"
            )
        allowed = layout.logit_mask(modality, vocab_size=vocab, allow_mask=not ban_mask)
        self.banned = allowed.logical_not().nonzero().flatten()
        # a modality's ids are usually a small part of the vocabulary (Omni-Diffusion: 8,192
        # image ids of 176,000): then gather only those columns, so that every later step
        # (softmax, scores) works on them alone; otherwise fill the few banned columns
        ids = allowed.nonzero().flatten()
        self.columns: Tensor | None = ids if len(ids) <= vocab // 2 else None
        self._device: torch.device | None = None

    def _to(self, device: torch.device) -> None:
        if self._device != device:
            self.banned = self.banned.to(device)
            if self.columns is not None:
                self.columns = self.columns.to(device)
            self._device = device

    def logits(
        self,
        logits: StackedLogits,
        where: Int[Tensor, " n"],
        guidance: Guidance | None,
        nonfinite: str,
        step: int,
    ) -> Gathered:
        """Float32 logits of the candidates (flat indices `where`), allowed columns only when
        the allowed ids are few, -inf on banned ids otherwise; guided when asked."""
        self._to(logits.device)
        halves = logits.chunk(2) if guidance is not None else (logits,)
        flat = [self._gather(rearrange(half, "b s v -> (b s) v"), where) for half in halves]
        for part in flat:
            _check_finite(part, where, halves[0].shape[1], nonfinite, step)
        # guidance mixes finite logits; banned ids are filled afterwards (-inf - -inf is NaN)
        gathered = flat[0] if guidance is None else guidance.combine(flat[0], flat[1])
        if self.columns is None:
            gathered.index_fill_(-1, self.banned, -math.inf)
        if nonfinite == "ban" and not bool(torch.isfinite(gathered).any(-1).all()):
            raise NonFiniteLogitsError(
                f"step {step}: no finite logit is left at some candidate position"
            )
        return gathered

    def _gather(self, logits: Float[Tensor, "rows vocab"], where: Int[Tensor, " n"]) -> Gathered:
        # both gathers copy, so in-place changes later do not touch the model's output
        if self.columns is not None:
            return logits[where.unsqueeze(-1), self.columns].float()
        return logits.index_select(0, where).float()

    def token_ids(self, tokens: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """Vocabulary ids of tokens picked among the gathered columns."""
        return tokens if self.columns is None else self.columns[tokens]


def _check_finite(
    gathered: Gathered, where: Int[Tensor, " n"], seq: int, nonfinite: str, step: int
) -> None:
    """NaN or +inf logits, or a position whose every logit is -inf, are an error (with
    `"ban"`: NaN and +inf become -inf, a banned id). -inf alone is a legitimate logit (a
    probability of zero)."""
    top = gathered.amax(-1)  # NaN and +inf propagate to the row's maximum
    if bool(torch.isfinite(top).all()):
        return
    if nonfinite == "ban":
        gathered.masked_fill_(gathered.isnan() | gathered.isposinf(), -math.inf)
        return
    bad = ~torch.isfinite(top)
    rows = sorted(set((where[bad] // seq).tolist()))
    kinds = []
    if bool(gathered.isnan().any()):
        kinds.append("NaN")
    if bool(gathered.isposinf().any()):
        kinds.append("+inf")
    if bool(top.isneginf().any()):
        kinds.append("only -inf")
    raise NonFiniteLogitsError(
        f"step {step}: the model returned {' and '.join(kinds)} logits at {int(bad.sum())} "
        f"position(s) being generated, in row(s) {rows}. The model overflowed (bf16?) or its "
        "weights hold NaN; run it in float32, or pass nonfinite='ban' to treat those ids as "
        "banned"
    )


def _check_inputs(
    ids: Tensor,
    layout: VocabLayout,
    modality: Modality | str | None,
    target_mask: Tensor | None,
    attention_mask: Tensor | None,
    generator: object,
) -> tuple[TokenIds, SeqMask, SeqMask | None, Modality | None]:
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        raise ValueError(f"ids must be a 2-d tensor (batch, seq); got {_describe(ids)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor; got dtype {ids.dtype}")
    if ids.device.type == "meta":
        raise ValueError("ids are on the meta device (they hold no values); move them to cpu/cuda")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} "
            "(seed one with torch.Generator(device).manual_seed(seed))"
        )
    if ids.numel() and (bool((ids < 0).any()) or bool((ids >= layout.vocab_size).any())):
        bad = ids[(ids < 0) | (ids >= layout.vocab_size)][0]
        raise ValueError(
            f"id {int(bad)} lies outside the layout's vocabulary [0, {layout.vocab_size})"
        )
    masked = ids == layout.mask_id
    for name, value in (("target_mask", target_mask), ("attention_mask", attention_mask)):
        if value is None:
            continue
        if not isinstance(value, Tensor) or value.shape != ids.shape:
            raise ValueError(
                f"{name} must have the shape of ids {tuple(ids.shape)}; got {_describe(value)}"
            )
        if value.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor; got dtype {value.dtype}")
    if target_mask is None:
        target_mask = masked
    elif bool((masked & ~target_mask).any()):
        raise ValueError(
            f"{int((masked & ~target_mask).sum())} masked position(s) lie outside "
            "`target_mask`; the target region must contain every position to generate"
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
    return ids, target_mask, attention_mask, mod


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return type(value).__name__
