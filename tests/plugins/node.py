"""A real node for the test cluster: pods run. containerd + runc (Debian's packages), kubelet,
kube-scheduler and kube-proxy (the pinned k8s.io/kubernetes module), CoreDNS (tools/k8s/coredns) and
a pod network on a bridge of the fixture's own, beside a control plane that runs every default
controller (Jobs, ReplicaSets, Deployments, EndpointSlices, node lifecycle).

``start_node_cluster(workdir)`` (a context manager; tests/e2e/conftest.py's ``node_cluster`` fixture
and the benchmarks use it) starts, in this order, and stops by PID in reverse:

    - the bridge ``empo-br0`` with the node's address 198.18.0.1/24 (pods get 198.18.0.2-254 from
      the CNI ``bridge`` + ``host-local`` plugins; Services 198.19.0.0/24: both ranges are reserved
      for benchmarking and never routed). A chain of our own in FORWARD refuses anything between the
      bridge and another interface, so no pod packet leaves the machine;
    - the control plane (tests/plugins/control_plane.py) serving on the bridge address, so pods
      reach the API server through the ``kubernetes`` Service; KubeRay reaches Ray dashboards
      through the API server's Service proxy (``--use-kubernetes-proxy``), since it runs on the host
      where cluster DNS names do not resolve;
    - containerd with its CRI plugin (state under the temp folder, content and snapshots in a
      cache outside the checkout so the images are imported once per machine);
    - kubelet (node ``empo-node``, cgroup v1 through cgroupfs), kube-scheduler, kube-proxy
      (iptables) and CoreDNS on 198.18.0.1:53 (the pods' cluster DNS).

    Yields a :class:`NodeCluster`: ``cp`` (the :class:`ControlPlane`), ``node_ip``, ``images``
    (name -> image reference, imported into the node), ``workdir``.

The configuration files the components read are written by tests/plugins/node_config.py.

Everything needs root (network, mounts, cgroups), as the CI machines give.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.plugins.control_plane import (ControlPlane, Component, _await, _http_ok, _start, build_tools,
                                          start_control_plane)
from tests.plugins.lifetime import die_with_parent
from tests.plugins.node_config import (BRIDGE, NODE_IP, NODE_NAME, SERVICE_CIDR, cni_bin_dir, cni_config,
                                       containerd_config, corefile, kube_proxy_config, kubelet_config)
from tests.plugins.seaweedfs import _free_ports

REPO = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO / "tools" / "images" / "build.sh"
IMAGES_CACHE = Path(os.environ.get("EMPO_IMAGES_CACHE", Path.home() / ".cache" / "empo-images"))

FORWARD_CHAIN = "EMPO-NODE-FORWARD"
NODE_READY_TIMEOUT_S = 180.0


def build_images() -> dict[str, tuple[str, Path]]:
    """name -> (image reference, archive) for every image tools/images/build.sh makes."""
    proc = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{IMAGES_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    images = {}
    for line in proc.stdout.splitlines():
        name, ref, archive = line.split()
        images[name] = (ref, Path(archive))
    return images


def _sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


# ---------------------------------------------------------------------------------------------
# the pod network: a bridge, forwarding confined to it, bridged traffic through iptables
# ---------------------------------------------------------------------------------------------

_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}


@contextlib.contextmanager
def pod_network() -> Iterator[None]:
    saved = {k: Path("/proc/sys", k).read_text().strip() for k in _SYSCTLS}
    _sh("ip", "link", "del", BRIDGE, check=False)  # a leftover of a killed session
    _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    try:
        _sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _sh("ip", "link", "set", BRIDGE, "up")
        _forward_rules(add=True)
        for key, value in _SYSCTLS.items():
            Path("/proc/sys", key).write_text(value)
        yield
    finally:
        for key, value in saved.items():
            Path("/proc/sys", key).write_text(value)
        _forward_rules(add=False)
        _sh("ip", "link", "del", BRIDGE, check=False)


def _forward_rules(add: bool) -> None:
    """Forwarding is on while the node runs (Service traffic is routed between pods); these rules,
    first in FORWARD, refuse anything between the bridge and any other interface."""
    _sh("iptables", "-D", "FORWARD", "-j", FORWARD_CHAIN, check=False)
    _sh("iptables", "-F", FORWARD_CHAIN, check=False)
    _sh("iptables", "-X", FORWARD_CHAIN, check=False)
    if not add:
        return
    _sh("iptables", "-N", FORWARD_CHAIN)
    _sh("iptables", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "REJECT")
    _sh("iptables", "-A", FORWARD_CHAIN, "!", "-i", BRIDGE, "-o", BRIDGE, "-j", "DROP")
    _sh("iptables", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def remove_kube_chains() -> None:
    """Remove the iptables chains the kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY) and kube-proxy
    leave behind: every KUBE-* chain and every rule that jumps to one, in every table."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _sh(tool, "-t", table, "-S", check=False).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and not parts[1].startswith("KUBE-") and any(
                        p.startswith("KUBE-") for p in parts[2:]):
                    _sh(tool, "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                _sh(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _sh(tool, "-t", table, "-X", chain, check=False)


# ---------------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------------

@dataclass
class Containerd:
    socket: Path
    namespace: str = "k8s.io"

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _sh("ctr", "-a", str(self.socket), "-n", self.namespace, *args, check=check)

    def images(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def import_image(self, ref: str, archive: Path) -> None:
        if ref not in self.images():
            self.ctr("images", "import", str(archive))
            if ref not in self.images():
                raise RuntimeError(f"importing {archive} did not give {ref}: {sorted(self.images())}")

    def prune_images(self, keep: set[str], prefix: str = "empo.local/") -> None:
        """Remove our images of earlier builds (each trainer image holds ~14 GB as content plus
        snapshots); containerd's garbage collector then frees their layers."""
        for ref in self.images():
            if ref.startswith(prefix) and ref not in keep:
                self.ctr("images", "rm", ref, check=False)

    def remove_all_containers(self) -> None:
        """Kill and delete every task and container (pods the kubelet did not finish)."""
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            for task in left:
                self.ctr("tasks", "delete", "-f", task, check=False)
            if not left:
                break
            time.sleep(0.2)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)


@dataclass
class NodeCluster:
    cp: ControlPlane
    node_ip: str
    images: dict[str, str]
    workdir: Path
    containerd: Containerd
    components: list = field(default_factory=list, repr=False)

    def node_ready(self) -> bool:
        node = self.cp.get("node", NODE_NAME)
        conditions = {c["type"]: c["status"] for c in ((node or {}).get("status") or {}).get("conditions", [])}
        return conditions.get("Ready") == "True"

    def pods(self, namespace: str, selector: str = "") -> list[dict]:
        args = ["get", "pods", "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.cp.kubectl(*args).stdout)["items"]

    def restart_component(self, name: str, down_s: float = 0.0) -> None:
        """Stop one node component ("kubelet", "kube-scheduler", "kube-proxy", "coredns") by PID,
        wait `down_s`, and start it again with the same arguments; its log goes on in <name>.log.
        The containers the kubelet started keep running meanwhile (containerd holds them). For
        the kubelet-restart fault of benchmarks/fault_trials.py (benchmarks/fault_actions.py); no
        test calls it, and teardown stops the new process."""
        index, old = next((i, c) for i, c in enumerate(self.components) if c.name == name)
        old.stop()
        time.sleep(down_s)
        with open(old.log_path, "ab") as log:
            proc = subprocess.Popen(old.proc.args, stdout=log, stderr=subprocess.STDOUT, cwd=old.log_path.parent,
                                    env=dict(os.environ), start_new_session=True, preexec_fn=die_with_parent)
        self.components[index] = Component(name, proc, old.log_path)


def _umount_under(root: Path) -> None:
    """Unmount whatever the kubelet and containerd left mounted below `root`, deepest first."""
    prefix = str(root.resolve())
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True):
        _sh("umount", "-l", mount, check=False)


def _kill_shims(socket: Path) -> None:
    """containerd's shims outlive containerd by design; ours are the ones naming our socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), 9)


def _netns_names() -> set[str]:
    path = Path("/var/run/netns")
    return {p.name for p in path.iterdir()} if path.exists() else set()


@contextlib.contextmanager
def start_node_cluster(workdir: Path, tools: dict[str, Path] | None = None,
                       images: dict[str, tuple[str, Path]] | None = None) -> Iterator[NodeCluster]:
    tools = tools or build_tools()
    images = images if images is not None else build_images()
    workdir = Path(workdir)
    netns_before = _netns_names()
    with contextlib.ExitStack() as stack:
        stack.enter_context(pod_network())
        cp = stack.enter_context(start_control_plane(
            workdir / "cp", tools, address=NODE_IP, service_cidr=SERVICE_CIDR, controllers="*",
            kuberay_args=("--use-kubernetes-proxy",)))
        node_dir = workdir / "node"
        node_dir.mkdir()
        components: list = []
        # containerd: content and snapshots persist in the cache so images are imported once.
        root = IMAGES_CACHE / "containerd-root"
        root.mkdir(parents=True, exist_ok=True)
        cni_conf = cni_config(node_dir / "cni", node_dir / "cni-ipam")
        ctrd_config = containerd_config(node_dir, root, images["pause"][0], cni_conf, cni_bin_dir())
        containerd = _start("containerd", ["containerd", "--config", str(ctrd_config)], node_dir)
        ctrd = Containerd(node_dir / "containerd.sock")

        def teardown() -> None:
            for component in reversed(components):  # CoreDNS, kube-proxy, scheduler, kubelet
                component.stop()
            _sh(str(tools["kube-proxy"]), "--cleanup", check=False)
            if containerd.proc.poll() is None:
                ctrd.remove_all_containers()  # pods the kubelet left running
            containerd.stop()
            _kill_shims(ctrd.socket)
            for name in _netns_names() - netns_before:
                _sh("ip", "netns", "delete", name, check=False)
            _umount_under(node_dir)
            remove_kube_chains()

        stack.callback(teardown)
        _await(containerd, lambda: ctrd.ctr("version", check=False).returncode == 0, "the containerd socket")
        for name, (ref, archive) in images.items():
            ctrd.import_image(ref, archive)
        # After the import, so layers the new images share with the old ones are not imported again.
        ctrd.prune_images({ref for ref, _ in images.values()})

        admin = cp.kubeconfig
        kubelet_port, kubelet_healthz, sched_port, proxy_metrics, proxy_healthz, dns_health, dns_ready = _free_ports(7)
        kubelet_yaml = kubelet_config(node_dir, ctrd.socket, cp, kubelet_port, kubelet_healthz)
        kubelet = _start("kubelet", [
            str(tools["kubelet"]), f"--config={kubelet_yaml}", f"--kubeconfig={admin}",
            f"--root-dir={node_dir / 'kubelet'}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--cert-dir={node_dir / 'kubelet-pki'}", "--v=1",
        ], node_dir)
        components.append(kubelet)
        components.append(_start("kube-scheduler", [
            str(tools["kube-scheduler"]), f"--kubeconfig={admin}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={sched_port}",
            f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}", "--profiling=false",
        ], node_dir))
        proxy = _start("kube-proxy", [
            str(tools["kube-proxy"]), f"--config={kube_proxy_config(node_dir, admin, proxy_metrics, proxy_healthz)}",
        ], node_dir)
        components.append(proxy)
        coredns = _start("coredns", [str(tools["coredns"]), "-conf", str(corefile(node_dir, admin, dns_health,
                                                                                  dns_ready))], node_dir)
        components.append(coredns)

        nc = NodeCluster(cp=cp, node_ip=NODE_IP, images={k: v[0] for k, v in images.items()}, workdir=workdir,
                         containerd=ctrd, components=components)
        _await(kubelet, nc.node_ready, "node Ready", timeout=NODE_READY_TIMEOUT_S)
        _await(coredns, lambda: _http_ok(f"http://127.0.0.1:{dns_ready}/ready"), "CoreDNS /ready")
        _await(proxy, lambda: _http_ok(f"http://127.0.0.1:{proxy_healthz}/healthz"), "kube-proxy /healthz")
        # Before the tests' first pod: pods of a namespace need its "default" ServiceAccount anyway.
        yield nc
