"""KMock (the Kubernetes API emulator by kopf's author) on 127.0.0.1, for tests of the operator.

One emulator per test session, run by its own event loop in a background thread, so tests, kopf in
a subprocess, kubectl and the kubernetes client all talk to it over HTTP. It serves the built-in
kinds (`load_bundled()`; without it kopf waits forever for resources to appear) and the EmpoRun and
RayJob CRDs from their YAML files.

KMock stores objects as posted and merges patches. What the real API server does beyond that, and
what our tests need, is emulated here and only here, each in one marked place:

- uid, creationTimestamp and generation on create; generation bumped when .spec changes
  (ownerReferences need the owner's uid; observedGeneration needs generation);
- resourceVersion on every write (kopf tells its own patch's echo from older events by it; without
  it kopf takes an event from before its annotation patch for an unhandled creation); there is no
  conflict check on it;
- the status subresource split for kinds that declare it: a PATCH of /status changes only
  .status, a write to the main resource leaves .status alone (a component that writes status
  the wrong way is caught);
- `kubectl get` asks for a Table: it is rendered from the CRD's additionalPrinterColumns.

Not emulated (tests assert these properties themselves): conflicts on resourceVersion, label
selectors (kopf filters labels itself), garbage collection (tests assert ownerReferences), and
201 Created (KMock answers 200).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.waiting import wait_for  # noqa: F401  (re-exported for the operator tests)

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = (REPO / "crds" / "empo.dev_emporuns.yaml", REPO / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonpath(obj: dict[str, Any], path: str) -> Any:
    """The simple `.a.b.c` paths printer columns use."""
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _emulator_class():
    import aiohttp.web
    import kmock

    class ApiServerEmulator(kmock.KubernetesEmulator):
        """KubernetesEmulator plus the API server duties listed in the module docstring."""

        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self.printer_columns: dict[Any, list[dict[str, Any]]] = {}
            self.status_split: set[Any] = set()
            self.request_counts: collections.Counter = collections.Counter()
            self.created_at: dict[tuple[str, str, str], float] = {}  # (plural, ns, name) -> monotonic
            self.namespaces: set[str] = set()
            self._resource_version = itertools.count(1000)
            self.faults: list[list[Any]] = []  # [action name, plural, HTTP status, times left]
            self._namespace_watchers: list[asyncio.Queue] = []

        def add_namespace(self, name: str) -> None:
            """A Namespace exists (kopf only watches namespaces that it has seen listed or added)."""
            if name and name not in self.namespaces:
                self.namespaces.add(name)
                for q in self._namespace_watchers:
                    q.put_nowait(name)

        async def __call__(self, raw_request):  # type: ignore[override]
            # KMock 0.8 cannot parse the cluster-wide /api/v1/namespaces path (it expects a name
            # after "namespaces"); kopf lists and watches it in namespaced mode, kubectl creates
            # namespaces through it. Served here from a set of names.
            if raw_request.path.rstrip("/") == "/api/v1/namespaces":
                return await self._serve_namespaces(raw_request)
            return await super().__call__(raw_request)

        async def _serve_namespaces(self, raw_request):
            def ns(name):
                return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": name},
                        "status": {"phase": "Active"}}
            if raw_request.method == "POST":
                body = await raw_request.json()
                self.add_namespace(body["metadata"]["name"])
                return aiohttp.web.json_response(ns(body["metadata"]["name"]), status=201)
            if raw_request.query.get("watch") not in ("true", "1"):
                return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                                  "metadata": {"resourceVersion": "1"},
                                                  "items": [ns(n) for n in sorted(self.namespaces)]})
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(raw_request)
            queue: asyncio.Queue = asyncio.Queue()
            self._namespace_watchers.append(queue)
            try:
                for name in sorted(self.namespaces):
                    queue.put_nowait(name)
                while True:
                    name = await queue.get()
                    await response.write(json.dumps({"type": "ADDED", "object": ns(name)}).encode() + b"\n")
            finally:
                self._namespace_watchers.remove(queue)

        def declare_crd(self, crd: dict[str, Any]) -> None:
            spec = crd["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                res = kmock.resource(spec["group"], version["name"], names["plural"])
                self.resources[res] = kmock.ResourceInfo(
                    kind=names["kind"], singular=names.get("singular"), namespaced=spec["scope"] == "Namespaced",
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                    shortnames=set(names.get("shortNames", [])), categories=set(names.get("categories", [])),
                    subresources=set(version.get("subresources", {})),
                )
                self.printer_columns[res] = version.get("additionalPrinterColumns", [])
                if "status" in version.get("subresources", {}):
                    self.status_split.add(res)

        async def _handle(self, request):  # type: ignore[override]
            # KMock keeps every request for DSL assertions and scans all of them to route each new
            # one (quadratic: minutes for the 200-run benchmark). These tests assert on objects and
            # request_counts instead, so only the current request is kept: KMock appends it right
            # before calling _handle, with no await between, and routes it before any await.
            del self._requests[:-1]
            if request.resource is not None and request.action is not None:
                self.request_counts[(request.action.name, str(request.resource.plural))] += 1
                for fault in self.faults:  # an overloaded API server (tests of client retries)
                    if fault[3] > 0 and (fault[0], fault[1]) == (request.action.name, str(request.resource.plural)):
                        fault[3] -= 1
                        return aiohttp.web.json_response(
                            {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault[2],
                             "reason": "ServiceUnavailable", "message": "injected by the test"}, status=fault[2])
            if request.action == kmock.action.LIST and "as=Table" in request.headers.get("Accept", ""):
                return aiohttp.web.json_response(self._table(request))
            if request.resource is not None and isinstance(request.data, dict):
                self._emulate_api_server(request)
            if request.namespace:
                self.add_namespace(request.namespace)
            return await super()._handle(request)

        # -- emulated API server duties ------------------------------------------------------

        def _emulate_api_server(self, request) -> None:
            data = request.data
            split = request.resource in self.status_split
            if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
                data.setdefault("metadata", {})["resourceVersion"] = str(next(self._resource_version))
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):  # kopf's Events use it
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                key = (str(request.resource.plural), request.namespace or meta.get("namespace"), meta.get("name"))
                self.created_at.setdefault(key, time.monotonic())
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                if split:
                    data.pop("status", None)
            elif request.action == kmock.action.UPDATE and request.name:
                if split and request.subresource == "status":
                    for key in [k for k in data if k not in ("status", "metadata")]:
                        del data[key]
                    data["metadata"] = {"resourceVersion": data["metadata"]["resourceVersion"]}
                    return
                if split:
                    data.pop("status", None)
                key = (request.resource, request.namespace, request.name)
                if "spec" in data and key in self.objects and not self.objects[key].deleted:
                    current = self.objects[key].raw
                    merged = _merge(copy.deepcopy(current.get("spec") or {}), data["spec"])
                    if merged != current.get("spec"):
                        generation = (current.get("metadata") or {}).get("generation", 1)
                        data.setdefault("metadata", {})["generation"] = generation + 1

        def _table(self, request) -> dict[str, Any]:
            """A meta.k8s.io/v1 Table, as `kubectl get` asks for one."""
            columns = self.printer_columns.get(request.resource) or [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
            rows = []
            for (res, ns, _), obj in list(self.objects.items()):
                if res != request.resource or obj.deleted or (request.namespace and ns != request.namespace):
                    continue
                raw = obj.raw
                rows.append({
                    "cells": [raw["metadata"]["name"]] + [_jsonpath(raw, c["jsonPath"]) for c in columns],
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": raw["metadata"]},
                })
            definitions = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
            definitions += [{"name": c["name"], "type": c["type"], "format": c.get("format", ""),
                             "description": c.get("description", ""), "priority": c.get("priority", 0)}
                            for c in columns]
            return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                    "columnDefinitions": definitions, "rows": rows}

    return ApiServerEmulator


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386), to tell whether a patch changes .spec."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _merge(base[k], v)
        else:
            base[k] = v
    return base


@dataclass
class KubeEmulator:
    """The running emulator: its URL, a kubeconfig for clients, and thread-safe access to its state."""

    url: str
    kubeconfig: Path
    handler: Any
    loop: asyncio.AbstractEventLoop
    _stop: Callable[[], None] = field(repr=False, default=lambda: None)

    def call(self, fn: Callable[[], Any], timeout: float = 60) -> Any:
        """Run `fn` on the emulator's loop (its state is only touched there)."""
        async def wrapped():
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def objects(self, plural: str, namespace: str | None = None) -> dict[str, dict[str, Any]]:
        """name -> object of one resource kind (a snapshot; deleted objects left out)."""
        def snap():
            return {name: copy.deepcopy(obj.raw) for (res, ns, name), obj in list(self.handler.objects.items())
                    if res.plural == plural and (namespace is None or ns == namespace) and not obj.deleted}
        return self.call(snap)

    def add_namespace(self, name: str) -> None:
        self.call(lambda: self.handler.add_namespace(name))

    def fail(self, action: str, plural: str, status: int, times: int) -> None:
        """Answer the next `times` requests of `action` (CREATE, GET, PATCH...) on `plural` with `status`."""
        self.call(lambda: self.handler.faults.append([action, plural, status, times]))

    def request_counts(self) -> collections.Counter:
        return self.call(lambda: collections.Counter(self.handler.request_counts))

    def client(self):
        """A kubernetes ApiClient for the test (plays the user and KubeRay)."""
        from kubernetes import client, config
        conf = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=conf)
        return client.ApiClient(conf)


def start_emulator(workdir: Path) -> KubeEmulator:
    """Start the emulator in a background thread; `.stop()` it when done."""
    import kmock

    cls = _emulator_class()
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()
    stack = contextlib.AsyncExitStack()

    async def boot():
        handler = cls()
        handler.resources.load_bundled()
        for path in CRD_FILES:
            handler.declare_crd(yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        await stack.enter_async_context(handler)
        server = await stack.enter_async_context(kmock.Server(handler, host="127.0.0.1"))
        ready.update(handler=handler, url=str(server.url).rstrip("/"))

    def run():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(boot())
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="kmock", daemon=True)
    thread.start()
    started.wait(30)
    if "url" not in ready:
        raise RuntimeError("the KMock emulator did not start")
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": ready["url"]}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": "default"}}],
    }))
    emulator = KubeEmulator(ready["url"], kubeconfig, ready["handler"], loop)

    def stop():
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    emulator._stop = stop
    return emulator


@pytest.fixture(scope="session")
def kube_emulator(tmp_path_factory) -> KubeEmulator:
    """The session's API emulator (HTTP on 127.0.0.1, a kubeconfig pointing at it)."""
    emulator = start_emulator(tmp_path_factory.mktemp("kmock"))
    yield emulator
    emulator._stop()


