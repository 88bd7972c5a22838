"""Check an object against a CRD's OpenAPI schema, as the API server's strict field validation would.

Used by `empo validate` for EmpoRuns and by the tests for the RayJobs we generate against KubeRay's
own CRD. CEL rules (x-kubernetes-validations) are not evaluated here; the pydantic models enforce
the same rules for EmpoRun.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonschema

from . import redaction


@dataclass(frozen=True)
class SchemaError:
    """One problem with one field: `spec.algorithm.numGenerations: ...` (also the models' errors)."""

    path: str
    message: str

    def __post_init__(self) -> None:
        # A message quotes the offending value; a 1 MB value must not become a 1 MB message.
        object.__setattr__(self, "path", _shorten(self.path, 300))
        object.__setattr__(self, "message", _shorten(self.message, 400))

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


def _shorten(text: str, limit: int) -> str:
    # credentials masked before the cut, so no cut leaves half of them showing
    return redaction.shorten(text, limit)


def _to_jsonschema(node: Any) -> Any:
    """OpenAPI v3.0 -> JSON Schema: boolean exclusive bounds, unknown fields forbidden."""
    if isinstance(node, list):
        return [_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(flag) is True:
            out[flag] = out.pop(bound)
        elif out.get(flag) is False:
            out.pop(flag)
    if out.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out.pop("type", None)
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def crd_schema(crd: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    versions = crd["spec"]["versions"]
    chosen = next((v for v in versions if version in (None, v["name"])), None)
    if chosen is None:
        raise KeyError(f"CRD {crd['metadata']['name']} has no version {version}")
    return copy.deepcopy(chosen["schema"]["openAPIV3Schema"])


def field_path(parts: Any) -> str:
    """spec.items[0].name from ('spec', 'items', 0, 'name')."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        return f"unknown field ({err.message.split('(')[-1].rstrip(')')})"
    if err.validator == "enum":
        return f"{_shorten(repr(err.instance), 120)} is not allowed; allowed: {', '.join(map(str, err.validator_value))}"
    return err.message


_VALIDATORS: dict[int, tuple[dict[str, Any], str, Any]] = {}


def _validator(openapi: dict[str, Any]) -> Any:
    """The JSON Schema validator of `openapi`, converted once per schema (converting the EmpoRun
    schema cost more than checking a manifest against it). Keyed by identity and checked by content,
    so a schema changed in place is converted again."""
    import json

    text = json.dumps(openapi, sort_keys=True, default=str)
    cached = _VALIDATORS.get(id(openapi))
    if cached is None or cached[0] is not openapi or cached[1] != text:
        if len(_VALIDATORS) > 16:
            _VALIDATORS.clear()
        cached = _VALIDATORS[id(openapi)] = (openapi, text, jsonschema.Draft202012Validator(_to_jsonschema(openapi)))
    return cached[2]


def check(obj: dict[str, Any], openapi: dict[str, Any]) -> list[SchemaError]:
    """Every violation of `openapi` by `obj`, with the field path; [] when it conforms."""
    validator = _validator(openapi)
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            for extra in sorted(set(map(str, err.instance)) - set(err.schema.get("properties", {}))):
                errors.append(SchemaError(field_path(path + [extra]), "unknown field"))
            continue
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            errors.append(SchemaError(field_path(path + [missing]), "required field is missing"))
            continue
        errors.append(SchemaError(field_path(path), _message(err)))
    return errors
