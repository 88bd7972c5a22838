"""Kueue (sigs.k8s.io/kueue, built by tools/k8s/build.sh) as a host process against a ControlPlane,
the way tests/plugins/control_plane.py runs KubeRay.

``start_kueue(cp, workdir)`` (a context manager) installs Kueue's CRDs (the release's own files),
registers Kueue's webhooks with the API server and starts the manager; on exit it removes the
webhook registrations (a webhook that nobody serves would refuse every RayJob update, KubeRay's
finalizer removal included) and stops the process by PID. Yields a :class:`Kueue`.

How it runs, all on 127.0.0.1 and in ``workdir``:

- a Configuration (config.kueue.x-k8s.io/v1beta2): the RayJob integration only
  (``ray.io/rayjob``), no leader election, metrics off (``bindAddress: "0"``), the health probe and
  the webhook server on 127.0.0.1 ports of their own, the visibility server off (its feature gate);
- internal certificate management on: with it off, Kueue 0.17's main.go reads its metrics
  certificates from the fixed path /etc/kueue/metrics/certs (outside any temp folder) and exits
  when they are missing. On, Kueue's cert rotator (open-policy-agent/cert-controller) keeps the
  webhook certificate in the Secret ``kueue-system/kueue-webhook-server-cert`` and injects its CA
  into the webhook configurations and the CRDs' conversion webhooks. The fixture writes that
  Secret first, with a CA of its own (SAN ``kueue-ca``, as the rotator checks) and a serving
  certificate for both the Service name the rotator verifies and 127.0.0.1, and the same files
  into the webhook server's certDir (what the Secret's volume mount does in a pod): the rotator
  finds them valid and keeps them, and the API server can call https://127.0.0.1:<port>;
- the webhooks are Kueue's own manifests (config/components/webhook) for its kueue.x-k8s.io
  kinds and ray.io RayJobs, with ``url`` clientConfigs instead of the in-cluster Service;
- the five CRDs that carry a conversion webhook in Kueue's kustomization (LocalQueue,
  ClusterQueue, Workload, Cohort, MultiKueueCluster) get it too, at https://127.0.0.1:<port>/convert
  (the rotator insists on injecting a CA there): a client reading v1beta1 gets Kueue's own
  conversion, as on a real cluster.

Nothing else is written outside ``workdir``; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.plugins.control_plane import BUILD_SCRIPT, Component, ControlPlane, _await, _http_ok, _start
from tests.plugins.seaweedfs import _free_ports

NAMESPACE = "kueue-system"  # Kueue's default; the rotator keeps its Secret here
SERVICE = "kueue-webhook-service"  # the name the rotator's certificate check expects
SECRET = "kueue-webhook-server-cert"
WEBHOOK_CONFIGS = ("kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration")
# Kueue's CRDs that its kustomization gives a conversion webhook (config/components/crd/kustomization.yaml).
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
# The webhooks of the kinds this test cluster uses: Kueue's own and RayJobs (the only integration on).
WEBHOOK_PATHS = ("-kueue-x-k8s-io-", "-ray-io-v1-rayjob")
FRAMEWORKS = ("ray.io/rayjob",)


def build_kueue() -> tuple[Path, Path]:
    """(the kueue manager binary, the folder of its CRDs), built by tools/k8s/build.sh."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    dirs = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())
    bin_dir = Path(dirs["kueue"])
    return bin_dir / "kueue", bin_dir.parent / "crds"


def _pki(d: Path) -> dict[str, bytes]:
    """The Secret's keys: ca.crt / ca.key (the rotator checks the CA against the name kueue-ca) and
    tls.crt / tls.key for the webhook Service name and 127.0.0.1. Valid past the rotator's 90-day
    look-ahead, so it never regenerates them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem_key(k: rsa.RSAPrivateKey) -> bytes:  # PKCS#1: the rotator parses the CA key so
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    begin, ca_end, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=730), \
        now + datetime.timedelta(days=365)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-ca"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kueue")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(begin).not_valid_after(ca_end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=False,
                                       content_commitment=False, key_encipherment=True, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectAlternativeName([x509.DNSName("kueue-ca")]), critical=False)
          .sign(ca_key, hashes.SHA256()))
    dns = f"{SERVICE}.{NAMESPACE}.svc"
    serving_key = key()
    serving = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns)]))
               .issuer_name(ca_name).public_key(serving_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(begin).not_valid_after(end)
               .add_extension(x509.SubjectAlternativeName([
                   x509.DNSName(dns), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .sign(ca_key, hashes.SHA256()))
    files = {"ca.crt": ca.public_bytes(serialization.Encoding.PEM), "ca.key": pem_key(ca_key),
             "tls.crt": serving.public_bytes(serialization.Encoding.PEM), "tls.key": pem_key(serving_key)}
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
        (d / name).chmod(0o600)
    return files


def _configuration(cert_dir: Path, webhook_port: int, probe_port: int) -> dict:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "leaderElection": {"leaderElect": False},
        "metrics": {"bindAddress": "0"},  # off: nothing here reads them
        "health": {"healthProbeBindAddress": f"127.0.0.1:{probe_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "integrations": {"frameworks": list(FRAMEWORKS)},
        # The visibility API server would listen on all addresses and want an APIService; not used here.
        "featureGates": {"VisibilityOnDemand": False},
    }


def _webhook_configs(crds: Path, url: str, ca: bytes) -> list[dict]:
    """Kueue's webhook manifests for the kinds in WEBHOOK_PATHS, calling `url` instead of its Service."""
    manifests = crds.parent / "webhook" / "manifests.yaml"
    out = []
    for doc, name in zip(yaml.safe_load_all(manifests.read_text()), WEBHOOK_CONFIGS):
        # manifests.yaml holds the mutating configuration, then the validating one.
        assert doc["kind"].lower().startswith(name.split("-")[1]), (doc["kind"], name)
        hooks = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            if any(p in path for p in WEBHOOK_PATHS):
                hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": base64.b64encode(ca).decode()}
                hooks.append(hook)
        out.append({**doc, "metadata": {"name": name}, "webhooks": hooks})
    return out


