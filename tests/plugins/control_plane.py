"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and the
KubeRay operator, built from pinned Go modules by tools/k8s/build.sh (`make k8s-tools`; the fixture
runs the script too, which takes milliseconds once the binaries are cached).

Fixtures
--------
``control_plane`` (session scope)
    Starts, on 127.0.0.1 ports of their own and with state in a temporary folder:

    - etcd;
    - kube-apiserver: RBAC authorization, the default admission plugins, a ServiceAccount issuer
      and signing key, TLS from a CA the fixture makes, and an admin token (group system:masters);
    - kube-controller-manager: garbage collector, namespace, ServiceAccount and token controllers;
    - the KubeRay operator with its CRDs (RayJob -> RayCluster -> Pods; no node runs the pods,
      so they stay Pending; tests write RayJob status themselves where a job must run or end).

    Yields a :class:`ControlPlane`:

    - ``server`` (https URL), ``kubeconfig`` (admin), ``ca_file``, ``bin`` (name -> executable:
      kubectl, helm, kube-apiserver, ...), ``workdir`` (logs: ``<component>.log``);
    - ``kubectl(*args, input=None, check=True, kubeconfig=None)`` -> CompletedProcess (text);
      ``check=True`` fails with kubectl's stderr;
    - ``helm(*args, ...)``: the same for helm (admin kubeconfig unless told);
    - ``get(resource, name, namespace=None)`` -> dict or None (``kubectl get -o json``);
    - ``create_namespace(prefix="t")`` -> a fresh namespace's name (deleted at session end with the
      cluster);
    - ``service_account_kubeconfig(namespace, name, path)`` -> Path: a kubeconfig that
      authenticates as that ServiceAccount with a token from the TokenRequest API;
    - ``client(kubeconfig=None)`` -> a ``kubernetes.client.ApiClient``;
    - ``env(kubeconfig=None)`` -> os.environ plus KUBECONFIG and PATH with our kubectl/helm first;
    - ``kuberay_crds``: the folder of KubeRay's CRD files (same release as the operator).

    Everything is stopped by PID in reverse order (SIGTERM, then SIGKILL) and the folder removed.

``cluster_namespace`` (function scope)
    A fresh namespace for one test.

``kubectl_path`` (session scope; ``pinned_kubectl()`` outside fixtures)
    The pinned kubectl, for tests that need no server of ours (kustomize, the emulator).

The module also works outside pytest: ``with start_control_plane(Path(tmp)) as cp``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import itertools
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.plugins.cluster_pki import write_kubeconfig, write_pki
from tests.plugins.lifetime import die_with_parent
from tests.plugins.seaweedfs import _free_ports

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "k8s" / "build.sh"
# Two shared cores: a cold kube-apiserver takes ~10-30 s to become ready.
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
ADMIN_TOKEN = "empo-test-admin-token-7c1d"  # fake; tests can grep for it to prove it never leaks
SERVICE_CIDR = "10.96.0.0/24"  # config only; no traffic goes there
# Without a node: what the API objects of the tests need (no Jobs, ReplicaSets or node lifecycle, so
# no pod is ever created for KubeRay's or the chart's workloads).
NODELESS_CONTROLLERS = "garbagecollector,namespace,serviceaccount,serviceaccount-token"


def _first_host(cidr: str) -> str:
    """The first address of a range: the API server gives it to the "kubernetes" Service."""
    return str(next(ipaddress.ip_network(cidr).hosts()))


