"""Lifecycle decisions that need no API: spec checks, restart backoff, which attempt is current."""

from __future__ import annotations

import json
from typing import Any, Mapping

from pydantic import ValidationError

from empo_api.models import EmpoRun
from empo_api.validate import model_errors

from .builders import CONFIG_KEY, LABEL_ATTEMPT, SpecError, effective_spec, immutable_changes
from .settings import Settings
from .status import FAILED, Problem

INVALID_SPEC = "InvalidSpec"
IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt `attempt` (1 = the first restart): base, 2*base, 4*base, ... at most cap."""
    if attempt <= 0:
        return 0.0
    return min(cap, base * 2 ** (attempt - 1))


def manifest_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The user's part of an EmpoRun body: what the models validate (status and server fields dropped)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": dict(body.get("spec") or {}),
    }


def validate_run(body: Mapping[str, Any], settings: Settings) -> tuple[EmpoRun | None, Problem | None]:
    """The run, or the problem that names every bad field."""
    try:
        run = EmpoRun.model_validate(manifest_of(body))
        effective_spec(run.spec, settings)
        return run, None
    except ValidationError as exc:
        errors = "; ".join(str(e) for e in model_errors(exc))
        return None, Problem(INVALID_SPEC, f"the spec is invalid: {errors}")
    except SpecError as exc:
        return None, Problem(INVALID_SPEC, str(exc))


def accepted_spec(configmap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec the operator accepted last (the ConfigMap the trainer reads), wire form."""
    if not configmap:
        return None
    try:
        return json.loads((configmap.get("data") or {})[CONFIG_KEY])["spec"]
    except (KeyError, TypeError, ValueError):
        return None


def refused_change(run: EmpoRun, accepted: dict[str, Any] | None, settings: Settings) -> Problem | None:
    """A Problem when the new spec changes a field that is immutable on a live run."""
    if accepted is None:
        return None
    changed = immutable_changes(accepted, effective_spec(run.spec, settings).to_wire())
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return Problem(IMMUTABLE_FIELD_CHANGED,
                   f"{shown}: immutable on a live run; put the old value back or create a new EmpoRun "
                   f"(mutable: suspend, maxRestarts, eval, activeDeadlineSeconds, ttlSecondsAfterFinished, "
                   f"queueName, storage.checkpointEvery/keepLast/keepBest)")


def standing_problem(status: Mapping[str, Any] | None) -> Problem | None:
    """A refused spec change recorded in Stalled, which RayJob updates must not clear."""
    status = status or {}
    if status.get("phase") == FAILED:
        return None
    for c in status.get("conditions") or []:
        if c.get("type") == "Stalled" and c.get("status") == "True" \
                and c.get("reason") in (INVALID_SPEC, IMMUTABLE_FIELD_CHANGED):
            return Problem(c["reason"], c.get("message", ""))
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
