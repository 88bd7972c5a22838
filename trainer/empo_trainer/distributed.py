"""How learner processes share a model: FSDP2 through accelerate, mixed precision, device layout.

`learner.sharding` maps to the FSDP configuration of HF TrainingArguments (accelerate's FSDP2 plugin
underneath); `none` stays DDP. DeepSpeed is not in the trainer image: `zero3` is accepted as the
name of FSDP2's full sharding (the same split of parameters, gradients and optimizer states) and
`zero2` as FSDP2 without resharding after forward.

Mixed precision: the learner keeps fp32 master weights and optimizer states and computes in
`learner.precision` (bf16 autocast under DDP; FSDP2's MixedPrecisionPolicy with bf16 parameters
for compute and fp32 gradient reduction when sharded). At the paper's learning rate of 1e-6 a
bf16 master copy loses most updates to rounding, so the weights are never stored in bf16.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from empo_api.models import EmpoRunSpec


class DeviceError(RuntimeError):
    """The learner asked for GPUs and sees none; the message says what it saw and what to change."""


def fsdp_kwargs(spec: EmpoRunSpec) -> dict[str, Any]:
    """Pure: the TrainingArguments (GRPOConfig) keys for spec.learner.sharding.

    Empty for `none` and for a single learner process (FSDP needs a process group)."""
    learner = spec.learner
    if learner.sharding == "none" or learner.ranks() < 2:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            # full shard (fsdp, zero3) frees gathered layers after forward; zero2 keeps them for backward
            "reshard_after_forward": learner.sharding != "zero2",
            # wrap each decoder layer (the model's _no_split_modules), as accelerate does by default
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            # FSDP's own activation checkpointing: HF gradient checkpointing would all-gather twice
            "activation_checkpointing": learner.gradient_checkpointing,
        },
        "gradient_checkpointing": False,
    }


def learner_uses_cpu(spec: EmpoRunSpec, cuda_devices: int, visible: str | None) -> bool:
    """True to learn on CPU; a DeviceError when the spec asked for GPUs and none is visible."""
    if spec.learner.gpus_per_replica == 0:
        return True
    if cuda_devices == 0:
        raise DeviceError(
            f"spec.learner.gpusPerReplica is {spec.learner.gpus_per_replica} but this learner process sees no CUDA "
            f"device (CUDA_VISIBLE_DEVICES={visible!r}); refusing to train on CPU instead. Set learner.gpusPerReplica "
            "to 0 to learn on CPU, or run where the GPUs are (a GPU node, the NVIDIA device plugin, a CUDA build of torch)")
    return False


def prepare(trainer: Any) -> None:
    """Finish the FSDP setup TrainingArguments started, before `train()` shards the model.

    - fp32 gradient reduction under bf16 compute (accelerate's default reduces in bf16).
    - On CPU, accelerate 1.15 drops the FSDP plugin (state.py registers it only for multi-GPU
      distributed types) and would fall back to DDP. FSDP2 itself runs on CPU over gloo, so we
      register the plugin the way accelerate does on GPUs; CPU runs then shard like GPU runs.
    """
    args = trainer.args
    if not getattr(args, "fsdp_plugin_args", None):
        return
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import MixedPrecisionPolicy

    state = trainer.accelerator.state
    if getattr(state, "fsdp_plugin", None) is None:
        plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        # accelerate keeps the two states in step (AcceleratorState() re-reads PartialState)
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        trainer.is_fsdp_enabled = True
    plugin = state.fsdp_plugin
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(state.mixed_precision)
    if compute is not None:
        plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)


def node_local_ranks(devices: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, int, int]]:
    """Pure: per learner rank, (CUDA_VISIBLE_DEVICES, LOCAL_RANK, LOCAL_WORLD_SIZE).

    `devices` is each rank's (node, GPU ids Ray gave it). Ray shows each actor only its own GPU;
    ranks on one node then cannot see each other's devices and NCCL loses peer-to-peer (NVLink)
    transfers. Like Ray Train, every rank on a node sees the node's learner GPUs and picks its own
    by LOCAL_RANK. CPU ranks (no GPU ids) keep the environment as it is."""
    by_node: dict[str, list[str]] = {}
    for node, gpus in devices:
        by_node.setdefault(node, []).extend(str(g) for g in gpus)
    out = []
    for node, gpus in devices:
        if not gpus:
            same = [i for i, (n, _) in enumerate(devices) if n == node]
            out.append(("", same.index(len(out)), len(same)))
            continue
        shared = sorted(set(by_node[node]), key=lambda g: (len(g), g))
        out.append((",".join(shared), shared.index(str(gpus[0])), len(shared)))
    return out


def rank_environment(address: str, rank: int, world_size: int, visible: str, local_rank: int,
                     local_world_size: int) -> dict[str, str]:
    """Pure: the variables torch.distributed (through accelerate) initialises from."""
    host, port = address.rsplit(":", 1)
    env = {"MASTER_ADDR": host, "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": str(world_size),
           "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(local_world_size)}
    if visible:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return env


def visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")
