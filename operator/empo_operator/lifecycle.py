"""Lifecycle decisions that need no API: spec checks, restart backoff, which attempt is current."""

from __future__ import annotations

import json
from typing import Any, Mapping

from pydantic import ValidationError

from empo_api.errors import SpecError
from empo_api.models import MUTABLE_SPEC_FIELDS, EmpoRun
from empo_api.validate import model_errors

from .builders import CONFIG_KEY, LABEL_ATTEMPT
from .defaults import DefaultsError, defaulted
from .settings import Settings
from .status import FAILED, Problem

INVALID_SPEC = "InvalidSpec"
IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"
OPERATOR_DEFAULTS = "OperatorDefaults"


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt `attempt` (1 = the first restart): base, 2*base, 4*base, ... at most cap."""
    if attempt <= 0:
        return 0.0
    return min(cap, base * 2 ** (attempt - 1))


def manifest_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The user's part of an EmpoRun body: what the models validate (status and server fields dropped)."""
    meta = body.get("metadata") or {}
    kept = {"name": meta.get("name"), "namespace": meta.get("namespace")}
    if meta.get("uid"):
        kept["uid"] = meta["uid"]  # names the attempts' RayJobs
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": kept,
        "spec": dict(body.get("spec") or {}),
    }


def parse_run(body: Mapping[str, Any]) -> EmpoRun | None:
    """The run as the models read it, without the operator's defaults; None if it does not parse."""
    try:
        return EmpoRun.model_validate(manifest_of(body))
    except ValidationError:
        return None


def validate_run(body: Mapping[str, Any], settings: Settings,
                 accepted: dict[str, Any] | None = None) -> tuple[EmpoRun | None, Problem | None]:
    """The run with its effective spec, the operator's defaults applied once (defaults.defaulted):
    what every builder takes. Or the problem that names every bad field; for a run accepted before
    (`accepted`, its record), the problem when the spec changes a field immutable on a live run."""
    try:
        run = defaulted(EmpoRun.model_validate(manifest_of(body)), settings, accepted)
    except ValidationError as exc:
        errors = "; ".join(str(e) for e in model_errors(exc))
        return None, Problem(INVALID_SPEC, f"the spec is invalid: {errors}")
    except DefaultsError as exc:
        return None, Problem(OPERATOR_DEFAULTS, str(exc), permanent=False)
    except SpecError as exc:
        return None, Problem(INVALID_SPEC, str(exc))
    return run, refused_change(run, accepted)


def accepted_spec(configmap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec the operator accepted last (the ConfigMap the trainer reads), wire form."""
    if not configmap:
        return None
    try:
        return json.loads((configmap.get("data") or {})[CONFIG_KEY])["spec"]
    except (KeyError, TypeError, ValueError):
        return None


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


def refused_change(run: EmpoRun, accepted: dict[str, Any] | None) -> Problem | None:
    """A Problem when the defaulted run changes a field that is immutable on a live run. Its
    defaults are the accepted spec's (validate_run), so only the user's changes count."""
    if accepted is None:
        return None
    changed = immutable_changes(accepted, run.spec.to_wire())
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return Problem(IMMUTABLE_FIELD_CHANGED,
                   f"{shown}: immutable on a live run; put the old value back or create a new EmpoRun "
                   f"(mutable: {', '.join(MUTABLE_SPEC_FIELDS)})")


def standing_problem(status: Mapping[str, Any] | None) -> Problem | None:
    """A refused spec change recorded in Stalled, which RayJob updates must not clear."""
    status = status or {}
    if status.get("phase") == FAILED:
        return None
    for c in status.get("conditions") or []:
        if c.get("type") == "Stalled" and c.get("status") == "True" \
                and c.get("reason") in (INVALID_SPEC, IMMUTABLE_FIELD_CHANGED, OPERATOR_DEFAULTS):
            return Problem(c["reason"], c.get("message", ""), permanent=c["reason"] != OPERATOR_DEFAULTS)
    return None


def attempt_of(rayjob: Mapping[str, Any]) -> int | None:
    raw = ((rayjob.get("metadata") or {}).get("labels") or {}).get(LABEL_ATTEMPT)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def status_changed(old: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> bool:
    """Whether applying the merge patch would change anything (skip needless writes)."""
    old = old or {}
    return any(old.get(k) != v for k, v in patch.items())


RAY_AUTH_DROPPED = "RayAuthDropped"


def ray_auth_dropped(stored: Mapping[str, Any] | None) -> str | None:
    """Why Ray token auth is off for a RayJob the API server stored, or None when it is on.

    The operator always asks for it (rayjob.build_rayjob); a KubeRay whose RayJob CRD predates
    `authOptions` (before 1.5.1) makes the API server prune the field without a word, and the run's
    dashboard and GCS then take anyone's jobs."""
    cluster = ((stored or {}).get("spec") or {}).get("rayClusterSpec") or {}
    if (cluster.get("authOptions") or {}).get("mode") == "token":
        return None
    return ("the API server dropped spec.rayClusterSpec.authOptions from the RayJob: the installed KubeRay's "
            "CRDs predate Ray token authentication, so this run's Ray dashboard and GCS accept "
            "unauthenticated jobs (only its NetworkPolicy guards them); install KubeRay >= 1.5.1")
