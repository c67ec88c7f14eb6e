"""omni_blocks: typed, swappable building blocks for masked discrete diffusion.

Text, speech and image tokens share one sequence (see `omni_blocks.vocab`); noise schedules,
mask strategies, samplers, backbones and tokenizers are small blocks behind protocols, chosen
by configuration.
"""

from omni_blocks.vocab import Modality, SpecialToken, VocabError, VocabLayout

__version__ = "0.1.0"

__all__ = ["Modality", "SpecialToken", "VocabError", "VocabLayout", "__version__"]
