"""Desired child manifests of an EmpoRun: pure functions from (run, settings) to dicts.

Every child carries the labels below (set here, in one place). Owner references are added by the
handlers with kopf.adopt at creation time, because they need the EmpoRun's uid.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from empo_api.models import API_VERSION, MUTABLE_SPEC_FIELDS, PLURAL, GROUP, EmpoRun, EmpoRunSpec
from empo_api.capacity import EXIT_MARGIN_SECONDS, LOGS_BYTES, known_shape, node_disk_bytes, preemption_grace_seconds
from empo_api.errors import SpecError
from empo_api.placement import LEARNER, GroupPlan, PlacementPlan, group_resource, plan_placement

from .settings import Settings

LABEL_RUN = "empo.dev/run"
LABEL_COMPONENT = "empo.dev/component"
LABEL_ATTEMPT = "empo.dev/attempt"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "empo-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A WorkloadPriorityClass for Kueue: read from the RayJob's labels only (Kueue 0.17; otherwise it takes
# the pods' priorityClassName, spec.ray.priorityClassName), so the run's label is copied onto it.
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

# KubeRay refuses RayJob names longer than 47 characters: it derives the RayCluster
# (<job>-<5 chars>) and its head Service (<cluster>-head-svc) names from it, and those must stay
# within 63.
RAYJOB_NAME_MAX = 47
UID_PLACEHOLDER = "00000"
# Role, ServiceAccount, ConfigMap names may be DNS subdomains (253); run names are <= 63.
NAME_MAX = 253

CONFIG_MOUNT = "/etc/empo"
CONFIG_KEY = "spec.json"
CONFIG_VOLUME = "empo-config"
ENTRYPOINT = f"python -m empo_trainer run --config {CONFIG_MOUNT}/{CONFIG_KEY}"
# K8sJobMode: KubeRay's default and the mode Kueue and suspend are documented with; the submitter
# Job only runs `ray job submit` and follows the logs, the driver itself runs on the head.
SUBMISSION_MODE = "K8sJobMode"
GPU_RESOURCE = "nvidia.com/gpu"
# The driver (head) serves the run's step metrics here; the chart's PodMonitor scrapes the port by name.
TRAINING_METRICS_PORT = 9410
TRAINING_METRICS_PORT_NAME = "empo-metrics"
# Ray's own head ports, by the names KubeRay looks them up with. KubeRay (1.5) builds the head Service
# from the container's declared ports alone as soon as one is declared: without "dashboard" the
# Service lacks 8265, KubeRay logs "dashboard port is not found", never creates the submitter Job and
# the run stays Initializing; without "gcs-server" workers cannot join and without "client" no
# `ray.init("ray://...")` reaches the cluster.
DASHBOARD_PORT = 8265
RAY_HEAD_PORTS = {"gcs-server": 6379, "dashboard": DASHBOARD_PORT, "client": 10001, "metrics": 8080}


class DefaultsError(SpecError):
    """The operator's own defaults cannot complete the spec (a setting to fix, not the run)."""


def fit_name(base: str, suffix: str = "", limit: int = RAYJOB_NAME_MAX) -> str:
    """`base + suffix` if it fits in `limit`; else base cut short plus a hash of the whole base.

    Deterministic, so the operator finds its own children again after a restart, and distinct for
    two long names that share a prefix.
    """
    if len(base) + len(suffix) <= limit:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    keep = limit - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def rayjob_name(run_name: str, uid: str, attempt: int) -> str:
    """The RayJob of attempt `attempt` (0 = the first) of the run with this uid: <run>-<uid[:5]>-<attempt>.

    Always two suffixes, so no run's RayJob can take the name of another run's (a run named
    `x-r1` and attempt 1 of `x` did collide); the uid part keeps a run deleted and applied again
    under the same name clear of its predecessor's RayJob while KubeRay's finalizer still holds it.
    """
    return fit_name(run_name, f"-{uid[:5]}-{attempt}")


def run_uid(run: EmpoRun) -> str:
    """The EmpoRun's uid (from the API server); a placeholder for `empo render`, which has none."""
    return (run.metadata.model_extra or {}).get("uid") or UID_PLACEHOLDER


