"""The capacity plan: estimated GPU memory per learner process and per sampler engine.

Pure arithmetic over the spec, the model's shape and the GPU's memory (`empo plan RUN.yaml`
prints it). Estimates, not measurements: they follow where the bytes go in this trainer.

Learner process (one per GPU), P parameters, R learner processes:
- fp32 master weights 4P, fp32 gradients 4P, AdamW moments 8P: divided by R when sharded (FSDP2
  full shard; zero2 also keeps every layer's compute-dtype copy gathered through forward and
  backward), whole on every process under DDP (plus the autocast cache: a compute-dtype copy of
  the weights during forward).
- FSDP2 gathers one wrapped unit at a time (and prefetches the next): 2 x the largest unit in the
  compute dtype, plus its unsharded fp32 gradient before the reduce-scatter.
- Activations of one micro-batch (b completions of s = maxPromptLength + maxCompletionLength
  tokens): with checkpointing the L layer inputs (b s h bytes-per-element each) plus one layer's
  working set, else every layer's; a layer keeps about 34 b s h bytes in 16-bit compute with
  fused attention (Korthikanti et al. 2022), twice that in fp32.
- The LM head through TRL's fused head (trl.trainer.utils.add_fused_lm_head): the full logits are
  never materialised; log-probs come from tiles of at most 4096 tokens x 32768 vocabulary entries
  (a compute-dtype product and its fp32 transform), and the backward accumulates the head's
  gradient (vocab x h) and the hidden states' gradient (N x h, N = b x maxCompletionLength
  completion tokens) in fp32.
- A fixed reserve for the CUDA context, NCCL buffers and allocator fragmentation.

Sampler engine (vLLM, tensorParallelSize t GPUs): the weights in spec.model.dtype split over t;
vLLM takes gpuMemoryUtilization of each GPU and the KV cache gets what the weights and its
activation reserve leave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .models import EmpoRunSpec
from .placement import BUNDLE_CPUS, plan_placement

GIB = 2**30
RESERVE_BYTES = 3 * GIB  # CUDA context, NCCL, allocator fragmentation (learner)
VLLM_ACTIVATION_BYTES = 2 * GIB  # vLLM's profiled activation peak and CUDA graphs (sampler)
DEFAULT_GPU_GIB = 80.0
# The grace a pod of the run gets to stop (terminationGracePeriodSeconds, spec.ray.terminationGracePeriodSeconds
# overrides): the step in progress, then the lead learner's upload of the checkpoint, which holds the
# fp32 weights and AdamW's two fp32 moments (12 bytes per parameter, whatever the sharding: rank 0
# commits every file), at a multipart rate one pod reaches to an in-region S3 endpoint
# (benchmarks/bench_storage.py measures yours), and a margin for the driver to exit.
STEP_ALLOWANCE_SECONDS = 60
CHECKPOINT_BYTES_PER_PARAM = 12
UPLOAD_BYTES_PER_SECOND = 500e6
EXIT_MARGIN_SECONDS = 25  # the driver gives up its step this long before the SIGKILL; the hook then lingers and stops Ray
UNKNOWN_MODEL_GRACE_SECONDS = 600  # a model whose shape `empo plan` does not know: room for a 7B
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}
COMPUTE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# TRL's fused LM head tiles (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, utils._CHUNKED_LOGPROB_CHUNK_SIZE)
FUSED_TOKEN_TILE, FUSED_VOCAB_TILE = 4096, 32768


@dataclass(frozen=True)
class ModelShape:
    """What the memory depends on: a decoder-only transformer's dimensions."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        bias = (self.hidden + 2 * kv) if self.qkv_bias else 0
        return attn + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        head = 0 if self.tied else self.embedding_params
        return self.layers * self.layer_params + self.embedding_params + head + self.hidden

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        """From a Hugging Face config.json (Llama, Qwen2, Mistral and alike)."""
        try:
            heads = config["num_attention_heads"]
            return cls(hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                       intermediate=config["intermediate_size"], heads=heads,
                       kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                       tied=bool(config.get("tie_word_embeddings", False)),
                       qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False)))
        except KeyError as exc:
            raise ValueError(f"config.json has no {exc.args[0]}; pass the shape with --model-config") from None


