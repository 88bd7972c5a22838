"""Rollout generation behind one interface: `transformers` (CPU, small GPUs) and `vllm` (GPUs)."""

from .base import Generation, Sampler, SamplingParams, prompt_seeds, stream_seed
from .factory import make_sampler

__all__ = ["Generation", "Sampler", "SamplingParams", "make_sampler", "prompt_seeds", "stream_seed"]
