"""The test node's configuration files, written from the fixture's paths and ports: containerd's
(CRI plugin, runc, overlayfs), the pod network's CNI list (bridge + host-local on the node's
addresses), the kubelet's, kube-proxy's and CoreDNS's. Pure writers: tests/plugins/node.py starts
the processes that read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from tests.plugins.control_plane import ControlPlane

BRIDGE = "empo-br0"
NODE_IP = "198.18.0.1"
POD_CIDR = "198.18.0.0/24"
SERVICE_CIDR = "198.19.0.0/24"
NODE_NAME = "empo-node"
CLUSTER_DOMAIN = "cluster.local"


def containerd_config(workdir: Path, root: Path, pause_ref: str, cni_conf: Path, cni_bin: str) -> Path:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config = f"""version = 2
root = "{root}"
state = "{workdir / 'state'}"
[grpc]
  address = "{workdir / 'containerd.sock'}"
[ttrpc]
  address = "{workdir / 'containerd.sock.ttrpc'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{workdir / 'opt'}"
[{cri}]
  sandbox_image = "{pause_ref}"
  # These machines refuse to lower oom_score_adj: without this every sandbox fails with
  # "runc create failed: ... can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"""
    path = workdir / "config.toml"
    path.write_text(config)
    return path


def cni_config(dir: Path, ipam_dir: Path) -> Path:
    dir.mkdir(parents=True)
    conf = {
        "cniVersion": "1.0.0", "name": "empo-pods",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                      # Service addresses are off the pod subnet: through the node, where kube-proxy
                      # translates them (the FORWARD chain keeps everything else in).
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (dir / "10-empo.conflist").write_text(json.dumps(conf, indent=2))
    return dir


def cni_bin_dir() -> str:
    for candidate in ("/usr/lib/cni", "/opt/cni/bin"):
        if (Path(candidate) / "bridge").exists():
            return candidate
    raise RuntimeError("the CNI plugins are missing: apt-get install containernetworking-plugins")


def kubelet_config(workdir: Path, runtime_socket: Path, cp: ControlPlane, port: int, healthz: int) -> Path:
    resolv = workdir / "resolv.conf"
    resolv.write_text("")  # pods get cluster DNS only; nothing of the host's resolver
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz,
        # Only the API server (its client certificate, signed by the test CA) may call the kubelet.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(cp.ca_file)}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        "enforceNodeAllocatable": [],
        "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(resolv),
        "podLogsDir": str(workdir / "pod-logs"),
        # A test node on a shared disk: evict only when really out of room, never delete the images
        # imported for the tests.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "registerNode": True, "maxPods": 110,
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    path = workdir / "kubelet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def kube_proxy_config(workdir: Path, kubeconfig: Path, metrics: int, healthz: int) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables", "clusterCIDR": POD_CIDR, "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "metricsBindAddress": f"127.0.0.1:{metrics}", "healthzBindAddress": f"127.0.0.1:{healthz}",
        # NodePorts only on the bridge; conntrack sysctls left as the machine has them.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0},
    }
    path = workdir / "kube-proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def corefile(workdir: Path, kubeconfig: Path, health: int, ready: int) -> Path:
    path = workdir / "Corefile"
    path.write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} admin
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
""")
    return path
