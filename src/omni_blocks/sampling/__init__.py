"""Samplers: confidence-ordered unmasking from pluggable scorers, penalties and planners.

[`MaskedDiffusionSampler`][omni_blocks.sampling.MaskedDiffusionSampler] fills the `[MASK]`
positions of a sequence over several steps. What it unmasks, and when, is decided by small
swappable blocks:

- scorers ([`omni_blocks.sampling.scorers`][omni_blocks.sampling.scorers]): the confidence
  of a position (max-prob, margin, entropy, random);
- position penalties ([`omni_blocks.sampling.penalties`][omni_blocks.sampling.penalties]):
  Omni-Diffusion's tail penalty;
- planners ([`omni_blocks.sampling.planners`][omni_blocks.sampling.planners]): a plan of
  blocks and step budgets made once per run, and how many positions per step (noise
  schedule, fixed count, Fast-dLLM threshold);
- token choice ([`omni_blocks.sampling.choice`][omni_blocks.sampling.choice]): temperature,
  top-k, top-p; classifier-free guidance
  ([`omni_blocks.sampling.guidance`][omni_blocks.sampling.guidance]);
- key/value caches ([`omni_blocks.sampling.cache`][omni_blocks.sampling.cache]):
  Fast-dLLM's prefix and dual cache, which recompute only the block being decoded;
- presets ([`omni_blocks.sampling.presets`][omni_blocks.sampling.presets]) that reproduce
  Dream, LLaDA, Fast-dLLM and Omni-Diffusion
  ([`block_config`][omni_blocks.config.block_config] writes any of them as a
  LightningCLI config).
"""

from omni_blocks.sampling.base import Denoiser, SampleOutput, Sampler
from omni_blocks.sampling.cache import (
    CachedDenoiser,
    DecodingCache,
    DualCache,
    NoCache,
    PrefixCache,
)
from omni_blocks.sampling.choice import FilteredLogits, TokenChoice, TokenChooser
from omni_blocks.sampling.guidance import (
    ClassifierFreeGuidance,
    Guidance,
    GuidedInput,
    PromptSwapGuidance,
)
from omni_blocks.sampling.penalties import NoPenalty, PositionPenalty, TailPenalty
from omni_blocks.sampling.planners import (
    BlockPlanner,
    FixedCountPlanner,
    Plan,
    PlanStep,
    SchedulePlanner,
    ThresholdPlanner,
    UnmaskPlanner,
)
from omni_blocks.sampling.presets import (
    dream_sampler,
    fast_dllm_sampler,
    llada_sampler,
    omni_diffusion_sampler,
)
from omni_blocks.sampling.sampler import MaskedDiffusionSampler, NonFiniteLogitsError
from omni_blocks.sampling.scorers import (
    ConfidenceScorer,
    EntropyScorer,
    MarginScorer,
    MaxProbScorer,
    RandomScorer,
)

__all__ = [
    "BlockPlanner",
    "CachedDenoiser",
    "ClassifierFreeGuidance",
    "ConfidenceScorer",
    "DecodingCache",
    "Denoiser",
    "DualCache",
    "EntropyScorer",
    "FilteredLogits",
    "FixedCountPlanner",
    "Guidance",
    "GuidedInput",
    "MarginScorer",
    "MaskedDiffusionSampler",
    "MaxProbScorer",
    "NoCache",
    "NoPenalty",
    "NonFiniteLogitsError",
    "Plan",
    "PlanStep",
    "PositionPenalty",
    "PrefixCache",
    "PromptSwapGuidance",
    "RandomScorer",
    "SampleOutput",
    "Sampler",
    "SchedulePlanner",
    "TailPenalty",
    "ThresholdPlanner",
    "TokenChoice",
    "TokenChooser",
    "UnmaskPlanner",
    "dream_sampler",
    "fast_dllm_sampler",
    "llada_sampler",
    "omni_diffusion_sampler",
]