def _crd_docs(crds: Path, url: str, ca: bytes) -> list[dict]:
    docs = []
    for path in sorted(crds.glob("kueue.x-k8s.io_*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["plural"] in CONVERTED:
            doc["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": {"url": f"{url}/convert", "caBundle": base64.b64encode(ca).decode()}}}
        docs.append(doc)
    return docs


@dataclass
class Kueue:
    cp: ControlPlane
    component: Component
    crds: Path
    workdir: Path

    def apply(self, *docs: dict) -> None:
        """kubectl apply of Kueue objects (ResourceFlavors, ClusterQueues, LocalQueues, ...)."""
        self.cp.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def workloads(self, namespace: str) -> list[dict]:
        return json.loads(self.cp.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace,
                                          "-o", "json").stdout)["items"]

    def log_tail(self, chars: int = 6000) -> str:
        return self.component.log_tail(chars)


@contextlib.contextmanager
def start_kueue(cp: ControlPlane, workdir: Path, tools: tuple[Path, Path] | None = None) -> Iterator[Kueue]:
    """Install Kueue's CRDs and webhooks on `cp` and run its manager (see the module docstring)."""
    binary, crds = tools or build_kueue()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    webhook_port, probe_port = _free_ports(2)
    cert_dir = workdir / "kueue-certs"
    files = _pki(cert_dir)
    url = f"https://127.0.0.1:{webhook_port}"
    config = workdir / "kueue-config.yaml"
    config.write_text(yaml.safe_dump(_configuration(cert_dir, webhook_port, probe_port)))

    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
               input="\n---\n".join(json.dumps(d) for d in _crd_docs(crds, url, files["ca.crt"])))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               *(f"crd/{p.stem.split('_', 1)[1]}.kueue.x-k8s.io" for p in sorted(crds.glob("kueue.x-k8s.io_*.yaml"))))
    cp.kubectl("create", "namespace", NAMESPACE, check=False)  # may exist from an earlier start
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE},
              "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}
    cp.kubectl("apply", "-f", "-", input=json.dumps(secret))
    registered = False
    component = None
    try:
        component = _start("kueue", [str(binary), f"--config={config}", "--zap-log-level=2"], workdir,
                           env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)})
        cp.components.append(component)  # stopped with the control plane if this context is skipped
        # Registered before the manager is ready: the rotator waits for the configurations it injects
        # into (a missing one it skips, a CRD without a conversion webhook fails its start).
        cp.kubectl("apply", "-f", "-", input="\n---\n".join(
            json.dumps(d) for d in _webhook_configs(crds, url, files["ca.crt"])))
        registered = True
        _await(component, lambda: _http_ok(f"http://127.0.0.1:{probe_port}/readyz"), "/readyz")
        yield Kueue(cp, component, crds, workdir)
    finally:
        if registered:
            cp.kubectl("delete", "mutatingwebhookconfiguration", WEBHOOK_CONFIGS[0], "--ignore-not-found", check=False)
            cp.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK_CONFIGS[1], "--ignore-not-found",
                       check=False)
        if component is not None:
            component.stop()
            cp.components.remove(component)


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane) -> Iterator[Kueue]:
    """One Kueue on the session's control plane (tests/integration/cluster). The end-to-end package starts its
    own on the node's control plane: ``with start_kueue(node_cluster.cp, workdir) as k``."""
    with tempfile.TemporaryDirectory(prefix="empo-kueue-") as workdir:
        with start_kueue(control_plane, Path(workdir)) as k:
            yield k
