"""Full weights out of a learner, sharded or not, one parameter at a time.

The weight sync to the sampler engines (weight_sync.py) needs the policy's full tensors under the
names the HF model gives them. With FSDP2 every parameter is a DTensor holding this rank's shard,
and gathering one is a collective: every learner rank must take part, in the same order. So
`iter_full_weights` is called on every rank; each rank gathers each parameter in turn, and only
rank 0 yields the full tensor (the other ranks drive the gathers and yield nothing). Only one
gathered parameter exists at a time, so rank 0 never holds a second full copy of the model.
"""

from __future__ import annotations

from typing import Any, Iterator


def unwrap(model_or_trainer: Any) -> Any:
    """The HF model inside a trainer, a DDP wrapper or an accelerate wrapper.

    FSDP2 shards a model in place (same class, same parameter names), so nothing to peel there."""
    model = getattr(model_or_trainer, "model", model_or_trainer)
    while hasattr(model, "module") and not hasattr(model, "config"):
        model = model.module
    return model


# Module names wrappers insert: FSDP's activation checkpointing, FSDP1, torch.compile
_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "_orig_mod.")


def hf_name(name: str) -> str:
    """The parameter's name in the HF model, without the parts wrappers add."""
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def iter_full_weights(model_or_trainer: Any, dtype: Any = None) -> Iterator[tuple[str, Any]]:
    """(HF name, full detached tensor) for every parameter; a collective when the model is sharded.

    Every learner rank must exhaust this iterator; rank 0 receives the tensors. `dtype` casts each
    tensor after gathering (the samplers run in spec.model.dtype; the learner keeps fp32 masters).
    """
    from torch.distributed.tensor import DTensor

    model = unwrap(model_or_trainer)
    lead = _rank() == 0
    for name, param in model.named_parameters():
        tensor = param.detach()
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()  # all-gather: every rank, same order
        if not lead:
            continue
        if dtype is not None and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        yield hf_name(name), tensor


def is_sharded(model_or_trainer: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in unwrap(model_or_trainer).parameters())


def local_numel(model_or_trainer: Any) -> int:
    """Parameter elements this rank holds (its shards when sharded)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in unwrap(model_or_trainer).parameters())
