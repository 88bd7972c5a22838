"""The few Kubernetes API calls the operator makes, over the kubernetes client's ApiClient.

Plain dicts in and out (the builders produce dicts; no model classes to convert). The client is
configured in-cluster, or from KUBECONFIG outside a cluster, the same way kopf logs in.

Every call retries 429 and 5xx answers and dropped connections with exponential backoff
(urllib3's Retry, honouring Retry-After): one overloaded moment of the API server must not leave a
run half-reconciled. Retrying a write is safe here: a create that landed answers 409 the second
time (the caller checks who owns the object), deletes carry a uid precondition and status writes a
resourceVersion.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from typing import Any, Callable

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

# apiVersion, kind -> plural, for every kind the operator touches.
PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Event"): "events",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("ray.io/v1", "RayJob"): "rayjobs",
    ("empo.dev/v1alpha1", "EmpoRun"): "emporuns",
}
REQUEST_TIMEOUT = (5, 30)  # connect, read (seconds)
RETRY = Retry(total=6, connect=6, read=2, status=6, backoff_factor=0.5, backoff_max=15,
              status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None, raise_on_status=False,
              respect_retry_after_header=True)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Call the blocking client from a coroutine. asyncio.to_thread uses the loop's default
    executor, sized at startup (handlers.configure)."""
    return await asyncio.to_thread(fn, *args)


def load_config() -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None,
                subresource: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def request(api: client.ApiClient, method: str, path: str, body: Any = None, content_type: str | None = None,
            timeout: tuple[float, float] = REQUEST_TIMEOUT, query: list[tuple[str, str]] | None = None) -> Any:
    """One API call; the decoded JSON answer, ApiException (with .status) on an HTTP error."""
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    _, url, headers, body, _ = api.param_serialize(method, path, query_params=query, header_params=headers,
                                                    body=body, auth_settings=["BearerToken"])
    resp = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    data = resp.read()
    if not 200 <= resp.status < 300:
        raise ApiException(status=resp.status, reason=resp.reason, http_resp=resp)
    return json.loads(data) if data else None


def with_retries(api: client.ApiClient) -> client.ApiClient:
    """A client like `api` whose connection pool retries (the pool takes Retry only at creation)."""
    conf = copy.copy(api.configuration)
    conf.retries = RETRY
    return client.ApiClient(conf)


def owner_uids(obj: dict[str, Any] | None) -> set[str]:
    return {r.get("uid") for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []}


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = with_retries(api or load_config())

    def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        return request(self.api, method, path, body, content_type)

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create `obj`; if it exists already, return the existing one. (object, created?)"""
        plural = PLURALS[(obj["apiVersion"], obj["kind"])]
        meta = obj["metadata"]
        try:
            created = self._call("POST", object_path(obj["apiVersion"], plural, meta["namespace"]), obj,
                                 "application/json")
            return created, True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get(obj["apiVersion"], plural, meta["namespace"], meta["name"])
        return existing or obj, False

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", object_path(api_version, plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def serves(self, api_version: str) -> bool:
        """Whether the API server serves a group version (discovery, which every user may read):
        False when no CRD of that group is installed."""
        try:
            self._call("GET", f"/apis/{api_version}")
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def list(self, api_version: str, plural: str, namespace: str, field_selector: str = "") -> list[dict[str, Any]]:
        """The items of a namespaced list, narrowed by a field selector (e.g. involvedObject.name=x)."""
        query = [("fieldSelector", field_selector)] if field_selector else None
        answer = request(self.api, "GET", object_path(api_version, plural, namespace), query=query)
        return (answer or {}).get("items") or []

    def patch(self, api_version: str, plural: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None, resource_version: str | None = None) -> dict[str, Any] | None:
        """JSON merge patch; None when the object is gone. With `resource_version`, the server
        refuses it (ApiException 409) if the object changed since that version was read."""
        if resource_version is not None:
            patch = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version}}
        try:
            return self._call("PATCH", object_path(api_version, plural, namespace, name, subresource), patch,
                              "application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, api_version: str, plural: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete (foreground: the RayCluster goes first); False when it was gone already, or when
        `uid` is given and the object of that name is another one (a precondition the server checks)."""
        body: dict[str, Any] = {"propagationPolicy": "Foreground"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", object_path(api_version, plural, namespace, name), body, "application/json")
            return True
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
