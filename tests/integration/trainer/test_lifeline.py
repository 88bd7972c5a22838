"""A local Ray ends with its driver, however the driver ends: kill -9, SIGTERM or Ctrl-C. Every
process of it (GCS, raylet, the dashboard and runtime-env agents, workers, actors) inherited the
driver's lifeline; the reaper ends them once the driver is gone."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from empo_trainer import lifeline

from .conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds Ray's processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_local_ray_processes_end_with_the_driver(empo_env, sig):
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ray_heirs.py"))], env=empo_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        started = {pid: _name(pid) for pid in info["heirs"]}
        assert info["actor"] in started and any("raylet" in n for n in started.values()) \
            and any("gcs_server" in n for n in started.values()), started
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        killed = time.monotonic()
        while lifeline.heirs(info["driver"]) and time.monotonic() - killed < 15:
            time.sleep(0.1)
        left = {pid: _name(pid) for pid in lifeline.heirs(info["driver"])}
        assert not left, f"alive {time.monotonic() - killed:.0f} s after the driver: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"
