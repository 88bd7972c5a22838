"""Pick the sampler backend the spec names."""

from __future__ import annotations

from empo_api.models import EmpoRunSpec

from .base import Sampler


def make_sampler(spec: EmpoRunSpec, model_path: str, *, max_model_len: int | None = None) -> Sampler:
    backend = spec.sampler.backend
    if backend == "vllm":
        from .vllm_backend import VLLMSampler

        return VLLMSampler(
            model_path, dtype=spec.model.dtype, max_prompt_length=spec.algorithm.max_prompt_length,
            max_model_len=max_model_len or spec.algorithm.max_prompt_length + spec.algorithm.max_completion_length,
            tensor_parallel_size=spec.sampler.tensor_parallel_size,
            gpu_memory_utilization=spec.sampler.gpu_memory_utilization, seed=spec.algorithm.seed,
            trust_remote_code=spec.model.trust_remote_code,
        )
    from .transformers_backend import TransformersSampler

    return TransformersSampler(
        model_path, dtype=spec.model.dtype, max_prompt_length=spec.algorithm.max_prompt_length,
        trust_remote_code=spec.model.trust_remote_code,
    )
