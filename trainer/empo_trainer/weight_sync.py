"""Learner -> sampler engines: the policy's weights after each optimizer step.

One interface, `push(named_tensors) -> SyncStats`, called on learner rank 0 with the stream of
(HF name, full tensor) pairs `learner_weights.iter_full_weights` yields. Two transports:
- ObjectStoreSync (CPU, and the transformers sampler anywhere): buckets of ~256 MiB go through
  the Ray object store; each sampler actor loads a bucket before the next is put, so the learner
  never holds more than one extra bucket.
- NcclSync (GPU engines): one NCCL broadcast per bucket from learner rank 0 to every vLLM worker,
  the way TRL's server mode, OpenRLHF and verl move weights; the actors only carry the bucket's
  names and shapes.
Both fail with a clear error, rather than hang, when a sync outlasts its timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

BUCKET_BYTES = 256 << 20


class WeightSyncTimeout(RuntimeError):
    pass


@dataclass
class SyncStats:
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    queued: list = field(default_factory=list)  # push(wait=False): the engines' loads, not yet awaited

    @property
    def seconds_per_gib(self) -> float:
        return self.seconds / (self.bytes / 2**30) if self.bytes else 0.0


def buckets(named: Iterable[tuple[str, Any]], bucket_bytes: int = BUCKET_BYTES) -> Iterator[list[tuple[str, Any]]]:
    """Consecutive groups of at most `bucket_bytes` (a larger tensor travels alone)."""
    bucket: list[tuple[str, Any]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


class _Deadline:
    def __init__(self, seconds: float, what: str):
        self.end = time.monotonic() + seconds
        self.seconds, self.what = seconds, what

    def get(self, refs: Any) -> Any:
        import ray

        try:
            return ray.get(refs, timeout=max(0.0, self.end - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncTimeout(
                f"weight sync to {self.what} took longer than {self.seconds:.0f}s; failing the attempt instead of "
                "hanging (it resumes from the latest checkpoint)"
            ) from None


    def wait_for(self, stream: Any) -> None:
        import torch

        done = torch.cuda.Event()
        done.record(stream)
        while not done.query():
            if time.monotonic() > self.end:
                raise WeightSyncTimeout(f"NCCL broadcast to {self.what} did not finish in {self.seconds:.0f}s")
            time.sleep(0.001)


class ObjectStoreSync:
    """Buckets through the Ray object store to each sampler actor's `load_weights`."""

    def __init__(self, samplers: Sequence[Any], timeout: float = 600.0, bucket_bytes: int = BUCKET_BYTES):
        self.samplers, self.timeout, self.bucket_bytes = list(samplers), timeout, bucket_bytes

    def push(self, named_tensors: Iterable[tuple[str, Any]], wait: bool = True,
             ahead_bytes: int = 4 << 30) -> SyncStats:
        """wait=False (one-step-off): put the buckets and queue the engines' loads without awaiting
        them (stats.queued); an actor runs its calls in order, so a rollout queued next samples with
        these weights. At most `ahead_bytes` wait unloaded in the object store (then the older loads
        are awaited)."""
        import ray

        start = time.perf_counter()
        deadline = _Deadline(self.timeout, f"{len(self.samplers)} sampler(s)")
        stats = SyncStats()
        unloaded = 0
        for bucket in buckets(named_tensors, self.bucket_bytes):
            cpu = [(name, t.detach().to("cpu")) for name, t in bucket]
            nbytes = sum(t.numel() * t.element_size() for _, t in cpu)
            if not wait and unloaded and unloaded + nbytes > ahead_bytes:
                deadline.get(stats.queued)
                stats.queued, unloaded = [], 0
            ref = ray.put(cpu)
            loads = [s.load_weights.remote(ref) for s in self.samplers]
            if wait:
                deadline.get(loads)
            else:
                stats.queued += loads
                unloaded += nbytes
            del ref
            stats.tensors += len(cpu)
            stats.bytes += nbytes
        done = [s.weights_loaded.remote() for s in self.samplers]
        if wait:
            deadline.get(done)
        else:
            stats.queued += done
        stats.seconds = time.perf_counter() - start
        return stats

    def close(self) -> None:
        pass


class NcclSync:
    """One NCCL group: learner rank 0 (rank 0) and every worker of every vLLM engine.

    Built lazily on the first push; the engines join through their worker extension
    (sampling/vllm_worker.py) while this process creates the group, so both sides rendezvous."""

    def __init__(self, samplers: Sequence[Any], timeout: float = 600.0, bucket_bytes: int = BUCKET_BYTES,
                 device: Any = None):
        self.samplers, self.timeout, self.bucket_bytes = list(samplers), timeout, bucket_bytes
        self.device = device
        self.comm = None

    def _connect(self, deadline: _Deadline) -> None:
        import ray
        import torch
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup
        from vllm.utils.network_utils import get_open_port

        sizes = deadline.get([s.engine_workers.remote() for s in self.samplers])
        world = 1 + sum(sizes)
        host, port = ray.util.get_node_ip_address(), get_open_port()
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        joins = [s.init_weight_group.remote(host, port, off, world) for s, off in zip(self.samplers, offsets)]
        group = StatelessProcessGroup.create(host=host, port=port, rank=0, world_size=world,
                                             store_timeout=int(self.timeout))
        self.device = self.device or torch.device("cuda", torch.cuda.current_device())
        self.comm = PyNcclCommunicator(group, device=self.device)
        deadline.get(joins)

    def push(self, named_tensors: Iterable[tuple[str, Any]]) -> SyncStats:
        import torch

        from .sampling.vllm_worker import bucket_layout, dtype_sizes

        start = time.perf_counter()
        deadline = _Deadline(self.timeout, f"{len(self.samplers)} vLLM engine(s) over NCCL")
        if self.comm is None:
            self._connect(deadline)
        stats = SyncStats()
        stream = torch.cuda.current_stream()
        for bucket in buckets(named_tensors, self.bucket_bytes):
            metas = [(name, str(t.dtype).removeprefix("torch."), list(t.shape)) for name, t in bucket]
            layout = bucket_layout(metas)
            flat = {dtype: torch.empty(n, dtype=getattr(torch, dtype), device=self.device)
                    for dtype, n in dtype_sizes(layout).items()}
            for (_, t), (_, dtype, _, s, n) in zip(bucket, layout):
                flat[dtype][s:s + n].copy_(t.detach().reshape(-1), non_blocking=True)
            receives = [s.receive_bucket.remote(metas) for s in self.samplers]
            for dtype in sorted(flat):  # the order receivers use
                self.comm.broadcast(flat[dtype], src=0, stream=stream)
            deadline.wait_for(stream)  # a dead engine never completes the broadcast: poll, don't block
            deadline.get(receives)
            stats.tensors += len(bucket)
            stats.bytes += sum(t.numel() * t.element_size() for _, t in bucket)
        deadline.get([s.weights_loaded.remote() for s in self.samplers])
        stats.seconds = time.perf_counter() - start
        return stats

    def close(self) -> None:
        self.comm = None


def make_weight_sync(samplers: Sequence[Any], *, backend: str, gpu: bool, timeout: float) -> Any:
    """NCCL to vLLM engines on GPUs; the object store otherwise (CPU, transformers samplers)."""
    if backend == "vllm" and gpu:
        return NcclSync(samplers, timeout)
    return ObjectStoreSync(samplers, timeout)
