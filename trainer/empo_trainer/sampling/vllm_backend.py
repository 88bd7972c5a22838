"""The GPU sampler: a vLLM engine. Imported only when chosen, so everything else runs without vLLM."""

from __future__ import annotations

from typing import Any, Sequence

from .base import Generation, Prompt, SamplingParams

INSTALL_HINT = (
    "spec.sampler.backend is 'vllm' but vLLM is not installed here. Use the trainer image "
    "(images/trainer), `pip install 'empo[vllm]'` on a CUDA machine, or set spec.sampler.backend: transformers "
    "for CPU runs."
)


class VLLMUnavailable(RuntimeError):
    pass


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # also covers broken CUDA installs that fail at import
        raise VLLMUnavailable(INSTALL_HINT) from exc
    return vllm


class VLLMSampler:
    def __init__(self, model_path: str, dtype: str = "bfloat16", max_prompt_length: int | None = None,
                 max_model_len: int | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.7,
                 seed: int = 0, trust_remote_code: bool = False):
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model_path, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
            trust_remote_code=trust_remote_code, enable_prefix_caching=True,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_prompt_length = max_prompt_length

    def load_weights(self, state_dict: dict[str, Any]) -> None:
        model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        model.load_weights(state_dict.items())
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        from .chat import render_prompt_ids

        prompt_ids = [render_prompt_ids(self.tokenizer, p, self.max_prompt_length) for p in prompts]
        sp = self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
            seed=params.seed, logprobs=0,
        )
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sp, use_tqdm=False)
        results = []
        for ids, out in zip(prompt_ids, outputs):
            gen = Generation(prompt_ids=ids, completion_ids=[], texts=[], logprobs=[], finished=[])
            for c in out.outputs:
                gen.completion_ids.append(list(c.token_ids))
                gen.texts.append(c.text)
                gen.logprobs.append([next(iter(lp.values())).logprob for lp in (c.logprobs or [])])
                gen.finished.append(c.finish_reason == "stop")
            results.append(gen)
        return results