def creation_waves(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Children grouped into waves created one after the other, each wave's objects concurrently.

    A RoleBinding must come after its Role: the API server lets the operator bind a Role only if it
    holds the Role's permissions itself, which it can check only once the Role exists. The RayJob
    comes last, once what its pods mount and use exists.
    """
    order = {"ConfigMap": 0, "ServiceAccount": 0, "Role": 0, "NetworkPolicy": 0, "RoleBinding": 1, "RayJob": 2}
    waves: list[list[dict[str, Any]]] = [[] for _ in range(3)]
    for child in children:
        waves[order[child["kind"]]].append(child)
    return [w for w in waves if w]


def config_name(run_name: str) -> str:
    return fit_name(run_name, "-config", NAME_MAX)


def trainer_name(run_name: str) -> str:
    return fit_name(run_name, "-trainer", NAME_MAX)


def labels(run: EmpoRun, component: str) -> dict[str, str]:
    return {LABEL_RUN: run.name, LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY}


def _meta(run: EmpoRun, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": run.namespace, "labels": labels(run, component)}


# ---------------------------------------------------------------------------------------------
# spec as the trainer sees it
# ---------------------------------------------------------------------------------------------


def effective_spec(spec: EmpoRunSpec, settings: Settings) -> EmpoRunSpec:
    """The spec with the operator's defaults filled in where the user left a field unset."""
    wire = spec.to_wire()
    if not spec.ray.image:
        wire["ray"]["image"] = settings.trainer_image
    if "uri" not in spec.storage.model_fields_set and settings.default_storage_uri:
        wire["storage"]["uri"] = settings.default_storage_uri
    if not spec.storage.endpoint and settings.s3_endpoint and wire["storage"]["uri"].startswith("s3://"):
        wire["storage"]["endpoint"] = settings.s3_endpoint
    if "uri" not in spec.storage.model_fields_set and not settings.default_storage_uri:
        raise DefaultsError("spec.storage.uri is unset and the operator has no default storage "
                        "(Helm value storage.defaultUri): set spec.storage.uri to s3://bucket/prefix")
    if not wire["storage"]["uri"].startswith("s3://"):
        # The run's pods have no volume for it: checkpoints would die with the pod.
        raise SpecError(f"spec.storage.uri {wire['storage']['uri']!r} is a path inside the pod, lost when the "
                        f"pod goes; on a cluster use s3://bucket/prefix")
    try:
        return EmpoRunSpec.model_validate(wire)
    except ValueError as exc:
        raise DefaultsError(f"an operator default (EMPO_TRAINER_IMAGE, EMPO_DEFAULT_STORAGE_URI or "
                        f"EMPO_S3_ENDPOINT) is not valid: {exc}") from exc


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: node}


def _is_mutable(path: str) -> bool:
    return any(path == f or path.startswith(f + ".") for f in MUTABLE_SPEC_FIELDS)


def immutable_changes(accepted: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Spec fields (spec.<path>) that differ between two wire-form specs and may not change."""
    old_flat, new_flat = _flatten(accepted), _flatten(new)
    changed = sorted(p for p in old_flat.keys() | new_flat.keys()
                     if old_flat.get(p) != new_flat.get(p) and not _is_mutable(p))
    return [f"spec.{p}" for p in changed]


# ---------------------------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------------------------


def run_manifest(run: EmpoRun, spec: EmpoRunSpec) -> dict[str, Any]:
    """The EmpoRun as the trainer loads it: the same shape `empo train` reads from a file."""
    return {"apiVersion": API_VERSION, "kind": "EmpoRun",
            "metadata": {"name": run.name, "namespace": run.namespace}, "spec": spec.to_wire()}


def build_configmap(run: EmpoRun, settings: Settings) -> dict[str, Any]:
    spec = effective_spec(run.spec, settings)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(run, config_name(run.name), "config"),
        "data": {
            CONFIG_KEY: json.dumps(run_manifest(run, spec), indent=2, sort_keys=True),
            "name": run.name,
            "namespace": run.namespace,
        },
    }


def build_trainer_rbac(run: EmpoRun) -> list[dict[str, Any]]:
    """ServiceAccount, Role, RoleBinding: the driver may get and patch the status of this run only."""
    name = trainer_name(run.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(run, name, "trainer")},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(run, name, "trainer"),
            "rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
                       "resourceNames": [run.name], "verbs": ["get", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(run, name, "trainer"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": run.namespace}],
        },
    ]


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
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": key}}})
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
    spec = effective_spec(run.spec, settings)
    plan = plan or plan_placement(spec)
    meta = _meta(run, rayjob_name(run.name, run_uid(run), attempt), "rayjob")
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


def build_event(run: dict[str, Any], type: str, reason: str, message: str, now: str) -> dict[str, Any]:
    """A core/v1 Event about the EmpoRun (what `kubectl describe emporun` lists)."""
    meta = run["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": "EmpoRun", "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type, "reason": reason, "message": message[:1024],
        "source": {"component": MANAGED_BY}, "reportingComponent": MANAGED_BY, "reportingInstance": MANAGED_BY,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
