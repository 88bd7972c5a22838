"""The test control plane's credentials: a CA, the API server's serving certificate, its client
certificate for kubelets, the ServiceAccount signing key, and token kubeconfigs. Pure writers:
tests/plugins/control_plane.py hands the files to the processes it starts."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import yaml

VALID_FOR = datetime.timedelta(days=2)  # a session, with room; the clock may be behind by an hour


def write_pki(d: Path, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
    """CA, API server serving certificate (valid for `addresses` and the in-cluster names), the
    API server's client certificate for kubelets, and the ServiceAccount signing key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def pem_key(k: rsa.RSAPrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                               serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "empo-test-ca")])

    def signed(subject: x509.Name, public_key, *extensions: tuple[x509.ExtensionType, bool]) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALID_FOR))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = signed(ca_name, ca_key.public_key(),
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                               key_encipherment=False, data_encipherment=False, key_agreement=False,
                               encipher_only=False, decipher_only=False), True))
    serving_key = key()
    serving = signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), serving_key.public_key(),
        (x509.SubjectAlternativeName([
            *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses), x509.DNSName("localhost"),
            x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local")]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
    # How the API server proves itself to kubelets (logs, exec): the node trusts this CA.
    client_key = key()
    client = signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver-kubelet-client"),
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]), client_key.public_key(),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    sa_key = key()
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.crt").write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.key").write_bytes(pem_key(serving_key))
    (d / "sa.key").write_bytes(pem_key(sa_key))
    (d / "kubelet-client.crt").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (d / "kubelet-client.key").write_bytes(pem_key(client_key))
    (d / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for private in ("apiserver.key", "sa.key", "kubelet-client.key"):
        (d / private).chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "empo-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "empo-test", "user": user}}],
        "current-context": user,
    }))
    path.chmod(0o600)
    return path
