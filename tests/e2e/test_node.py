"""The test node itself (tests/plugins/node.py): pods are scheduled, get an address on the bridge,
resolve Service names through CoreDNS, reach the API server through the `kubernetes` Service
(kube-proxy), serve `kubectl logs`, and cannot send a packet off the machine."""

from __future__ import annotations

import json

import pytest

from tests.waiting import wait_for

pytestmark = [pytest.mark.timeout(600)]

PROBE = """
import socket, ssl, urllib.request
print("dns", socket.gethostbyname("kubernetes.default.svc.cluster.local"))
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
print("api", urllib.request.urlopen("https://kubernetes.default.svc/version", context=ctx, timeout=10).status)
s = socket.socket()
s.settimeout(10)
try:
    s.connect(("192.0.2.1", 80))  # TEST-NET-1: off the machine
    print("off-machine connected")
except OSError as exc:
    print("off-machine refused", exc.errno)
"""


def test_a_pod_resolves_services_reaches_the_api_and_nothing_else(node_cluster, cluster_namespace_on_node):
    cp, ns = node_cluster.cp, cluster_namespace_on_node
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "probe", "image": node_cluster.images["operator"], "imagePullPolicy": "Never",
               "command": ["python", "-c", PROBE]}]}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(pod))
    done = wait_for(lambda: (p := cp.get("pod", "probe", ns)) and p["status"].get("phase") in ("Succeeded", "Failed")
                    and p, timeout=120, interval=0.5, what="the probe pod to finish")
    logs = cp.kubectl("logs", "probe", "-n", ns).stdout
    assert done["status"]["phase"] == "Succeeded", logs
    assert done["status"]["podIP"].startswith("198.18.0.") and done["spec"]["nodeName"] == "empo-node"
    lines = dict(line.split(" ", 1) for line in logs.splitlines())
    assert lines["dns"] == "198.19.0.1"  # the kubernetes Service, through CoreDNS
    assert lines["api"] == "200"  # through kube-proxy to the API server
    assert lines["off-machine"].startswith("refused"), logs  # the node's FORWARD chain
