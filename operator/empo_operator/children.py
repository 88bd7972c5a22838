"""Every child of a run, in creation order (pure): the builders' ConfigMap, RBAC and RayJob with the
NetworkPolicy between them. A module of its own above builders and network_policy, which builds on
builders' names: builders importing network_policy back made a circle (.importlinter)."""

from __future__ import annotations

from typing import Any

from empo_api.models import EmpoRun

from .builders import build_configmap, build_rayjob, build_trainer_rbac
from .network_policy import build_network_policy
from .settings import Settings


def build_children(run: EmpoRun, settings: Settings, attempt: int = 0) -> list[dict[str, Any]]:
    """Every child in creation order: the RayJob last, once what its pods mount and use exists."""
    return [build_configmap(run, settings), *build_trainer_rbac(run), build_network_policy(run, settings),
            build_rayjob(run, settings, attempt)]
