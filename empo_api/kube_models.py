"""The Kubernetes pieces of an EmpoRun spec: references to Secrets and ConfigMaps, the worker pods'
resources, tolerations and environment, and the name and quantity patterns the API server uses.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .redaction import SECRET_ENV_NAME, is_secret_env_name
from .wire_model import WireModel, cel, schema_extra

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?"
QUALIFIED_NAME = r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# Kubernetes quantities as the API server parses them (resource.ParseQuantity), unsigned: "4", "500m",
# "16Gi", "1.5", "2e3"; not "1.2.3" or "16GiGi".
QUANTITY = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"


class SecretKeyRef(WireModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Secret in the EmpoRun's namespace.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret.")


class SecretRef(WireModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Secret in the EmpoRun's namespace.")
    access_key_id_key: str = Field("AWS_ACCESS_KEY_ID", description="Key of the access key id in the Secret.")
    secret_access_key_key: str = Field("AWS_SECRET_ACCESS_KEY", description="Key of the secret access key in the Secret.")


class Resources(WireModel):
    cpu: str = Field("4", pattern=QUANTITY, description="CPU request and limit (Kubernetes quantity).")
    memory: str = Field("16Gi", pattern=QUANTITY, description="Memory request and limit (Kubernetes quantity).")
    ephemeral_storage: str | None = Field(
        None, pattern=QUANTITY,
        description="Ephemeral storage request and limit (Kubernetes quantity): the node disk the pod's cache "
                    "(model, checkpoints) and logs may use; default: a request sized from the model (`empo plan` "
                    "shows it) and no limit.")


class Toleration(WireModel):
    key: str | None = Field(None, description="Taint key; empty with operator Exists matches all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default).")
    value: str | None = Field(None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect to tolerate.")
    toleration_seconds: int | None = Field(None, description="How long a NoExecute taint is tolerated.")

    @model_validator(mode="after")
    def _as_the_api_server_checks(self) -> "Toleration":
        # core/v1 validation (validateTolerations): what kubectl apply of the RayJob would refuse.
        if self.key and not re.fullmatch(QUALIFIED_NAME, self.key):
            raise ValueError(f"key {self.key!r} is not a qualified name (prefix/name, 63 characters of [A-Za-z0-9-_.])")
        if not self.key and self.operator != "Exists":
            raise ValueError("an empty key needs operator Exists (it matches every taint)")
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.value and not re.fullmatch(LABEL_VALUE, self.value):
            raise ValueError(f"value {self.value!r} is not a valid label value (63 characters of [A-Za-z0-9-_.])")
        # int64 in core/v1; not a schema bound, which Helm's float64 round trip would change
        if self.toleration_seconds is not None and not -(2**63) <= self.toleration_seconds < 2**63:
            raise ValueError("tolerationSeconds must fit a 64-bit integer")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self


class LocalObjectRef(WireModel):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Name of an object in the EmpoRun's namespace.")


class EnvVar(WireModel):
    model_config = ConfigDict(json_schema_extra=schema_extra(
        cel("has(self.value) != has(self.secretKeyRef)", "ray.env: set value or secretKeyRef, exactly one"),
        cel(f"!has(self.value) || !self.name.matches('{SECRET_ENV_NAME}')",
            "ray.env: a variable named like a secret takes its value from a Secret (secretKeyRef), not a literal value")))

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253, description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(None, description="The value of one key of a Secret.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.startswith("EMPO_"):
            raise ValueError(f"'{v}': EMPO_* variables are set by the operator")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "EnvVar":
        if (self.value is None) == (self.secret_key_ref is None):
            raise ValueError(f"{self.name}: set value or secretKeyRef, exactly one")
        if self.value is not None and is_secret_env_name(self.name):
            # the spec is copied in clear into the run's ConfigMap and RayJob (and shown by kubectl get)
            raise ValueError(
                f"{self.name} looks like a secret: a literal value would be stored in clear in the run's ConfigMap "
                "and RayJob; put it in a Secret and write secretKeyRef: {name: SECRET, key: KEY} instead of value "
                "(the pods get it through valueFrom.secretKeyRef)")
        return self


class EnvFromSource(WireModel):
    model_config = ConfigDict(json_schema_extra=schema_extra(
        cel("has(self.secretRef) != has(self.configMapRef)", "ray.envFrom: set secretRef or configMapRef, exactly one")))

    secret_ref: LocalObjectRef | None = Field(None, description="Every key of this Secret becomes a variable.")
    config_map_ref: LocalObjectRef | None = Field(None, description="Every key of this ConfigMap becomes a variable.")
    prefix: str | None = Field(None, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=253,
                               description="Prepended to every variable name.")

    @model_validator(mode="after")
    def _one_source(self) -> "EnvFromSource":
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("set secretRef or configMapRef, exactly one")
        return self
