"""The run's ConfigMap is its record: the spec as accepted, the operator's defaults applied once.
A later pass, after `helm upgrade` changed those defaults, starts the next RayJob with what the run
was accepted with and still carries the user's mutable edits to the trainer. The real reconcile
pass against the KMock emulator, in this process."""

import asyncio
import copy
import dataclasses
import json

import kopf

from empo_operator import builders, defaults, handlers
from empo_operator.kube import Kube
from empo_operator.settings import Settings
from tests.integration.operator.conftest import Api

BEFORE = Settings(trainer_image="registry.example/empo-trainer:1", s3_endpoint="http://s3-a:8333")
AFTER = Settings(trainer_image="registry.example/empo-trainer:2", s3_endpoint="http://s3-b:8333")


def _pass(kube_emulator, namespace: str, settings: Settings, name: str) -> None:
    memo = kopf.Memo()
    memo.settings = dataclasses.replace(settings, namespaces=(namespace,))
    memo.kube = Kube(kube_emulator.client())
    handlers.init_memo(memo)
    asyncio.run(handlers.reconcile(memo, namespace, name))


def _head(rayjob: dict) -> dict:
    (head,) = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    return head


def test_the_next_attempt_keeps_the_accepted_defaults_and_takes_the_users_edits(kube_emulator, namespace, tiny,
                                                                               monkeypatch):
    applied = []  # the defaults are applied once per judged pass, and the builders apply none
    real = defaults.effective_spec
    monkeypatch.setattr(defaults, "effective_spec", lambda *a: applied.append(1) or real(*a))
    api = Api(kube_emulator, namespace)
    doc = copy.deepcopy(tiny)
    doc["metadata"]["name"] = "kept"
    api.create_run(doc)
    _pass(kube_emulator, namespace, BEFORE, "kept")
    first = api.attempt("kept")
    assert len(applied) == 1
    assert _head(first)["image"] == "registry.example/empo-trainer:1"
    cm_name = builders.config_name("kept")
    # An earlier operator's keys in the record; the user edits a mutable field; the RayJob goes.
    api.kube.patch("v1", "configmaps", namespace, cm_name, {"data": {"name": "kept", "namespace": namespace}})
    api.patch_spec("kept", {"storage": {"checkpointEvery": 7}})
    api.kube.delete("ray.io/v1", "rayjobs", namespace, first["metadata"]["name"], first["metadata"]["uid"])

    _pass(kube_emulator, namespace, AFTER, "kept")  # `helm upgrade` changed every default
    assert len(applied) == 2

    data = api.kube.get("v1", "configmaps", namespace, cm_name)["data"]
    assert list(data) == [builders.CONFIG_KEY]
    spec = json.loads(data[builders.CONFIG_KEY])["spec"]
    assert spec["ray"]["image"] == "registry.example/empo-trainer:1"
    assert spec["storage"]["checkpointEvery"] == 7
    again = api.attempt("kept")
    assert again is not None and again["metadata"]["uid"] != first["metadata"]["uid"]
    assert _head(again)["image"] == "registry.example/empo-trainer:1"
    assert api.condition("kept", "Stalled").get("reason") != "ImmutableFieldChanged"