# Shapes of the models the examples name (their config.json figures), so a plan needs no download.
_QWEN25_7B = ModelShape(3584, 28, 18944, 28, 4, 152064, False, True)
_QWEN25_15B = ModelShape(1536, 28, 8960, 12, 2, 151936, True, True)
KNOWN_MODELS = {
    "qwen/qwen2.5-math-7b": _QWEN25_7B,
    "qwen/qwen2.5-7b": _QWEN25_7B,
    "qwen/qwen2.5-7b-instruct": _QWEN25_7B,
    "qwen/qwen2.5-3b": ModelShape(2048, 36, 11008, 16, 2, 151936, True, True),
    "qwen/qwen2.5-3b-instruct": ModelShape(2048, 36, 11008, 16, 2, 151936, True, True),
    "qwen/qwen2.5-math-1.5b": _QWEN25_15B,
    "qwen/qwen2.5-1.5b-instruct": _QWEN25_15B,
    "bundled:smollm2-135m-instruct": ModelShape(576, 30, 1536, 9, 3, 49152, True),
    "bundled:tiny-random": ModelShape(64, 2, 128, 4, 2, 49152, True),
}


def known_shape(source: str) -> ModelShape | None:
    return KNOWN_MODELS.get(source.lower().rstrip("/"))


@dataclass
class Estimate:
    """One process's (or engine GPU's) memory, component by component, in bytes."""

    role: str
    pods: int
    per_pod: int  # processes (learner) or engines (sampler) per pod
    gpus_each: int
    parts: dict[str, float] = field(default_factory=dict)
    limit: float = 0.0  # the bytes it may use: the GPU (learner), gpuMemoryUtilization of it (sampler)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.limit


@dataclass
class CapacityPlan:
    shape: ModelShape
    gpu_bytes: float
    estimates: list[Estimate]
    warnings: list[str]
    grace_seconds: int = 0  # terminationGracePeriodSeconds of the run's pods (preemption_grace_seconds)
    spec: EmpoRunSpec | None = None

    @property
    def fits(self) -> bool:
        return not self.warnings


def gpu_memory_from_selector(node_selector: dict[str, str]) -> float | None:
    """GiB from a GPU product label such as NVIDIA-H100-80GB-HBM3, when the spec pins one."""
    for value in node_selector.values():
        m = re.search(r"(\d+)GB", value, re.IGNORECASE)
        if m:
            return float(m.group(1))
    return None


def learner_estimate(spec: EmpoRunSpec, shape: ModelShape, gpu_bytes: float) -> Estimate:
    learner, a = spec.learner, spec.algorithm
    ranks = learner.ranks()
    p = shape.params
    sharded = learner.sharding != "none" and ranks > 1
    share = ranks if sharded else 1
    cb = COMPUTE_BYTES[learner.precision] if learner.gpus_per_replica else 4
    _, micro, _ = spec.batch_geometry()
    seq = a.max_prompt_length + a.max_completion_length
    parts: dict[str, float] = {
        "weights (fp32 master)": 4 * p / share,
        "gradients (fp32)": 4 * p / share,
        "optimizer (AdamW, fp32)": 8 * p / share,
    }
    if sharded:
        unit = max(shape.layer_params, shape.embedding_params)
        if learner.sharding == "zero2":
            parts["gathered weights (compute dtype)"] = cb * p
        else:
            parts["gathered units (FSDP2)"] = 2 * cb * unit + 4 * unit
    elif cb != 4:
        parts["autocast weight cache"] = cb * p
    layer_act = 34 * micro * seq * shape.hidden * cb / 2
    if learner.gradient_checkpointing:
        parts["activations"] = shape.layers * micro * seq * shape.hidden * cb + layer_act
    else:
        parts["activations"] = shape.layers * layer_act
    tokens = micro * a.max_completion_length
    parts["LM head (TRL fused, tiled)"] = (min(tokens, FUSED_TOKEN_TILE) * FUSED_VOCAB_TILE * (cb + 4)
                                           + 4 * shape.vocab * shape.hidden + 4 * tokens * shape.hidden)
    parts["reserve"] = RESERVE_BYTES
    est = Estimate("learner", learner.replicas, max(1, learner.gpus_per_replica), 1 if learner.gpus_per_replica else 0,
                   parts, gpu_bytes)
    est.notes.append(f"{ranks} learner process(es), {'sharded ' + str(learner.sharding) if sharded else 'DDP'}, "
                     f"micro-batch {micro} x {seq} tokens, compute {learner.precision if cb != 4 else 'fp32'}")
    return est


