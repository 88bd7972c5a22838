"""The base of every EmpoRun model, and the CEL rule helpers the models attach to their schemas.

Kept apart from the models themselves so the spec (models.py) and the status (status_models.py)
share one wire form: camelCase aliases, unknown fields refused, no NaN or infinities.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

MAX_STRING = 64 * 1024  # any one string; the whole spec must also fit a ConfigMap (1 MiB)


class WireModel(BaseModel):
    """Strict wire model: camelCase aliases, unknown fields rejected, values validated on assignment."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_enum_values=True,
        allow_inf_nan=False,  # `epochs: .inf` would train forever; NaN compares false with every bound
        str_max_length=MAX_STRING,
    )

    def to_wire(self) -> dict[str, Any]:
        """The manifest form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(rule: str, message: str) -> dict[str, Any]:
    """A CEL rule the API server checks (x-kubernetes-validations); the models check the same."""
    return {"rule": rule, "message": message}


def schema_extra(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def immutable(field: str) -> dict[str, Any]:
    return cel("self == oldSelf", f"spec.{field} is immutable on a live run; create a new EmpoRun instead")
