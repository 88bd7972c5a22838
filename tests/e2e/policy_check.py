"""The runs' NetworkPolicies against the connections the pods really open.

No NetworkPolicy engine runs on the test node: kube-network-policies needs the nftables `queue`
expression, which the kernel of these machines lacks ("No such file or directory" on `nft add rule
... queue`). So the tests record every new connection the kernel tracks while a run trains
(`conntrack -E -e NEW`, the destination after kube-proxy's translation) and judge each against the
policies in force with the semantics of networking.k8s.io/v1: a pod selected by a policy of a type
(Ingress, Egress) is isolated for it, and a connection passes when the source's egress and the
destination's ingress both allow it. As the API documents, connections from the node a pod runs on
(kubelet probes, the API server's proxy) are always allowed.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from tests.plugins.lifetime import die_with_parent

_FIELDS = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True)
class Flow:
    protocol: str  # TCP or UDP
    src: str
    dst: str  # after DNAT: the address that answered
    port: int  # after DNAT


def parse_conntrack_line(line: str) -> Flow | None:
    words = line.split()
    protocol = next((w.upper() for w in words[:3] if w in ("tcp", "udp")), None)
    values = _FIELDS.findall(line)
    if protocol is None or len(values) < 8:
        return None
    original = dict(values[:4])
    reply = dict(values[4:8])
    return Flow(protocol, original["src"], reply["src"], int(reply["sport"]))


class FlowLog:
    """New TCP and UDP connections the kernel tracks, from start() to stop()."""

    def __init__(self) -> None:
        self.flows: set[Flow] = set()
        self._procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> FlowLog:
        for proto in ("tcp", "udp"):
            proc = subprocess.Popen(["conntrack", "-E", "-e", "NEW", "-p", proto], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)
            thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
            thread.start()
            self._procs.append(proc)
            self._threads.append(thread)
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            flow = parse_conntrack_line(line)
            if flow is not None:
                self.flows.add(flow)

    def stop(self) -> set[Flow]:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        return self.flows


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    assert set(selector or {}) <= {"matchLabels"}, f"only matchLabels is judged here: {selector}"
    return all(labels.get(k) == v for k, v in ((selector or {}).get("matchLabels") or {}).items())


def _in_block(ip: str, block: dict[str, Any]) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr in ipaddress.ip_network(block["cidr"]) and not any(
        addr in ipaddress.ip_network(e) for e in block.get("except") or [])


def _peer_matches(peer: dict[str, Any], policy_ns: str, ip: str, pod: dict[str, Any] | None,
                  namespaces: dict[str, dict[str, str]]) -> bool:
    if "ipBlock" in peer:
        return _in_block(ip, peer["ipBlock"])
    if pod is None:
        return False
    if "namespaceSelector" in peer:
        ns_ok = _matches(peer["namespaceSelector"], namespaces.get(pod["namespace"], {}))
    else:
        ns_ok = pod["namespace"] == policy_ns
    return ns_ok and _matches(peer.get("podSelector"), pod["labels"])


def _rule_allows(rule: dict[str, Any], peers_key: str, policy_ns: str, flow: Flow, ip: str,
                 pod: dict[str, Any] | None, namespaces: dict[str, dict[str, str]]) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("protocol", "TCP") == flow.protocol and p.get("port") in (None, flow.port)
                         for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(p, policy_ns, ip, pod, namespaces) for p in peers)


def allowed(flow: Flow, policies: list[dict[str, Any]], pods_by_ip: dict[str, dict[str, Any]],
            namespaces: dict[str, dict[str, str]], node_ip: str) -> tuple[bool, str]:
    """Whether the policies let `flow` through, and which side refused it."""
    src, dst = pods_by_ip.get(flow.src), pods_by_ip.get(flow.dst)
    if src is not None:
        isolating = [p for p in policies if p["metadata"]["namespace"] == src["namespace"]
                     and "Egress" in p["spec"].get("policyTypes", []) and _matches(p["spec"]["podSelector"], src["labels"])]
        if isolating and not any(_rule_allows(r, "to", p["metadata"]["namespace"], flow, flow.dst, dst, namespaces)
                                 for p in isolating for r in p["spec"].get("egress") or []):
            return False, f"egress of {src['namespace']}/{src['name']}"
    if dst is not None and flow.src != node_ip:
        isolating = [p for p in policies if p["metadata"]["namespace"] == dst["namespace"]
                     and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                     and _matches(p["spec"]["podSelector"], dst["labels"])]
        if isolating and not any(_rule_allows(r, "from", p["metadata"]["namespace"], flow, flow.src, src, namespaces)
                                 for p in isolating for r in p["spec"].get("ingress") or []):
            return False, f"ingress of {dst['namespace']}/{dst['name']}"
    return True, ""


def cluster_view(cp) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """(NetworkPolicies, pods by IP, namespace labels) as the API server has them now."""
    import json

    def items(resource: str) -> list[dict[str, Any]]:
        return json.loads(cp.kubectl("get", resource, "-A", "-o", "json").stdout)["items"]

    pods = {}
    for p in items("pods"):
        ip = (p.get("status") or {}).get("podIP")
        if ip and not (p["spec"].get("hostNetwork")):
            pods[ip] = {"name": p["metadata"]["name"], "namespace": p["metadata"]["namespace"],
                        "labels": p["metadata"].get("labels") or {}}
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in items("namespaces")}
    return items("networkpolicies"), pods, namespaces
