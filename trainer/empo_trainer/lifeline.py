"""Local runs: the actors, and every other process of the local Ray, end with the driver.

`empo train` starts its own Ray, whose workers live in their own process groups: killing the
driver (kill -9, a closed terminal) left the learner training, and committing checkpoints, for
seconds after. The driver puts its pid in the environment its local Ray inherits; each actor
watches it and exits at once when the driver is gone. Ray's own processes (GCS, raylet, the
dashboard and runtime-env agents) and those the actors start (vLLM's engine processes) inherit
the same variable: a reaper process, started by the driver in a session of its own, waits for the
driver to end however it ends, then sends SIGTERM and, 3 s later, SIGKILL to every process that
still carries it (before the reaper the agents lived on for 60-75 s after a kill -9 of the driver
in 6 of 15 trials). On a cluster (RAY_ADDRESS set) KubeRay owns the processes and attempts are
fenced in storage instead (RunStorage.claim_attempt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ENV = "EMPO_DRIVER_PID"
POLL_SECONDS = 0.2
EXIT_CODE = 70


GRACE_SECONDS = 3.0
_reaper: subprocess.Popen | None = None


def arm() -> None:
    """In the driver, before a local ray.init: name this process as the one the actors live by,
    and start the reaper that ends whatever outlives it."""
    global _reaper
    os.environ[ENV] = str(os.getpid())
    if _reaper is None or _reaper.poll() is not None:
        env = {k: v for k, v in os.environ.items() if k != ENV}  # the reaper must not reap itself
        _reaper = subprocess.Popen([sys.executable, "-m", "empo_trainer.lifeline", str(os.getpid())], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True, close_fds=True)


def heirs(pid: int) -> list[int]:
    """Processes whose environment names `pid` as their driver (the driver's local Ray and all it started)."""
    needle = f"\0{ENV}={pid}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ and alive(int(entry)):
            found.append(int(entry))
    return found


def reap(pid: int) -> int:
    """Wait until `pid` has ended, then end its heirs: SIGTERM, and SIGKILL to those still there after
    GRACE_SECONDS. Returns how many there were."""
    while alive(pid):
        time.sleep(POLL_SECONDS)
    first = heirs(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in heirs(pid):
            try:
                os.kill(p, sig)
            except OSError:
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while heirs(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    return len(first)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def watch() -> bool:
    """In an actor: exit this process as soon as the driver that armed the lifeline is gone.
    Returns whether a watch was started (only under a local driver)."""
    value = os.environ.get(ENV, "")
    if not value.isdigit() or os.environ.get("RAY_ADDRESS"):
        return False
    pid = int(value)

    def loop() -> None:
        while alive(pid):
            time.sleep(POLL_SECONDS)
        os._exit(EXIT_CODE)  # no cleanup: nothing this process would still write is wanted

    threading.Thread(target=loop, name="empo-lifeline", daemon=True).start()
    return True


if __name__ == "__main__":  # the reaper: python -m empo_trainer.lifeline DRIVER_PID
    if Path("/proc").is_dir():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C goes to the driver, not here
        reap(int(sys.argv[1]))