def sampler_estimate(spec: EmpoRunSpec, shape: ModelShape, gpu_bytes: float) -> Estimate | None:
    s, a = spec.sampler, spec.algorithm
    engines = s.engines()
    if not engines:
        return None
    tp = s.tensor_parallel_size
    wb = DTYPE_BYTES.get(spec.model.dtype, 2)
    budget = s.gpu_memory_utilization * gpu_bytes
    weights = wb * shape.params / tp
    kv = budget - weights - VLLM_ACTIVATION_BYTES
    est = Estimate("sampler", s.replicas, s.gpus_per_replica // tp, tp,
                   {"weights": weights, "vLLM activations": VLLM_ACTIVATION_BYTES, "KV cache": max(kv, 0.0)}, budget)
    per_token = 2 * shape.layers * max(1, shape.kv_heads // tp) * shape.head_dim * wb
    seq = a.max_prompt_length + a.max_completion_length
    sequences = int(max(kv, 0) // (per_token * seq))
    est.notes.append(f"{engines} engine(s) of TP {tp}; KV cache {per_token / 1024:.0f} KiB/token per GPU: "
                     f"{sequences} sequences of {seq} tokens at once")
    if 0 <= kv and sequences < a.num_generations:
        est.notes.append(f"the KV cache holds fewer than one group ({a.num_generations} sequences)")
    if kv < 0:
        est.parts["KV cache"] = 0.0
        est.parts["missing"] = -kv
    return est


def preemption_grace_seconds(spec: EmpoRunSpec, shape: "ModelShape | None") -> int:
    """terminationGracePeriodSeconds of the run's pods: the spec's, or sized from the checkpoint."""
    if spec.ray.termination_grace_period_seconds is not None:
        return spec.ray.termination_grace_period_seconds
    if shape is None:
        return UNKNOWN_MODEL_GRACE_SECONDS
    upload = CHECKPOINT_BYTES_PER_PARAM * shape.params / UPLOAD_BYTES_PER_SECOND
    return int(STEP_ALLOWANCE_SECONDS + upload + EXIT_MARGIN_SECONDS + 0.999)


LOGS_BYTES = 2 * GIB  # Ray's session logs and spill, the trainer's scratch, per pod


def node_disk_bytes(spec: EmpoRunSpec, shape: "ModelShape | None", role: str) -> int | None:
    """The node disk one pod of `role` (head, learner, sampler) fills in its cache: the model in its
    dtype (the head's Hub download before staging, each worker's verified copy from S3), and on a
    learner two checkpoints (the one it writes before the upload and the one a resumed attempt
    downloads, CHECKPOINT_BYTES_PER_PARAM each); None when the model's shape is unknown."""
    if shape is None:
        return None
    model = DTYPE_BYTES.get(spec.model.dtype, 2) * shape.params
    checkpoints = 2 * CHECKPOINT_BYTES_PER_PARAM * shape.params if role == "learner" else 0
    return int(model + checkpoints + LOGS_BYTES)


def plan_capacity(spec: EmpoRunSpec, shape: ModelShape, gpu_gib: float | None = None) -> CapacityPlan:
    gib = gpu_gib or gpu_memory_from_selector(spec.ray.node_selector) or DEFAULT_GPU_GIB
    gpu_bytes = gib * GIB
    estimates = [e for e in (sampler_estimate(spec, shape, gpu_bytes), learner_estimate(spec, shape, gpu_bytes)) if e]
    warnings = []
    for e in estimates:
        if not e.gpus_each:
            continue  # a CPU learner: host memory, not a GPU
        if not e.fits:
            warnings.append(f"{e.role}: {e.total / GIB:.1f} GiB per GPU exceeds {e.limit / GIB:.1f} GiB")
        elif any("fewer than one group" in n for n in e.notes):
            warnings.append(f"{e.role}: " + next(n for n in e.notes if "fewer than one group" in n))
    for group in plan_placement(spec).groups:  # each process's actor reserves CPUs of its pod
        cpus = _cpus(spec.ray.worker.cpu)
        if cpus is not None and cpus < group.bundles_per_pod * BUNDLE_CPUS:
            warnings.append(f"{group.name} pod: {group.bundles_per_pod} processes need {group.bundles_per_pod * BUNDLE_CPUS:g} "
                            f"CPUs, ray.worker.cpu is {spec.ray.worker.cpu}: the actors that do not fit never start")
    learner = spec.learner
    host = 4 * shape.params * max(1, learner.gpus_per_replica)  # each process loads fp32 weights before sharding
    pod = _quantity_bytes(spec.ray.worker.memory)
    if pod is not None and host > pod:
        warnings.append(f"learner pod: {max(1, learner.gpus_per_replica)} process(es) load the fp32 model "
                        f"({host / GIB:.1f} GiB) into {spec.ray.worker.memory} of pod memory (ray.worker.memory)")
    return CapacityPlan(shape, gpu_bytes, estimates, warnings, preemption_grace_seconds(spec, shape), spec)


def _cpus(q: str) -> float | None:
    try:
        return float(q[:-1]) / 1000 if q.endswith("m") else float(q)
    except ValueError:
        return None


def _quantity_bytes(q: str) -> float | None:
    m = re.fullmatch(r"([0-9.]+)([KMGTPE]i?)?", q)
    if not m:
        return None
    unit = m.group(2) or ""
    power = "KMGTPE".index(unit[0]) + 1 if unit else 0
    return float(m.group(1)) * ((1024 if unit.endswith("i") else 1000) ** power)


def render(plan: CapacityPlan) -> list[str]:
    """The plan as the lines `empo plan` prints."""
    s = plan.shape
    lines = [f"model: {s.params / 1e9:.2f}B parameters ({s.layers} layers, hidden {s.hidden}, vocab {s.vocab}); "
             f"GPU {plan.gpu_bytes / GIB:.0f} GiB"]
    for e in plan.estimates:
        unit = "learner processes" if e.role == "learner" else "engines"
        lines.append("")
        lines.append(f"{e.role}: {e.pods} pod(s), {e.per_pod} {unit} per pod, {e.gpus_each} GPU(s) each"
                     + ("" if e.gpus_each else " (CPU)"))
        for note in e.notes:
            lines.append(f"  {note}")
        for name, value in e.parts.items():
            lines.append(f"  {name:<34} {value / GIB:8.2f} GiB")
        verdict = "fits" if e.fits else "DOES NOT FIT"
        lines.append(f"  {'total per GPU':<34} {e.total / GIB:8.2f} GiB of {e.limit / GIB:.2f}  {verdict}")
    if plan.grace_seconds:
        ckpt = CHECKPOINT_BYTES_PER_PARAM * s.params
        lines.append("")
        lines.append(f"preemption grace: {plan.grace_seconds} s per pod (checkpoint about {ckpt / GIB:.1f} GiB; "
                     "spec.ray.terminationGracePeriodSeconds sets it)")
        disk = {role: node_disk_bytes(plan.spec, s, role) for role in ("head", "learner", "sampler")} \
            if plan.spec is not None else {}
        if disk:
            lines.append("node disk (ephemeral-storage request, the pod's cache): "
                         + ", ".join(f"{role} {b / GIB:.1f} GiB" for role, b in disk.items() if b)
                         + " (spec.ray.head/worker.ephemeralStorage sets it)")
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    return lines
