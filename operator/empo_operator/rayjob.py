"""The RayJob of one attempt of a run and the pods it asks KubeRay for (pure): from the defaulted run
(defaults.defaulted) and the operator's settings to a manifest.

Every pod runs the trainer image as the run's own ServiceAccount (check_identities), mounts the run's
ConfigMap, keeps its caches on one volume (_with_cache) and wears the operator's security contexts
(_secure). The names and labels come from builders, shared with the run's other children.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from empo_api.models import EmpoRun, EmpoRunSpec
from empo_api.capacity import EXIT_MARGIN_SECONDS, LOGS_BYTES, known_shape, node_disk_bytes, preemption_grace_seconds
from empo_api.errors import SpecError
from empo_api.placement import LEARNER, GroupPlan, PlacementPlan, group_resource, plan_placement

from .builders import (CONFIG_KEY, DASHBOARD_PORT, KUEUE_PRIORITY_LABEL, KUEUE_QUEUE_LABEL, LABEL_ATTEMPT,
                       TRAINING_METRICS_PORT, TRAINING_METRICS_PORT_NAME, config_name, labels, object_meta,
                       rayjob_name, run_uid, trainer_name)
from .settings import Settings

CONFIG_MOUNT = "/etc/empo"
CONFIG_VOLUME = "empo-config"
ENTRYPOINT = f"python -m empo_trainer run --config {CONFIG_MOUNT}/{CONFIG_KEY}"
# K8sJobMode: KubeRay's default and the mode Kueue and suspend are documented with; the submitter
# Job only runs `ray job submit` and follows the logs, the driver itself runs on the head.
SUBMISSION_MODE = "K8sJobMode"
GPU_RESOURCE = "nvidia.com/gpu"
# Ray's own head ports, by the names KubeRay looks them up with. KubeRay (1.5) builds the head Service
# from the container's declared ports alone as soon as one is declared: without "dashboard" the
# Service lacks 8265, KubeRay logs "dashboard port is not found", never creates the submitter Job and
# the run stays Initializing; without "gcs-server" workers cannot join and without "client" no
# `ray.init("ray://...")` reaches the cluster.
RAY_HEAD_PORTS = {"gcs-server": 6379, "dashboard": DASHBOARD_PORT, "client": 10001, "metrics": 8080}


def _env(run: EmpoRun, spec: EmpoRunSpec, attempt: int) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "EMPO_RUN_NAME", "value": run.name},
        {"name": "EMPO_RUN_NAMESPACE", "value": run.namespace},
        {"name": "EMPO_ATTEMPT", "value": str(attempt)},
    ]
    ref = spec.storage.credentials_secret_ref
    if ref is not None:
        # secretKeyRef: the kubelet reads the Secret, the operator never does.
        for var, key in (("AWS_ACCESS_KEY_ID", ref.access_key_id_key),
                         ("AWS_SECRET_ACCESS_KEY", ref.secret_access_key_key)):
            env.append(_secret_env(var, ref.name, key))
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_REGION", "value": spec.storage.region})
    return env


def _user_env(spec: EmpoRunSpec) -> list[dict[str, Any]]:
    """spec.ray.env, after the operator's own variables."""
    return [{"name": e.name, "value": e.value} if e.secret_key_ref is None
            else {"name": e.name, "valueFrom": {"secretKeyRef": e.secret_key_ref.to_wire()}} for e in spec.ray.env]


def _pod_platform(run: EmpoRun, spec: EmpoRunSpec) -> dict[str, Any]:
    """Pod fields every pod of the run shares, the submitter's included: the run's own identity,
    pull secrets and priority."""
    fields: dict[str, Any] = {"serviceAccountName": trainer_name(run.name)}
    if spec.ray.image_pull_secrets:
        fields["imagePullSecrets"] = [r.to_wire() for r in spec.ray.image_pull_secrets]
    if spec.ray.priority_class_name:
        fields["priorityClassName"] = spec.ray.priority_class_name
    return fields


def _with_platform(pod_spec: dict[str, Any], run: EmpoRun, spec: EmpoRunSpec) -> dict[str, Any]:
    """What a platform team sets on every Ray pod: extra environment, pull secrets, priority."""
    ray = spec.ray
    for c in pod_spec["containers"]:
        c["env"] = c["env"] + _user_env(spec)
        if ray.env_from:
            c["envFrom"] = [e.to_wire() for e in ray.env_from]
    pod_spec.update(_pod_platform(run, spec))
    return pod_spec


