"""Presets: `MaskedDiffusionSampler`s configured like published samplers.

Each function returns an ordinary
[`MaskedDiffusionSampler`][omni_blocks.sampling.sampler.MaskedDiffusionSampler]; its fields
are the blocks below, so a preset is also a readable recipe to copy into a config.

| preset | mirrors | scorer | planner | tokens | extra |
|---|---|---|---|---|---|
| `dream_sampler` | Dream-7B README | entropy | schedule, floor | T 0.2, top-p 0.95 | - |
| `llada_sampler` | LLaDA chat demo | max-prob | blocks of 32, ceil | greedy | CFG |
| `fast_dllm_sampler` | Fast-dLLM (LLaDA) | max-prob | blocks of 32, threshold 0.9 | greedy | - |
| `omni_diffusion_sampler` | Omni-Diffusion | entropy | schedule, floor | top-p 0.9 | tail, CFG |

(Schedule planners use the linear schedule; Dream and Omni-Diffusion with `eps = 1e-3`,
LLaDA with `eps = 0`. Each function's docstring lists the upstream parameter names.)

What is not reproduced: Dream's `alg_temp` (sampling positions instead of taking the top
ones), Omni-Diffusion's `entropy-penalty` (a repetition penalty on tokens already written)
and its task-specific unconditional prompts for CFG (omni_blocks masks the prompt, as LLaDA
does), KV caches of Fast-dLLM. At temperature > 0, LLaDA scores tokens under the untempered
softmax (see [`omni_blocks.sampling.scorers`][omni_blocks.sampling.scorers]).
"""

from __future__ import annotations

from typing import Literal

from omni_blocks.sampling.choice import TokenChoice
from omni_blocks.sampling.guidance import ClassifierFreeGuidance
from omni_blocks.sampling.penalties import NoPenalty, PositionPenalty, TailPenalty
from omni_blocks.sampling.planners import BlockPlanner, SchedulePlanner, ThresholdPlanner
from omni_blocks.sampling.sampler import MaskedDiffusionSampler
from omni_blocks.sampling.scorers import (
    ConfidenceScorer,
    EntropyScorer,
    MaxProbScorer,
    RandomScorer,
)

__all__ = ["dream_sampler", "fast_dllm_sampler", "llada_sampler", "omni_diffusion_sampler"]


def _guidance(scale: float) -> ClassifierFreeGuidance | None:
    return ClassifierFreeGuidance(scale) if scale > 0 else None


def dream_sampler(
    num_steps: int = 512,
    *,
    scorer: ConfidenceScorer | None = None,
    temperature: float = 0.2,
    top_p: float | None = 0.95,
    top_k: int | None = None,
    eps: float = 1e-3,
    block_length: int | None = None,
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """Dream-7B's `diffusion_generate`, with the settings of Dream's README example.

    Dream's `alg` maps to the scorer: `"entropy"` (default here, as in the README) ->
    [`EntropyScorer`][omni_blocks.sampling.scorers.EntropyScorer], `"maskgit_plus"` ->
    [`MaxProbScorer`][omni_blocks.sampling.scorers.MaxProbScorer], `"topk_margin"` ->
    [`MarginScorer`][omni_blocks.sampling.scorers.MarginScorer], `"origin"` (Dream's
    generation-config default) ->
    [`RandomScorer`][omni_blocks.sampling.scorers.RandomScorer], for which the count per step
    is drawn binomially as in Dream (`rounding="stochastic"`). `steps` is `num_steps`; set
    `max_new_tokens` by the number of masked positions you pass. Dream's default is 512 steps
    for 512 new tokens (one token per step); fewer steps decode several tokens per step.

    Args:
        num_steps: Dream's `steps`.
        scorer: Dream's `alg` as a scorer (default: entropy).
        temperature: Dream's `temperature`.
        top_p: Dream's `top_p`.
        top_k: Dream's `top_k`.
        eps: Dream's `eps`, the last time of the grid.
        block_length: Dream's (and Omni-Diffusion's) `block_size`; None: one block.
        progress: show a progress bar.
    """
    scorer = EntropyScorer() if scorer is None else scorer
    rounding: Literal["floor", "stochastic"] = (
        "stochastic" if isinstance(scorer, RandomScorer) else "floor"
    )
    planner = SchedulePlanner(num_steps=num_steps, eps=eps, rounding=rounding)
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=scorer,
        choice=TokenChoice(temperature=temperature, top_k=top_k, top_p=top_p),
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
    progress: bool = False,
) -> MaskedDiffusionSampler:
    """Fast-dLLM's confidence-aware parallel decoding on LLaDA (without its KV caches).

    Inside each block of `block_length` (Fast-dLLM's evaluations: 32), every masked token
    whose probability is at least `threshold` (0.9) is decoded at once, and at least the most
    confident one; the number of steps follows the model's confidence. This is Fast-dLLM's
    `generate(..., threshold=0.9)` with `remasking="low_confidence"`. Its KV-cache variants
    (prefix and dual cache) are approximations that save compute, not different decoding
    rules, and are not reproduced.

    Args:
        threshold: Fast-dLLM's `threshold`.
        block_length: Fast-dLLM's `block_length`; None for a single block.
        temperature: token temperature (Fast-dLLM: 0).
        progress: show a progress bar.
    """
    planner = ThresholdPlanner(threshold)
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=MaxProbScorer(),
        choice=TokenChoice(temperature=temperature),
        progress=progress,
    )


def omni_diffusion_sampler(
    num_steps: int = 256,
    *,
    position_penalty: float = 1.0,
    guidance_scale: float = 0.0,
    top_p: float | None = 0.9,
    block_length: int | None = None,
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

    Upstream image and spoken-VQA runs use `entropy-penalty`, which adds a repetition
    penalty (1.2 to 1.5) that omni_blocks does not implement, and build the unconditional
    CFG input from a task prompt rather than by masking the prompt.

    Args:
        num_steps: upstream `steps`.
        position_penalty: upstream `max_position_penalty` (1.0: no penalty; 2.0 for images).
        guidance_scale: upstream `cfg`.
        top_p: upstream `top_p`.
        block_length: upstream `block_size`; None for a single block (upstream default).
        progress: show a progress bar.
    """
    planner = SchedulePlanner(num_steps=num_steps, eps=1e-3, rounding="floor")
    penalty: PositionPenalty = (
        NoPenalty() if position_penalty == 1.0 else TailPenalty(strength=position_penalty)
    )
    return MaskedDiffusionSampler(
        planner=planner if block_length is None else BlockPlanner(planner, block_length),
        scorer=EntropyScorer(),
        penalty=penalty,
        choice=TokenChoice(temperature=0.0, top_p=top_p),
        guidance=_guidance(guidance_scale),
        progress=progress,
    )
