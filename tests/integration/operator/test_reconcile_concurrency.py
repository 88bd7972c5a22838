"""Several triggers reconcile one run at the same moment (its create handler, a RayJob event, the
resync, a backoff's wake-up): each child is still created once. The real `reconcile` against the
KMock emulator, in this process, so the passes overlap for certain."""

import asyncio
import copy

import kopf

from empo_operator import handlers
from empo_operator.kube import Kube
from empo_operator.settings import Settings
from tests.integration.operator.conftest import Api

CHILDREN = ("configmaps", "serviceaccounts", "roles", "rolebindings", "networkpolicies", "rayjobs")


def test_overlapping_reconciles_of_one_run_create_each_child_once(kube_emulator, namespace, tiny):
    api = Api(kube_emulator, namespace)
    doc = copy.deepcopy(tiny)
    doc["metadata"]["name"] = "busy"
    run = api.create_run(doc)
    memo = kopf.Memo()
    memo.settings = Settings(namespaces=(namespace,), trainer_image="registry.example/empo-trainer:1")
    memo.kube = Kube(kube_emulator.client())
    handlers.init_memo(memo)
    before = kube_emulator.request_counts()

    async def three_triggers() -> None:
        await asyncio.gather(*(handlers.reconcile(memo, namespace, "busy", copy.deepcopy(run)) for _ in range(3)))

    asyncio.run(three_triggers())
    creates = kube_emulator.request_counts() - before
    assert {plural: creates[("CREATE", plural)] for plural in CHILDREN} == {plural: 1 for plural in CHILDREN}
    assert api.attempt("busy") is not None
