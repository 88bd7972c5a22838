"""Runs inside each vLLM worker process: receives the learner's weights and loads them.

vLLM (V1 engine) keeps the model in worker processes the `LLM` object cannot reach; its supported
way in is a worker extension class (`LLM(worker_extension_cls=...)`) whose methods the engine
calls on every worker through `LLM.collective_rpc`. Two transports reach it:
- CPU: named tensors arrive as the RPC's arguments (the sampler actor got them from the Ray
  object store);
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
    """Mixed into vLLM's worker class; `self` is the worker (model_runner, device, rank)."""

    def load_named_tensors(self, named: list[tuple[str, Any]]) -> int:
        """CPU path: load tensors that came with the RPC. Returns how many were loaded."""
        self.model_runner.model.load_weights(weights=[(name, tensor.to(self.device)) for name, tensor in named])
        return len(named)

    def init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int) -> int:
        """GPU path: join the learner's NCCL group as rank `rank_offset + this worker's rank`."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        rank = rank_offset + self.rank
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._empo_weight_comm = PyNcclCommunicator(group, device=self.device)
        return rank

    def receive_bucket(self, metas: list[tuple[str, str, list[int]]]) -> int:
        """GPU path: take part in the learner's broadcast of one bucket, then load it."""
        import torch

        layout = bucket_layout(metas)
        buffers = {}
        for dtype, numel in dtype_sizes(layout).items():  # one broadcast per dtype, in sorted order
            buffers[dtype] = torch.empty(numel, dtype=getattr(torch, dtype), device=self.device)
        for dtype in sorted(buffers):
            self._empo_weight_comm.broadcast(buffers[dtype], src=0, stream=torch.cuda.current_stream())
        torch.cuda.current_stream().synchronize()
        weights = [(name, buffers[dtype][start:start + numel].view(shape))
                   for name, dtype, shape, start, numel in layout]
        self.model_runner.model.load_weights(weights=weights)
        return len(weights)

    def close_weight_group(self) -> bool:
        self.__dict__.pop("_empo_weight_comm", None)
        return True
