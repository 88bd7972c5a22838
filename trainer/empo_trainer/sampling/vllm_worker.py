"""Runs inside each vLLM worker process: receives the learner's weights and loads them.

vLLM (V1 engine) keeps the model in worker processes the `LLM` object cannot reach; its supported
way in is a worker extension class (`LLM(worker_extension_cls=...)`) whose methods the engine
calls on every worker through `LLM.collective_rpc`. Two transports reach it:
- CPU: named tensors arrive as the RPC's argument, one safetensors blob per bucket (the sampler
  actor got them from the Ray object store);
- GPU: one NCCL broadcast per bucket from learner rank 0 to every worker of every engine, over a
  group of its own (vLLM's StatelessProcessGroup + PyNcclCommunicator, as TRL's server mode,
  OpenRLHF and verl do), so nothing crosses the host.
Kept free of imports from the rest of empo: vLLM imports this module by name in its workers.
"""

from __future__ import annotations

from typing import Any, Iterable


def bucket_layout(metas: Iterable[tuple[str, str, list[int]]]) -> list[tuple[str, str, list[int], int, int]]:
    """(name, dtype, shape) -> (name, dtype, shape, start, numel) in one flat byte buffer per dtype.

    Pure; the sender packs and every receiver unpacks with the same layout."""
    offsets: dict[str, int] = {}
    out = []
    for name, dtype, shape in metas:
        numel = 1
        for dim in shape:
            numel *= dim
        start = offsets.get(dtype, 0)
        out.append((name, dtype, list(shape), start, numel))
        offsets[dtype] = start + numel
    return out


def dtype_sizes(layout: list[tuple[str, str, list[int], int, int]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for _name, dtype, _shape, start, numel in layout:
        sizes[dtype] = max(sizes.get(dtype, 0), start + numel)
    return sizes


class WeightSyncExtension:
    """Mixed into vLLM's worker class; `self` is the worker (model_runner, device, rank, vllm_config).
    Every name starts with empo_: vLLM refuses an extension that shadows a worker attribute (and
    its workers have a finish_weight_update of their own).

    An update is empo_begin_update, any number of buckets, empo_finish_update: vLLM's
    layerwise reload (what `Worker.reload_weights` runs for one iterator) restores each layer's
    checkpoint-format parameters, buffers incoming tensors per layer, and re-applies the kernel
    processing (e.g. the CPU GEMM repacking) to each layer once its weights are all in. A plain
    `model.load_weights` after start-up fails there: processed parameters lost their loaders."""

    def empo_begin_update(self) -> bool:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())
        return True

    def _empo_load(self, weights: list[tuple[str, Any]]) -> int:
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(weights)
        return len(weights)

    def empo_finish_update(self) -> bool:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        model = self.model_runner.get_model()
        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(model, self.vllm_config.model_config)
            # A head tied to the embeddings shares their (now new) weight, but the layerwise
            # reload processes only the embedding layer; on CPU the head's GEMM still holds a
            # repacked copy of the old weight. Re-run its processing from the shared tensor.
            from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

            for module in model.modules():
                if isinstance(module, ParallelLMHead) and module.weight is not None:
                    module.quant_method.process_weights_after_loading(module)
        return True

    def empo_load_safetensors(self, payload: bytes) -> int:
        """CPU path: tensors that came with the RPC as one safetensors blob (the RPC's msgpack
        carries bytes as they are, but no tensors)."""
        from safetensors.torch import load

        return self._empo_load([(name, t.to(self.device)) for name, t in load(payload).items()])

    def empo_init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int) -> int:
        """GPU path: join the learner's NCCL group as rank `rank_offset + this worker's rank`."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        rank = rank_offset + self.rank
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._empo_weight_comm = PyNcclCommunicator(group, device=self.device)
        return rank

    def empo_receive_bucket(self, metas: list[tuple[str, str, list[int]]]) -> int:
        """GPU path: take part in the learner's broadcast of one bucket, then load it."""
        import torch

        layout = bucket_layout(metas)
        buffers = {dtype: torch.empty(numel, dtype=getattr(torch, dtype), device=self.device)
                   for dtype, numel in dtype_sizes(layout).items()}
        for dtype in sorted(buffers):  # one broadcast per dtype, in the sender's order
            self._empo_weight_comm.broadcast(buffers[dtype], src=0, stream=torch.cuda.current_stream())
        torch.cuda.current_stream().synchronize()
        return self._empo_load([(name, buffers[dtype][start:start + numel].view(shape))
                           for name, dtype, shape, start, numel in layout])