def build_tools() -> dict[str, Path]:
    """name -> executable for every binary the control plane needs (builds on first use)."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    dirs = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())
    tools = {
        "etcd": Path(dirs["etcd"]) / "etcd",
        "kube-apiserver": Path(dirs["kubernetes"]) / "kube-apiserver",
        "kube-controller-manager": Path(dirs["kubernetes"]) / "kube-controller-manager",
        "kubectl": Path(dirs["kubernetes"]) / "kubectl",
        "kube-scheduler": Path(dirs["kubernetes"]) / "kube-scheduler",
        "kubelet": Path(dirs["kubernetes"]) / "kubelet",
        "kube-proxy": Path(dirs["kubernetes"]) / "kube-proxy",
        "coredns": Path(dirs["coredns"]) / "coredns",
        "kuberay-operator": Path(dirs["kuberay"]) / "ray-operator",
        "helm": Path(dirs["helm"]) / "helm",
        "kuberay-crds": Path(dirs["kuberay"]).parent / "crds",
    }
    missing = [str(p) for p in tools.values() if not p.exists()]
    if missing:
        raise RuntimeError(f"{BUILD_SCRIPT} did not produce {missing}")
    return tools


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------

@dataclass
class Component:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _start(name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> Component:
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                env=env or dict(os.environ), start_new_session=True,
                                preexec_fn=die_with_parent)
    return Component(name, proc, log_path)


def _await(component: Component, probe, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll `probe()` until truthy; fail early with the component's log if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        component.check_alive()
        try:
            if probe():
                return
        except (OSError, urllib.error.URLError, subprocess.SubprocessError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{component.name}: {what} not reached within {timeout:.0f}s; log:\n{component.log_tail()}")


def _http_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


@dataclass
class ControlPlane:
    server: str
    kubeconfig: Path
    ca_file: Path
    bin: dict[str, Path]
    workdir: Path
    kuberay_crds: Path
    components: list[Component] = field(default_factory=list, repr=False)
    _ns_counter: Any = field(default_factory=lambda: itertools.count(), repr=False)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        path = os.pathsep.join([str(self.bin["kubectl"].parent), str(self.bin["helm"].parent), os.environ.get("PATH", "")])
        # helm keeps caches and repository config under $HOME unless told; keep them in the temp folder.
        helm_home = self.workdir / "helm"
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig), "PATH": path,
                "HELM_CACHE_HOME": str(helm_home / "cache"), "HELM_CONFIG_HOME": str(helm_home / "config"),
                "HELM_DATA_HOME": str(helm_home / "data")}

    def _run(self, tool: str, args: tuple[str, ...], input: str | None, check: bool, kubeconfig: Path | None,
             timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bin[tool]), *map(str, args)], input=input, capture_output=True, text=True,
                              env=self.env(kubeconfig), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}{proc.stdout[-2000:]}")
        return proc

    def kubectl(self, *args: Any, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return self._run("kubectl", args, input, check, kubeconfig, timeout)

    def helm(self, *args: Any, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run("helm", args, input, check, kubeconfig, timeout)

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        ns = ("-n", namespace) if namespace else ()
        proc = self.kubectl("get", resource, name, *ns, "-o", "json", "--ignore-not-found", check=True)
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{os.getpid()}-{next(self._ns_counter)}"
        self.kubectl("create", "namespace", name)
        return name

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, duration: str = "2h") -> Path:
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()
        return write_kubeconfig(Path(path), self.server, self.ca_file, token, f"system:serviceaccount:{namespace}:{name}")

    def client(self, kubeconfig: Path | None = None):
        from kubernetes import client, config

        conf = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig or self.kubeconfig), client_configuration=conf)
        return client.ApiClient(conf)

    def stop(self) -> None:
        for component in reversed(self.components):
            component.stop()


@contextlib.contextmanager
def start_control_plane(workdir: Path, tools: dict[str, Path] | None = None, apiserver_args: tuple[str, ...] = (),
                        kuberay: bool = True, address: str = "127.0.0.1", service_cidr: str = SERVICE_CIDR,
                        controllers: str = NODELESS_CONTROLLERS, kuberay_args: tuple[str, ...] = ()
                        ) -> Iterator[ControlPlane]:
    """Start etcd, kube-apiserver, kube-controller-manager and KubeRay in `workdir`; stop all on exit.

    ``apiserver_args`` are appended to kube-apiserver's flags (the operator benchmark adds an audit
    log); ``kuberay=False`` installs KubeRay's CRDs without running its operator. A cluster with a
    node (tests/plugins/node.py) serves the API on the node's bridge ``address``, so pods reach it
    through the ``kubernetes`` Service, runs every default controller and passes ``kuberay_args``."""
    tools = tools or build_tools()
    workdir = Path(workdir)
    pki = workdir / "pki"
    pki.mkdir(parents=True)
    loopback = address == "127.0.0.1"
    write_pki(pki, ("127.0.0.1",) if loopback else ("127.0.0.1", address, _first_host(service_cidr)))
    (etcd_client, etcd_peer, apiserver, kcm, kuberay_metrics, kuberay_probe) = _free_ports(6)
    server = f"https://{address}:{apiserver}"
    (workdir / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
    kubeconfig = write_kubeconfig(workdir / "admin.kubeconfig", server, pki / "ca.crt", ADMIN_TOKEN, "admin")
    cp = ControlPlane(server=server, kubeconfig=kubeconfig, ca_file=pki / "ca.crt",
                      bin={k: v for k, v in tools.items() if k != "kuberay-crds"}, workdir=workdir,
                      kuberay_crds=tools["kuberay-crds"])
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    try:
        etcd_url = f"http://127.0.0.1:{etcd_client}"
        etcd = _start("etcd", [
            str(tools["etcd"]), "--name=empo-test", f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=empo-test=http://127.0.0.1:{etcd_peer}",
            # A test cluster: losing the last writes on a crash is fine, fsync on a shared disk is slow.
            "--unsafe-no-fsync", "--log-level=warn",
        ], workdir)
        cp.components.append(etcd)
        _await(etcd, lambda: _http_ok(f"{etcd_url}/health"), "/health")

        kas = _start("kube-apiserver", [
            str(tools["kube-apiserver"]), f"--etcd-servers={etcd_url}",
            f"--bind-address={address}", f"--secure-port={apiserver}", f"--advertise-address={address}",
            f"--cert-dir={workdir / 'certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={workdir / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={service_cidr}", "--allow-privileged=false", "--profiling=false",
            # The "kubernetes" Service's endpoints would be 127.0.0.1, which the reconciler refuses (as envtest);
            # on the node's bridge address pods reach the API server through that Service.
            *(("--endpoint-reconciler-type=none",) if loopback else (
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP")),
            *apiserver_args,
        ], workdir)
        cp.components.append(kas)
        _await(kas, lambda: _http_ok(f"{server}/readyz", tls, ADMIN_TOKEN), "/readyz")

        kcm_proc = _start("kube-controller-manager", [
            str(tools["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
            f"--controllers={controllers}",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={kcm}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--use-service-account-credentials=false", "--profiling=false",
        ], workdir)
        cp.components.append(kcm_proc)
        # The ServiceAccount controller is running when the default namespace's "default" account exists.
        _await(kcm_proc, lambda: cp.get("serviceaccount", "default", "default"), "the default ServiceAccount")

        cp.kubectl("apply", "--server-side", "-f", cp.kuberay_crds)
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   *(f"crd/{p.stem.split('_', 1)[1]}.ray.io" for p in sorted(cp.kuberay_crds.glob("ray.io_*.yaml"))))
        if not kuberay:
            yield cp
            return
        kuberay = _start("kuberay-operator", [
            str(tools["kuberay-operator"]), f"--metrics-addr=127.0.0.1:{kuberay_metrics}",
            f"--health-probe-bind-address=127.0.0.1:{kuberay_probe}", "--enable-leader-election=false",
            "--log-stdout-encoder=console", *kuberay_args,
        ], workdir, env={**os.environ, "KUBECONFIG": str(kubeconfig)})
        cp.components.append(kuberay)
        _await(kuberay, lambda: _http_ok(f"http://127.0.0.1:{kuberay_probe}/readyz"), "/readyz")
        yield cp
    finally:
        cp.stop()


@functools.cache
def pinned_kubectl() -> str:
    """The pinned kubectl tools/k8s/build.sh builds, for tests that need no server of ours: a fresh
    machine may have no kubectl, or another version."""
    return str(build_tools()["kubectl"])


@pytest.fixture(scope="session")
def kubectl_path() -> str:
    return pinned_kubectl()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One real control plane for the whole session (see the module docstring)."""
    # A short path: kubeconfigs and logs are read by humans when something fails.
    with tempfile.TemporaryDirectory(prefix="empo-k8s-") as workdir:
        with start_control_plane(Path(workdir)) as cp:
            yield cp


@pytest.fixture
def cluster_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for its finalization)."""
    name = control_plane.create_namespace()
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
