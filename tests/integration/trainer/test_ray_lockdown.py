"""The local Ray of `empo train` listens on loopback only and runs no Prometheus exporter
(docs/security.md): nothing on the network can reach it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

from .conftest import REPO


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net")
def test_local_ray_listens_on_loopback_only(empo_env):
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("ray_listeners.py"))], env=empo_env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    listeners = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(listeners) >= 3, out.stdout  # GCS, raylet, the driver's and workers' gRPC servers
    exposed = [s for s in listeners if s["ip"] not in ("127.0.0.1", "::1")]
    assert not exposed, f"listening beyond loopback: {exposed}"
