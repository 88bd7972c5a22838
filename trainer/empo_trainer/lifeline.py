"""Local runs: the actors end with the driver.

`empo train` starts its own Ray, whose workers live in their own process groups: killing the
driver (kill -9, a closed terminal) left the learner training, and committing checkpoints, for
seconds after. The driver puts its pid in the environment its local Ray inherits; each actor
watches it and exits at once when the driver is gone. On a cluster (RAY_ADDRESS set) KubeRay owns
the processes and attempts are fenced in storage instead (RunStorage.claim_attempt).
"""

from __future__ import annotations

import os
import threading
import time

ENV = "EMPO_DRIVER_PID"
POLL_SECONDS = 0.2
EXIT_CODE = 70


def arm() -> None:
    """In the driver, before a local ray.init: name this process as the one the actors live by."""
    os.environ[ENV] = str(os.getpid())


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
