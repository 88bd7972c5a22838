"""How weights travel to the sampler engines: bounded buckets, and the flat per-dtype buffers of the
NCCL path (pure torch; syncs to real sampler actors are tests/integration/trainer/test_weight_sync.py)."""

import torch


def test_weights_travel_in_bounded_buckets_and_unpack_to_the_same_tensors():
    from empo_trainer.sampling.vllm_worker import bucket_layout, dtype_sizes
    from empo_trainer.weight_sync import buckets

    named = [("a", torch.zeros(10)), ("b", torch.zeros(10)), ("big", torch.zeros(100)), ("c", torch.zeros(5))]
    assert [[n for n, _ in b] for b in buckets(named, bucket_bytes=80)] == [["a", "b"], ["big"], ["c"]]
    # the NCCL path packs a bucket into one flat buffer per dtype; receivers cut it up the same way
    tensors = [("w", torch.arange(6.0).view(2, 3)), ("ids", torch.arange(4)), ("v", torch.tensor([7.0]))]
    layout = bucket_layout([(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in tensors])
    flat = {d: torch.empty(n, dtype=getattr(torch, d)) for d, n in dtype_sizes(layout).items()}
    for (_, t), (_, d, _, start, n) in zip(tensors, layout):
        flat[d][start:start + n] = t.reshape(-1)
    unpacked = {name: flat[d][start:start + n].view(shape) for name, d, shape, start, n in layout}
    assert all(torch.equal(unpacked[n], t) for n, t in tensors)
