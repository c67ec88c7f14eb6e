"""Samplers: confidence-ordered unmasking from pluggable scorers, penalties and planners."""

from omni_blocks.sampling.base import Denoiser, SampleOutput, Sampler

__all__ = ["Denoiser", "SampleOutput", "Sampler"]
