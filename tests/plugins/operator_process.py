"""`python -m empo_operator` in a subprocess, healthy when its liveness endpoint answers; stopped by PID.

The emulator tests (tests/integration/operator/) and the real-cluster tests (tests/integration/cluster/) differ only in the
environment they give it.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    log_path: Path
    env: dict[str, str]
    health_port: int
    start_timeout = 60.0

    proc: subprocess.Popen | None = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "empo_operator"], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(self._healthy, timeout=self.start_timeout, interval=0.1,
                 what=f"operator liveness (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
