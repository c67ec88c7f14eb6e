"""Presets: `MaskedDiffusionSampler`s configured like published samplers.

Each function returns an ordinary
[`MaskedDiffusionSampler`][omni_blocks.sampling.sampler.MaskedDiffusionSampler]; its fields
are the blocks below, so a preset is also a readable recipe to copy into a config.

| preset | mirrors | scorer | planner | tokens | extra | exact |
|---|---|---|---|---|---|---|
| `dream_sampler` | Dream | `alg` | floor, >= 0 | T 0.2, p 0.95, k 50 | - | T = 0 |
| `omni_diffusion_sampler` | Omni-Diffusion | `alg` | floor, >= 1 | p 0.9, k 50 | penalty | T = 0 |
| `llada_sampler` | LLaDA chat demo | max-prob | blocks of 32 | greedy | CFG | - |
| `fast_dllm_sampler` | Fast-dLLM | max-prob | blocks of 32, threshold | greedy | - | - |

(Schedule planners use the linear schedule; Dream and Omni-Diffusion with `eps = 1e-3`,
LLaDA with `eps = 0`. Each function's docstring lists the upstream parameter names.)

**Upstream-exact.** `dream_sampler` and `omni_diffusion_sampler` reproduce the official code
token for token at temperature 0 (checked against golden fixtures of Dream's and
Omni-Diffusion's own code on tiny seeded models, `tests/test_upstream.py`), including what
upstream does implicitly: its generation config inherits `top_k=50` from the model config;
it counts tokens in float32 on `torch.linspace`'s grid; Dream may reveal no token on a step
while Omni-Diffusion reveals at least one and caps the steps at the number of new tokens;
neither restricts the output to the task's modality nor bans `[MASK]` as a token; entropy is
`sum p log(p + 1e-10)`. Each of these is an option of a block, and the keyword arguments of
the presets turn omni_blocks' own choices back on (`restrict_to_modality=True`,
`ban_mask=True`).
Unlike upstream they find the top-p nucleus without sorting the whole vocabulary and compute
the softmax and the entropy over the kept tokens only (see
[`TokenChoice`][omni_blocks.sampling.choice.TokenChoice]): the same kept tokens, probabilities
equal to upstream's up to rounding in the last bits, and several times less work per step.

What is not reproduced: Dream's `alg_temp` (sampling positions instead of taking the top
ones), Omni-Diffusion's `entropy-penalty` (a repetition penalty on tokens already written),
draw-for-draw equality at temperature > 0 (upstream draws with `torch.distributions`, one
categorical draw per position). At temperature > 0, LLaDA scores
tokens under the untempered softmax (see
[`omni_blocks.sampling.scorers`][omni_blocks.sampling.scorers]). The differences that remain
are listed on the docs page *Differences from the official code*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from omni_blocks.sampling.cache import DecodingCache, NoCache
from omni_blocks.sampling.choice import TokenChoice
from omni_blocks.sampling.guidance import ClassifierFreeGuidance, PromptSwapGuidance
from omni_blocks.sampling.penalties import NoPenalty, PositionPenalty, TailPenalty
from omni_blocks.sampling.planners import BlockPlanner, SchedulePlanner, ThresholdPlanner
from omni_blocks.sampling.sampler import MaskedDiffusionSampler
from omni_blocks.sampling.scorers import (
    ConfidenceScorer,
    EntropyScorer,
    MarginScorer,
    MaxProbScorer,
    RandomScorer,
)

__all__ = [
    "DreamAlg",
    "dream_sampler",
    "fast_dllm_sampler",
    "llada_sampler",
    "omni_diffusion_sampler",
]

DreamAlg = Literal["origin", "maskgit_plus", "topk_margin", "entropy"]
"""Dream's (and Omni-Diffusion's) names of its confidence rules (`alg`)."""

UPSTREAM_ENTROPY_EPSILON = 1e-10
"""`sample_tokens` writes the entropy as `sum p log(p + 1e-10)`."""


def _guidance(
    scale: float, unconditional_ids: Sequence[int] | None = None
) -> ClassifierFreeGuidance | None:
    if scale <= 0:
        return None
    if unconditional_ids:
        return PromptSwapGuidance(scale, tuple(unconditional_ids))
    return ClassifierFreeGuidance(scale)


def _dream_scorer(alg: DreamAlg) -> ConfidenceScorer:
    """The scorer of one of Dream's `alg` names (upstream's formulas, to the bit)."""
    scorers: dict[str, ConfidenceScorer] = {
        # origin reveals each position by its own draw and ignores the confidence: a scorer
        # that draws nothing keeps the generator's stream the same as upstream's
        "origin": MaxProbScorer(),
        "maskgit_plus": MaxProbScorer(),
        "topk_margin": MarginScorer(),
        "entropy": EntropyScorer(epsilon=UPSTREAM_ENTROPY_EPSILON),
    }
    if alg not in scorers:
        raise ValueError(f"unknown alg {alg!r}; Dream's are {sorted(scorers)}")
    return scorers[alg]


def dream_sampler(
    num_steps: int = 512,
    *,
    alg: DreamAlg = "entropy",
    temperature: float = 0.2,
    top_p: float | None = 0.95,
    top_k: int | None = 50,
    eps: float = 1e-3,
    block_length: int | None = None,
    restrict_to_modality: bool = False,
    ban_mask: bool = False,
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """Dream-7B's `diffusion_generate`, with the settings of Dream's README example.

    `steps` is `num_steps` and `alg` picks the confidence: `"entropy"` (the README's) ->
    [`EntropyScorer`][omni_blocks.sampling.scorers.EntropyScorer] with upstream's `1e-10`,
    `"maskgit_plus"` -> [`MaxProbScorer`][omni_blocks.sampling.scorers.MaxProbScorer],
    `"topk_margin"` -> [`MarginScorer`][omni_blocks.sampling.scorers.MarginScorer],
    `"origin"` (Dream's generation-config default) -> each masked position revealed by its
    own uniform draw, `rounding="bernoulli"`. Set `max_new_tokens` by the number of masked
    positions you pass. Dream's default is 512 steps for 512 new tokens.

    Upstream-exact at temperature 0 (token for token; with `alg="origin"` also draw for
    draw, given a generator seeded like `torch.manual_seed`): `top_k=50` is what Dream's
    generation config inherits from the model config unless you pass `top_k`; a step may
    reveal no token (`int(r * (1 - s / t))`, in float32 on `torch.linspace`'s grid); steps
    are not capped at the number of tokens; `[MASK]` is not banned and the output is not
    restricted to the task's modality (turn both back on with the keyword arguments).

    Args:
        num_steps: Dream's `steps`.
        alg: Dream's `alg`.
        temperature: Dream's `temperature`.
        top_p: Dream's `top_p`.
        top_k: Dream's `top_k` (None: no top-k).
        eps: Dream's `eps`, the last time of the grid.
        block_length: Dream's (and Omni-Diffusion's) `block_size`; None: one block.
        restrict_to_modality: write only the task modality's ids (omni_blocks; not Dream).
        ban_mask: never write `[MASK]` (omni_blocks; not Dream).
        progress: show a progress bar.

    Raises:
        ValueError: an unknown `alg`.
    """
    planner = SchedulePlanner(
        num_steps=num_steps,
        eps=eps,
        rounding="bernoulli" if alg == "origin" else "floor",
        min_tokens=0,
        cap_steps=False,
        arithmetic="float32",
    )
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=_dream_scorer(alg),
        choice=TokenChoice(temperature=temperature, top_k=top_k, top_p=top_p),
        restrict_to_modality=restrict_to_modality,
        ban_mask=ban_mask,
        progress=progress,
    )


def llada_sampler(
    num_steps: int = 128,
    *,
    block_length: int | None = 32,
    temperature: float = 0.0,
    random_order: bool = False,
    guidance_scale: float = 0.0,
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """LLaDA's `generate` (semi-autoregressive remasking), as in LLaDA's chat demo.

    `steps` is `num_steps` for the whole answer, `block_length` the semi-autoregressive block
    (the demo: 128 steps, 128 new tokens, blocks of 32; `block_length=None` or the answer
    length is pure diffusion), `remasking="low_confidence"` is
    [`MaxProbScorer`][omni_blocks.sampling.scorers.MaxProbScorer] and `"random"`
    ([`RandomScorer`][omni_blocks.sampling.scorers.RandomScorer]) is `random_order=True`;
    `cfg_scale` is `guidance_scale`. Each block gets `num_steps // num_blocks` steps with
    LLaDA's even split of its masked tokens (remainder first), which is a
    [`SchedulePlanner`][omni_blocks.sampling.planners.SchedulePlanner] with `eps=0` and
    `rounding="ceil"`. LLaDA requires `block_length` to divide the answer and the number of
    blocks to divide `num_steps`; omni_blocks does not (the last block may be shorter).
    Differences: a block with no masked token takes no step here (LLaDA still runs its
    steps), and with temperature > 0 confidence uses the tempered softmax.

    Args:
        num_steps: LLaDA's `steps`.
        block_length: LLaDA's `block_length`; None for a single block.
        temperature: LLaDA's `temperature` (Gumbel-max sampling at that temperature).
        random_order: LLaDA's `remasking="random"` instead of `"low_confidence"`.
        guidance_scale: LLaDA's `cfg_scale` (prompt masked for the unconditional pass).
        progress: show a progress bar.
    """
    planner = SchedulePlanner(num_steps=num_steps, eps=0.0, rounding="ceil")
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=RandomScorer() if random_order else MaxProbScorer(),
        choice=TokenChoice(temperature=temperature),
        guidance=_guidance(guidance_scale),
        progress=progress,
    )


def fast_dllm_sampler(
    threshold: float = 0.9,
    *,
    block_length: int | None = 32,
    temperature: float = 0.0,
    cache: DecodingCache | None = None,
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """Fast-dLLM's confidence-aware parallel decoding on LLaDA.

    Inside each block of `block_length` (Fast-dLLM's evaluations: 32), every masked token
    whose probability is at least `threshold` (0.9) is decoded at once, and at least the most
    confident one; the number of steps follows the model's confidence. This is Fast-dLLM's
    `generate(..., threshold=0.9)` with `remasking="low_confidence"`; with
    `cache=PrefixCache()` it is `generate_with_prefix_cache`, with `cache=DualCache()`
    `generate_with_dual_cache` (see [`omni_blocks.sampling.cache`][omni_blocks.sampling.cache]:
    approximations that save compute, refreshed once per block).

    Args:
        threshold: Fast-dLLM's `threshold`.
        block_length: Fast-dLLM's `block_length`; None for a single block.
        temperature: token temperature (Fast-dLLM: 0).
        cache: None or `NoCache()` for none, `PrefixCache()` or `DualCache()`.
        progress: show a progress bar.
    """
    planner = ThresholdPlanner(threshold)
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=MaxProbScorer(),
        choice=TokenChoice(temperature=temperature),
        cache=cache or NoCache(),
        progress=progress,
    )


def omni_diffusion_sampler(
    num_steps: int = 256,
    *,
    alg: DreamAlg = "entropy",
    position_penalty: float = 1.0,
    guidance_scale: float = 0.0,
    top_p: float | None = 0.9,
    top_k: int | None = 50,
    block_length: int | None = None,
    unconditional_ids: Sequence[int] | None = None,
    restrict_to_modality: bool = False,
    ban_mask: bool = False,
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """Omni-Diffusion's decoding (`tools/inference.py` calling its Dream `_sample`).

    Entropy-ordered unmasking (`alg="entropy"`) on Dream's linear time grid with
    `eps=1e-3`, greedy tokens with `top_p=0.9` (at temperature 0 top-p does not change the
    token but does change the entropy the order is based on), and, for image generation,
    the tail [`TailPenalty`][omni_blocks.sampling.penalties.TailPenalty]. Upstream settings
    per task (new tokens / steps / `max_position_penalty` / `cfg`):

    | task | tokens | steps | `position_penalty` | `guidance_scale` |
    |---|---|---|---|---|
    | text-to-image | 260 | 260 | 2.0 | 0 |
    | speech-to-image | 260 | 260 | 2.0 | 2.0 |
    | spoken VQA | 128 | 128 | 1.0 | 0 |
    | VQA | 64 | 64 | 1.0 | 0 |
    | TTS, ASR | 50 | 25 | 1.0 | 0 |

    Upstream-exact at temperature 0, token for token: `top_k=50` is what its generation
    config inherits from the model config (`tools/inference.py` passes no `top_k`); at least
    one token per step (`max(number_transfer_tokens, 1)`); steps capped at the number of new
    tokens; counts in float32; no ban of `[MASK]` and no modality restriction (turn both back
    on with the keyword arguments). Its `_sample` runs one row at a time (with more rows it
    fails); the tail penalty here counts each row's own masked positions, which is the same
    on every batch upstream accepts. Upstream image and spoken-VQA runs use
    `entropy-penalty`, which adds a repetition penalty (1.2 to 1.5) that omni_blocks does
    not implement. With `guidance_scale > 0` and `unconditional_ids`, the unconditional pass
    reads that prompt exactly as upstream's speech-to-image guidance does
    ([`PromptSwapGuidance`][omni_blocks.sampling.guidance.PromptSwapGuidance]; encode
    `PromptSwapGuidance.SPEECH_TO_IMAGE_UNCONDITIONAL` with the text tokenizer); without
    them it masks the prompt (LLaDA's way).

    Args:
        num_steps: upstream `steps`.
        alg: upstream `alg` (`"entropy"` in every task of `tools/inference.py`).
        position_penalty: upstream `max_position_penalty` (1.0: no penalty; 2.0 for images).
        guidance_scale: upstream `cfg`.
        top_p: upstream `top_p`.
        top_k: upstream's effective `top_k` (50, from the model config; None: no top-k).
        block_length: upstream `block_size`; None for a single block (upstream default).
        unconditional_ids: the unconditional prompt of guidance (upstream's task prompt).
        restrict_to_modality: write only the task modality's ids (omni_blocks; not upstream).
        ban_mask: never write `[MASK]` (omni_blocks; not upstream).
        progress: show a progress bar.
    """
    planner = SchedulePlanner(
        num_steps=num_steps,
        eps=1e-3,
        rounding="bernoulli" if alg == "origin" else "floor",
        min_tokens=1,
        cap_steps=True,
        arithmetic="float32",
    )
    penalty: PositionPenalty = (
        NoPenalty() if position_penalty == 1.0 else TailPenalty(strength=position_penalty)
    )
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=_dream_scorer(alg),
        penalty=penalty,
        choice=TokenChoice(temperature=0.0, top_p=top_p, top_k=top_k),
        guidance=_guidance(guidance_scale, unconditional_ids),
        restrict_to_modality=restrict_to_modality,
        ban_mask=ban_mask,
        progress=progress,
    )
