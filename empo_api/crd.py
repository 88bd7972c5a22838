"""Generate the EmpoRun CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3.0 schema: no $ref, no anyOf around types, boolean
exclusiveMinimum. Pydantic emits JSON Schema 2020-12; `structural()` rewrites one into the other.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from .models import GROUP, KIND, PLURAL, VERSION, EmpoRunSpec, EmpoRunStatus

SHORT_NAMES = ["empo"]
CATEGORIES = ["ml"]

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"},
    {"name": "Step", "type": "string", "jsonPath": ".status.stepProgress", "description": "step/totalSteps"},
    {"name": "Reward", "type": "number", "format": "float", "jsonPath": ".status.progress.reward",
     "description": "Mean reward of the last step"},
    {"name": "Entropy", "type": "number", "format": "float", "jsonPath": ".status.progress.semanticEntropy",
     "description": "Mean semantic entropy (nats) of the last step"},
    {"name": "Accuracy", "type": "number", "format": "float", "jsonPath": ".status.lastEval.average",
     "description": "Average accuracy of the latest evaluation"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# propertyNames (a map's key bounds, from str_max_length) has no structural-schema form; the
# models still check the keys.
_DROP = {"title", "$defs", "discriminator", "propertyNames"}


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rewrite a pydantic JSON schema node into a Kubernetes structural schema node."""
    defs = schema.get("$defs", {}) if defs is None else defs
    node = copy.deepcopy(schema)

    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = structural(target, defs)
        merged.update({k: v for k, v in node.items() if k not in _DROP})
        return structural(merged, defs) if "$ref" in merged else merged
    for combinator in ("allOf", "anyOf"):
        if combinator in node:
            options = [o for o in node.pop(combinator) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express {combinator} with {len(options)} types structurally: {options}")
            inner = structural(options[0], defs)
            inner.update({k: v for k, v in node.items() if k not in _DROP})
            node = inner

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out[key.replace("exclusiveM", "m")], out[key] = value, True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "number"
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        out.pop("additionalProperties")  # forbid-extra models: the API server prunes unknown fields
    return out


def _default_empty_objects(node: dict[str, Any]) -> None:
    """Give optional object fields `default: {}` so the API server fills their nested defaults."""
    required = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            _default_empty_objects(sub)
            if name not in required and "default" not in sub and not sub.get("required"):
                sub["default"] = {}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # Optional[Model]
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _factory_defaults(model: type[BaseModel], node: dict[str, Any]) -> None:
    """Object fields whose default_factory differs from the nested model's own defaults (ray.worker
    is 8 CPU / 64Gi, a bare Resources 4 / 16Gi) get that value as their CRD default: JSON Schema has
    no factories, and `default: {}` would let the API server fill the nested class's defaults."""
    for name, field in model.model_fields.items():
        sub = (node.get("properties") or {}).get(field.alias or name)
        nested = _nested_model(field.annotation)
        if sub is None or nested is None:
            continue
        _factory_defaults(nested, sub)
        if field.default_factory is not None and "default" in sub:
            sub["default"] = field.default_factory().model_dump(mode="json", by_alias=True, exclude_defaults=True)


def openapi_schema() -> dict[str, Any]:
    spec = structural(EmpoRunSpec.model_json_schema(by_alias=True))
    _default_empty_objects(spec)
    _factory_defaults(EmpoRunSpec, spec)
    spec["description"] = "What to train, on what, and how: the EMPO run the user wants."
    status = structural(EmpoRunStatus.model_json_schema(by_alias=True))
    status["description"] = "What the operator and the trainer observed; written by them, never by users."
    return {
        "type": "object",
        "description": "EmpoRun: fully unsupervised RL post-training of an LLM with EMPO on a Ray cluster.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "empo.dev/v1alpha1"},
            "kind": {"type": "string", "description": "EmpoRun"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    header = "# Generated by `empo crd` from empo_api/models.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
