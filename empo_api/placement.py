"""Where the Ray actors of a run go, decided once from the spec.

The operator sizes the RayJob's worker groups from this plan and the trainer driver builds its Ray
placement groups from the same plan, so the cluster KubeRay starts holds exactly the bundles the
driver asks for: no idle GPU, no actor waiting for a pod that never comes.

One worker pod per replica, and one process per GPU: a learner pod with N GPUs holds N learner
ranks (one on a CPU pod), a sampler pod with N GPUs holds N / tensorParallelSize engines. A pod
advertises as many units of a custom Ray resource named after its group (`empo_sampler`,
`empo_learner`) as it holds bundles, and every bundle asks for one unit, so a bundle can only land
on a pod of its own group and the pods hold exactly the plan's bundles.

Colocated runs (sampler.replicas == 0 or sampler.gpusPerReplica == 0) generate inside the learner
processes: there is no sampler group and no sampler bundle.

Importable with pydantic only (no Ray, no kopf).
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import EmpoRunSpec

SAMPLER = "sampler"
LEARNER = "learner"
# CPUs a bundle reserves for its actor; the rest of the pod's CPUs stay free for Ray's own workers
# (data loading, vLLM's helper processes).
BUNDLE_CPUS = 1.0


def group_resource(group: str) -> str:
    """The custom Ray resource a pod of `group` advertises (one unit per pod)."""
    return f"empo_{group}"


@dataclass(frozen=True)
class Bundle:
    """One Ray placement-group bundle: the share of one worker pod that one actor takes."""

    group: str
    gpus: int
    cpus: float = BUNDLE_CPUS

    def to_ray(self) -> dict[str, float]:
        """The bundle as ray.util.placement_group expects it."""
        out = {"CPU": self.cpus, group_resource(self.group): 1.0}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        return out


@dataclass(frozen=True)
class GroupPlan:
    """One KubeRay worker group: `replicas` identical pods, each holding `bundles_per_pod` bundles."""

    name: str
    replicas: int
    gpus_per_pod: int
    cpu: str
    memory: str
    bundles_per_pod: int = 1

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_pod


@dataclass(frozen=True)
class PlacementPlan:
    colocated: bool
    sampler_bundles: tuple[Bundle, ...]
    learner_bundles: tuple[Bundle, ...]
    groups: tuple[GroupPlan, ...]

    @property
    def total_gpus(self) -> int:
        return sum(g.gpus for g in self.groups)

    def group(self, name: str) -> GroupPlan | None:
        return next((g for g in self.groups if g.name == name), None)


def is_colocated(spec: EmpoRunSpec) -> bool:
    """Generation shares the learners' processes when no sampler engine has devices of its own;
    a vLLM sampler without GPUs (vLLM's CPU build) is an engine of its own all the same."""
    s = spec.sampler
    return s.replicas == 0 or (s.gpus_per_replica == 0 and s.backend != "vllm")


def plan_placement(spec: EmpoRunSpec) -> PlacementPlan:
    """Bundles per role and the worker groups that hold exactly those bundles."""
    worker = spec.ray.worker
    colocated = is_colocated(spec)
    sampler_bundles: tuple[Bundle, ...] = ()
    groups: list[GroupPlan] = []
    if not colocated:
        # An engine's tensor-parallel GPUs are always in one pod (vLLM needs them on one node).
        s = spec.sampler
        if s.gpus_per_replica:
            per_pod = s.gpus_per_replica // s.tensor_parallel_size
            sampler_bundles = tuple(Bundle(SAMPLER, s.tensor_parallel_size) for _ in range(s.engines()))
        else:  # vLLM's CPU build: one engine per sampler pod
            per_pod = 1
            sampler_bundles = tuple(Bundle(SAMPLER, 0) for _ in range(s.replicas))
        groups.append(GroupPlan(SAMPLER, s.replicas, s.gpus_per_replica, worker.cpu, worker.memory, per_pod))
    learner = spec.learner
    per_pod = max(1, learner.gpus_per_replica)
    learner_bundles = tuple(Bundle(LEARNER, 1 if learner.gpus_per_replica else 0) for _ in range(learner.ranks()))
    groups.append(GroupPlan(LEARNER, learner.replicas, learner.gpus_per_replica, worker.cpu, worker.memory, per_pod))
    return PlacementPlan(colocated, sampler_bundles, learner_bundles, tuple(groups))
