"""The operator's defaults, applied once (pure): the spec as the trainer will see it.

Kueue's webhooks `Default()` an object once and every later step reads the defaulted object; here
`defaulted` does the same for an EmpoRun when a reconcile pass judges its spec (lifecycle.validate_run).
The builders (builders, rayjob, network_policy) receive that run and apply no default of their own.

Three fields have operator defaults: spec.ray.image (EMPO_TRAINER_IMAGE), spec.storage.uri
(EMPO_DEFAULT_STORAGE_URI) and spec.storage.endpoint (EMPO_S3_ENDPOINT). A run accepted before keeps
the defaults it was accepted with, read from its record (the accepted spec in its ConfigMap): after
`helm upgrade` changes the trainer image or the default storage, the next attempt of a live run does
not change silently, and comparing the new spec with the accepted one shows only what the user changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from empo_api.errors import SpecError
from empo_api.models import EmpoRun, EmpoRunSpec
from empo_api.uri import Uri

from .settings import Settings


class DefaultsError(SpecError):
    """The operator's own defaults cannot complete the spec (a setting to fix, not the run)."""


@dataclass(frozen=True)
class Defaults:
    """What fills the fields a user may leave to the operator."""

    image: str
    storage_uri: str
    s3_endpoint: str

    @classmethod
    def of(cls, settings: Settings, accepted: Mapping[str, Any] | None = None) -> "Defaults":
        """Today's settings for a new run; for a run accepted before, what its accepted spec holds."""
        recorded = accepted or {}
        storage = recorded.get("storage") or {}
        return cls(image=(recorded.get("ray") or {}).get("image") or settings.trainer_image,
                   storage_uri=storage.get("uri") or settings.default_storage_uri,
                   s3_endpoint=storage.get("endpoint") or settings.s3_endpoint)


def effective_spec(spec: EmpoRunSpec, defaults: Defaults) -> EmpoRunSpec:
    """The spec with the operator's defaults filled in where the user left a field unset."""
    wire = spec.to_wire()
    if not spec.ray.image:
        wire["ray"]["image"] = defaults.image
    if "uri" not in spec.storage.model_fields_set and defaults.storage_uri:
        wire["storage"]["uri"] = defaults.storage_uri
    uri = Uri.parse(wire["storage"]["uri"])
    if not spec.storage.endpoint and defaults.s3_endpoint and uri.is_s3:
        wire["storage"]["endpoint"] = defaults.s3_endpoint
    if "uri" not in spec.storage.model_fields_set and not defaults.storage_uri:
        raise DefaultsError("spec.storage.uri is unset and the operator has no default storage "
                            "(Helm value storage.defaultUri): set spec.storage.uri to s3://bucket/prefix")
    if not uri.is_s3:
        # The run's pods have no volume for it: checkpoints would die with the pod.
        raise SpecError(f"spec.storage.uri {wire['storage']['uri']!r} is a path inside the pod, lost when the "
                        f"pod goes; on a cluster use s3://bucket/prefix")
    try:
        # Validated again: a default (an image reference, a URI) must pass the checks a user's value does.
        return EmpoRunSpec.model_validate(wire)
    except ValueError as exc:
        raise DefaultsError(f"an operator default (EMPO_TRAINER_IMAGE, EMPO_DEFAULT_STORAGE_URI or "
                            f"EMPO_S3_ENDPOINT) is not valid: {exc}") from exc


def defaulted(run: EmpoRun, settings: Settings, accepted: Mapping[str, Any] | None = None) -> EmpoRun:
    """The run with its effective spec: what every builder takes. `accepted`: the spec the run was
    accepted with (wire form), whose defaults it keeps; DefaultsError or SpecError when it cannot be
    completed."""
    return run.model_copy(update={"spec": effective_spec(run.spec, Defaults.of(settings, accepted))})