def _secret_env(var: str, name: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def _head_env(spec: EmpoRunSpec) -> list[dict[str, Any]]:
    """The driver alone serves /metrics and stages the model (so it alone holds HF_TOKEN)."""
    env = [{"name": "EMPO_METRICS_PORT", "value": str(TRAINING_METRICS_PORT)}]
    if spec.model.token_secret_ref is not None:
        env.append(_secret_env("HF_TOKEN", spec.model.token_secret_ref.name, spec.model.token_secret_ref.key))
    return env


def _learner_env(spec: EmpoRunSpec) -> list[dict[str, Any]]:
    """transformers' WandbCallback runs in learner rank 0, on a learner pod."""
    wandb = spec.tracking.wandb
    if wandb is None or wandb.api_key_secret_ref is None:
        return []
    return [_secret_env("WANDB_API_KEY", wandb.api_key_secret_ref.name, wandb.api_key_secret_ref.key)]


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = gpus
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def ray_resources_param(resources: dict[str, int]) -> str:
    """rayStartParams value for custom resources: JSON in single quotes, the form KubeRay writes
    itself (its accelerator detection trims the quotes and parses the JSON; the shell unquotes it
    for `ray start`)."""
    return "'" + json.dumps(resources) + "'"


def pod_labels(run: EmpoRun, component: str, attempt: int) -> dict[str, str]:
    """A pod's labels: the run's (its NetworkPolicy selects by them) and the attempt's, by which the
    operator tells the current attempt's pods from a replaced one's."""
    return {**labels(run, component), LABEL_ATTEMPT: str(attempt)}


LINGER_MARGIN = 15  # the hook's own end: preemption.LINGER_SECONDS, then `ray stop`


def grace_seconds(spec: EmpoRunSpec) -> int:
    return preemption_grace_seconds(spec, known_shape(spec.model.source))


def _stopping(spec: EmpoRunSpec, worker: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The container's preStop hook and the variable that bounds the driver's wait.

    KubeRay runs `ray start --block` under bash as the container's PID 1, which does not pass
    SIGTERM on: the hook is what tells the trainer. On the head it signals the driver, which
    finishes its step, commits the checkpoint and exits 75 (trainer: preemption.py); on a worker it
    asks a learner there to do the same and waits for the actors to end. The driver gives up the
    step EXIT_MARGIN_SECONDS before the kubelet's SIGKILL, so LATEST always names a whole checkpoint; the
    hook then stops the pod's Ray processes, so the container ends without waiting for the SIGKILL."""
    grace = grace_seconds(spec)
    command = ["python", "-m", "empo_trainer", "preempt", "--stop-ray", "--wait", str(grace - LINGER_MARGIN)] \
        + (["--worker"] if worker else [])
    env = [{"name": "EMPO_PREEMPT_GRACE_SECONDS", "value": str(grace - EXIT_MARGIN_SECONDS)}]
    return {"preStop": {"exec": {"command": command}}}, env


def _head_group(run: EmpoRun, spec: EmpoRunSpec, attempt: int) -> dict[str, Any]:
    lifecycle, stop_env = _stopping(spec, worker=False)
    return {
        # num-cpus 0: no actor lands on the head, so the worker groups hold the whole plan.
        "rayStartParams": {"num-cpus": "0"},
        "template": {
            "metadata": {"labels": pod_labels(run, "head", attempt)},
            "spec": _with_platform({
                "containers": [{
                    "name": "ray-head",
                    "image": spec.ray.image,
                    "env": _env(run, spec, attempt) + _head_env(spec) + stop_env,
                    "lifecycle": lifecycle,
                    "ports": [{"name": name, "containerPort": port} for name, port in RAY_HEAD_PORTS.items()]
                    + [{"name": TRAINING_METRICS_PORT_NAME, "containerPort": TRAINING_METRICS_PORT}],
                    "resources": _resources(spec.ray.head.cpu, spec.ray.head.memory),
                    "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True}],
                }],
                "volumes": [{"name": CONFIG_VOLUME, "configMap": {"name": config_name(run.name)}}],
                "terminationGracePeriodSeconds": grace_seconds(spec),
            }, run, spec),
        },
    }


# NCCL settings of GPU pods (learner collectives, weight sync to the engines), each replaced by the
# same name in spec.ray.env, where NCCL_SOCKET_IFNAME, NCCL_IB_HCA and the like are tuned per cluster.
NCCL_DEFAULTS = {
    "NCCL_DEBUG": "WARN",  # NCCL's own reason for a failed collective lands in the pod log
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a rank that dies fails the others instead of hanging them
}


def _nccl_env(spec: EmpoRunSpec) -> list[dict[str, Any]]:
    own = {e.name for e in spec.ray.env}
    return [{"name": k, "value": v} for k, v in NCCL_DEFAULTS.items() if k not in own]


def _worker_group(run: EmpoRun, spec: EmpoRunSpec, attempt: int, group: GroupPlan) -> dict[str, Any]:
    lifecycle, stop_env = _stopping(spec, worker=True)
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": grace_seconds(spec),
        # Workers run as the run's ServiceAccount too, but never call the API: no token in their pods.
        "automountServiceAccountToken": False,
        "containers": [{
            "name": "ray-worker",
            "image": spec.ray.image,
            "env": _env(run, spec, attempt) + (_learner_env(spec) if group.name == LEARNER else [])
            + (_nccl_env(spec) if group.gpus_per_pod else []) + stop_env,
            "resources": _resources(group.cpu, group.memory, group.gpus_per_pod),
            "lifecycle": lifecycle,
        }],
    }
    if group.gpus_per_pod:  # nodeSelector and tolerations are documented as the GPU pods' own
        if spec.ray.node_selector:
            pod_spec["nodeSelector"] = dict(spec.ray.node_selector)
        if spec.ray.tolerations:
            pod_spec["tolerations"] = [t.to_wire() for t in spec.ray.tolerations]
    if spec.ray.affinity:
        pod_spec["affinity"] = spec.ray.affinity
    _with_platform(pod_spec, run, spec)
    return {
        "groupName": group.name,
        "replicas": group.replicas,
        "minReplicas": group.replicas,
        "maxReplicas": group.replicas,
        # One unit per bundle the pod holds (one per GPU); each bundle asks for one (see placement.py).
        # Through `ray start --resources` (quoted as KubeRay quotes it: the shell unquotes it),
        # which every KubeRay >= 1.3 keeps; workerGroupSpecs[].resources needs KubeRay >= 1.5.
        "rayStartParams": {"resources": ray_resources_param({group_resource(group.name): group.bundles_per_pod})},
        "template": {"metadata": {"labels": pod_labels(run, group.name, attempt)}, "spec": pod_spec},
    }


# KubeRay's default submitter asks for 500m CPU to run `ray job submit` and follow the logs; on a small
# node that is a quarter of what the run needs. KubeRay fills in the command and the dashboard address.
SUBMITTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def _submitter_template(run: EmpoRun, spec: EmpoRunSpec, attempt: int) -> dict[str, Any]:
    """KubeRay's submitter pod (K8sJobMode): labelled as the run's, so the run's NetworkPolicy admits it
    to the dashboard whatever the attempt; pulled and prioritised like the run's other pods."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # it only talks to the Ray dashboard
        "containers": [{"name": "ray-job-submitter", "image": spec.ray.image, "resources": SUBMITTER_RESOURCES}],
        **_pod_platform(run, spec),
    }
    return {"metadata": {"labels": pod_labels(run, "submitter", attempt)}, "spec": pod_spec}


def pod_templates(rayjob: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, template) of every pod a RayJob asks KubeRay to create."""
    job, cluster = rayjob["spec"], rayjob["spec"]["rayClusterSpec"]
    out = [("rayClusterSpec.headGroupSpec.template", cluster["headGroupSpec"]["template"])]
    out += [(f"rayClusterSpec.workerGroupSpecs[{g['groupName']}].template", g["template"])
            for g in cluster.get("workerGroupSpecs") or []]
    if "submitterPodTemplate" in job:
        out.append(("submitterPodTemplate", job["submitterPodTemplate"]))
    return out


def check_identities(rayjob: dict[str, Any], run_name: str) -> None:
    """Every pod runs as the run's own ServiceAccount. KubeRay creates whatever pods a RayJob
    describes, with the ServiceAccount it names: a RayJob naming another identity would let whoever
    writes an EmpoRun act as that identity, so the operator refuses to ask for one."""
    own = trainer_name(run_name)
    for where, template in pod_templates(rayjob):
        named = template.get("spec", {}).get("serviceAccountName")
        if named != own:
            raise SpecError(f"{where} would run as ServiceAccount {named or 'default'!r}; "
                            f"the run's pods may only run as {own!r}")


def build_rayjob(run: EmpoRun, settings: Settings, attempt: int = 0,
                 plan: PlacementPlan | None = None) -> dict[str, Any]:
    """The RayJob of attempt `attempt`; `run` carries its effective spec (defaults.defaulted)."""
    spec = run.spec
    plan = plan or plan_placement(spec)
    meta = object_meta(run, rayjob_name(run.name, run_uid(run), attempt), "rayjob")
    meta["labels"][LABEL_ATTEMPT] = str(attempt)
    if spec.queue_name:
        meta["labels"][KUEUE_QUEUE_LABEL] = spec.queue_name
    if priority := (run.metadata.labels or {}).get(KUEUE_PRIORITY_LABEL):
        meta["labels"][KUEUE_PRIORITY_LABEL] = priority
    job_spec: dict[str, Any] = {
        "entrypoint": ENTRYPOINT,
        "submissionMode": SUBMISSION_MODE,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        # The operator retries failed attempts itself (each resumes from checkpoints/LATEST).
        "backoffLimit": 0,
        # Queued: created suspended, as Kueue's own webhook would make it, so that nothing starts
        # before Kueue admits it even where that webhook is not installed.
        "suspend": spec.suspend or bool(spec.queue_name),
        "submitterPodTemplate": _submitter_template(run, spec, attempt),
        "rayClusterSpec": {
            "rayVersion": spec.ray.ray_version,
            # Ray token auth: KubeRay generates the token into a Secret and hands it to every Ray
            # container and the submitter (docs/security.md).
            "authOptions": {"mode": "token"},
            "headGroupSpec": _head_group(run, spec, attempt),
            "workerGroupSpecs": [_worker_group(run, spec, attempt, g) for g in plan.groups if g.replicas],
        },
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": job_spec}
    _with_cache(rayjob, spec, settings)
    _secure(rayjob, settings)
    check_identities(rayjob, run.name)
    return rayjob


CACHE_VOLUME = "empo-cache"
CACHE_MOUNT = "/var/cache/empo"


def _with_cache(rayjob: dict[str, Any], spec: EmpoRunSpec, settings: Settings) -> None:
    """Every Ray pod keeps the model, its checkpoints and the Hugging Face cache on one volume
    (EMPO_CACHE_DIR, HF_HOME), not in the container's writable layer: an emptyDir on the node's disk by
    default, or what the platform names (Helm runPods.cacheVolume: a PVC, a hostPath). On the node's
    disk the pod requests the ephemeral storage its role fills (capacity.node_disk_bytes), so the
    scheduler places it where the model fits instead of the kubelet evicting it later;
    spec.ray.head/worker.ephemeralStorage sets request and limit instead."""
    shape = known_shape(spec.model.source)
    cluster = rayjob["spec"]["rayClusterSpec"]
    groups = [("head", spec.ray.head, cluster["headGroupSpec"]["template"]["spec"])]
    groups += [(g["groupName"], spec.ray.worker, g["template"]["spec"]) for g in cluster.get("workerGroupSpecs") or []]
    on_node = not settings.run_cache_volume or "emptyDir" in settings.run_cache_volume
    for role, resources, pod in groups:
        pod.setdefault("volumes", []).append({"name": CACHE_VOLUME, **(copy.deepcopy(settings.run_cache_volume)
                                                                        or {"emptyDir": {}})})
        (container,) = pod["containers"]
        container.setdefault("volumeMounts", []).append({"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT})
        own = {e["name"] for e in container["env"]}
        container["env"] += [{"name": k, "value": v} for k, v in (("EMPO_CACHE_DIR", CACHE_MOUNT),
                                                                  ("HF_HOME", f"{CACHE_MOUNT}/huggingface"))
                             if k not in own]
        if resources.ephemeral_storage:
            container["resources"]["requests"]["ephemeral-storage"] = resources.ephemeral_storage
            container["resources"]["limits"]["ephemeral-storage"] = resources.ephemeral_storage
        else:  # the cache elsewhere: the node's disk keeps only the logs
            need = node_disk_bytes(spec, shape, role) if on_node else LOGS_BYTES
            if need:
                container["resources"]["requests"]["ephemeral-storage"] = f"{-(-need // 2**30)}Gi"


def _secure(rayjob: dict[str, Any], settings: Settings) -> None:
    """Every pod and container of the run gets the operator's security contexts (Helm values
    runPods.podSecurityContext / runPods.securityContext; by default the restricted Pod Security
    Standard: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp). KubeRay
    copies the Ray container's context onto the init container it adds."""
    for _, template in pod_templates(rayjob):
        pod = template["spec"]
        if settings.run_pod_security_context:
            pod["securityContext"] = copy.deepcopy(settings.run_pod_security_context)
        for container in pod["containers"]:
            if settings.run_security_context:
                container["securityContext"] = copy.deepcopy(settings.run_security_context)

