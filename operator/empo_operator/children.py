"""Every child of a run, in creation order (pure): the builders' ConfigMap and RBAC, the
NetworkPolicy and the RayJob. A module of its own above builders, network_policy and rayjob, which
build on builders' names: builders importing them back made a circle (.importlinter)."""

from __future__ import annotations

from typing import Any

from empo_api.models import EmpoRun

from .builders import build_configmap, build_trainer_rbac
from .network_policy import build_network_policy
from .rayjob import build_rayjob
from .settings import Settings


def build_children(run: EmpoRun, settings: Settings, attempt: int = 0) -> list[dict[str, Any]]:
    """Every child in creation order: the RayJob last, once what its pods mount and use exists.
    `run` carries its effective spec (defaults.defaulted); no builder applies a default of its own."""
    return [build_configmap(run), *build_trainer_rbac(run), build_network_policy(run, settings),
            build_rayjob(run, settings, attempt)]
