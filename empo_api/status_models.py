"""The EmpoRun's status: written by the operator (phase, conditions, attempts) and by the trainer
(progress, checkpoint, eval, preemption); the CRD's status schema comes from these models.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field

from .wire_model import WireModel


class Phase(str, Enum):
    pending = "Pending"
    initializing = "Initializing"
    running = "Running"
    restarting = "Restarting"
    suspended = "Suspended"
    succeeded = "Succeeded"
    failed = "Failed"


class Condition(WireModel):
    """A Kubernetes condition (metav1.Condition)."""

    type: str = Field(description="Ready, Reconciling, Stalled, Suspended, Succeeded or Failed.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="Spec generation this condition was computed from.")


class Progress(WireModel):
    step: int = Field(0, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(None, ge=0, description="Optimizer steps planned.")
    reward: float | None = Field(None, description="Mean reward of the last step.")
    reward_std: float | None = Field(None, description="Reward standard deviation of the last step.")
    semantic_entropy: float | None = Field(None, description="Mean semantic entropy (nats) of the last step.")
    filtered_fraction: float | None = Field(None, description="Share of prompts the group filter dropped.")
    tokens_per_second: float | None = Field(None, description="Generated tokens per second in the last step.")
    updated_at: str | None = Field(None, description="When the trainer last reported (RFC 3339).")


class Checkpoint(WireModel):
    step: int = Field(ge=0, description="Step of the checkpoint.")
    uri: str = Field(description="Where the checkpoint lives.")


class EvalResult(WireModel):
    step: int = Field(ge=0, description="Step evaluated.")
    accuracy: dict[str, float] = Field(default_factory=dict, description="Accuracy per benchmark (0-1).")
    average: float | None = Field(None, description="Unweighted mean over the benchmarks.")
    report_uri: str | None = Field(None, alias="reportURI", description="Where the report is.")


class Preemption(WireModel):
    """Written by the trainer when a pod of the run was told to stop and the driver ended the attempt
    on purpose (exit 75) with its last step checkpointed; the operator's next attempt resumes from it
    and does not count it against maxRestarts."""

    attempt: int = Field(ge=0, description="The attempt that was preempted.")
    step: int | None = Field(None, ge=0, description="The step its checkpoint holds (what the next attempt resumes "
                                                    "from); unset when it stopped before training started.")
    time: str = Field(description="When the driver stopped (RFC 3339).")
    message: str = Field("", max_length=1024, description="The driver's one-line account.")


class EmpoRunStatus(WireModel):
    phase: Phase = Field(Phase.pending, description="Pending, Initializing, Running, Restarting, Suspended, Succeeded or Failed.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, description="Kubernetes conditions.")
    observed_generation: int | None = Field(None, description="Spec generation the status reflects.")
    ray_job_name: str | None = Field(None, description="The RayJob of the current attempt.")
    ray_cluster_name: str | None = Field(None, description="The RayCluster of the current attempt.")
    dashboard_url: str | None = Field(None, alias="dashboardURL", description="Ray dashboard of the current attempt.")
    job_deployment_status: str | None = Field(None, description="KubeRay jobDeploymentStatus, mirrored.")
    job_status: str | None = Field(None, description="Ray job status, mirrored.")
    restarts: int = Field(0, ge=0, description="Attempts started after the first (failures and preemptions).")
    preemptions: int = Field(0, ge=0, description="Attempts that stopped with a checkpoint when told to (not counted "
                                                  "against maxRestarts).")
    last_preemption: Preemption | None = Field(None, description="The latest preempted attempt, as its trainer told it.")
    next_attempt_time: str | None = Field(None, description="When the next attempt starts, while a restart backs off (RFC 3339).")
    start_time: str | None = Field(None, description="When the first attempt started (RFC 3339).")
    completion_time: str | None = Field(None, description="When the run ended (RFC 3339).")
    step_progress: str | None = Field(None, description="step/totalSteps, for kubectl get.")
    progress: Progress | None = Field(None, description="Pushed by the trainer every step.")
    latest_checkpoint: Checkpoint | None = Field(None, description="The last committed checkpoint.")
    last_eval: EvalResult | None = Field(None, description="The latest evaluation.")
