"""Checkpoint on SIGTERM: a pod told to stop (eviction, drain, preemption, a suspended run) ends the
run after a checkpoint of its last completed step, and the next attempt resumes from it.

The driver (driver.run) takes SIGTERM as a preemption request: it asks the learners, through a
Ray queue, to stop after the step in progress; at that step's end every rank agrees (an all-reduce
when data-parallel), rank 0 writes the step's metrics line and commits the checkpoint through the
normal path (files, manifest, then LATEST), and train() returns. The driver checks LATEST, logs
    preempted at step N: checkpoint step-N committed; the next attempt resumes from it
and exits with EXIT_PREEMPTED. If the step and its commit have not finished GRACE_ENV seconds
after the request (or a second SIGTERM comes), the driver abandons the step and exits with the same
code; LATEST still names the previous complete checkpoint (a commit cut short never moves it).

A pod's preStop hook runs `python -m empo_trainer preempt` (this module's `main`, stdlib only so it
starts fast): on the head it signals the driver(s), found by the pid files they write under
DIR_ENV/drivers, and waits for them to exit; with --worker it writes DIR_ENV/request, which a
learner on that pod (and a driver on that host) honours like SIGTERM, and waits until no learner or
sampler actor process is left on the pod, so the learners live while the driver checkpoints
through them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from .lifeline import alive  # stdlib only, like this module: the preStop hook starts fast

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped on request after a checkpoint; run it again
GRACE_ENV = "EMPO_PREEMPT_GRACE_SECONDS"
DEFAULT_GRACE_SECONDS = 25.0  # Kubernetes' default terminationGracePeriodSeconds (30) less a margin
DIR_ENV = "EMPO_PREEMPT_DIR"
DEFAULT_DIR = "/tmp/empo-preempt"
ACTOR_TITLES = ("ray::LearnerActor", "ray::SamplerActor")  # Ray's process titles for our actors


class Preempted(BaseException):
    """Raised in the driver when SIGTERM arrives before the learners train: nothing to checkpoint.
    A BaseException like KeyboardInterrupt, so no `except Exception` in between swallows it."""


def grace_seconds() -> float:
    try:
        value = float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_SECONDS))
    except ValueError:
        return DEFAULT_GRACE_SECONDS
    return value if value > 0 else DEFAULT_GRACE_SECONDS


def base_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def request_file() -> Path:
    return base_dir() / "request"


def requested_since(wall_time: float) -> bool:
    """Whether the request file was written at or after `wall_time` (an older one is a past
    attempt's, e.g. of an earlier local run)."""
    try:
        return request_file().stat().st_mtime >= wall_time
    except OSError:
        return False


def write_request() -> Path:
    path = request_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time():.3f}\n")
    os.utime(path)
    return path


# ------------------------------------------------------------------------------------- driver side

class DriverPreemption:
    """The driver's SIGTERM handler and pid file. Before `training()` a SIGTERM raises Preempted;
    after it, it only records the request, which `poll()` in the driver's loop turns into a stop
    request to the learners, and into giving up once the grace period has passed."""

    def __init__(self) -> None:
        self.started_wall = time.time()
        self.requested_at: float | None = None  # time.monotonic() of the first request
        self.reason = ""
        self.hurry = False  # a second SIGTERM: abandon now
        self.sent = False
        self.in_training = False
        self.grace = grace_seconds()
        self._previous = None
        self._pid_file: Path | None = None

    def install(self) -> "DriverPreemption":
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._pid_file = _write_pid_file()
        return self

    def rearm(self) -> None:
        """After ray.init: Ray's core worker installs its own SIGTERM handler (it logs "SIGTERM
        received" and the process dies), replacing ours at the C level; take the signal back."""
        import threading

        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    @contextlib.contextmanager
    def around_ray_init(self):
        """Run ray.init inside this. ray.init installs Ray's own SIGTERM handlers before rearm() can
        take the signal back (its own, `sys.exit(15)`; a local cluster's, which stops the cluster's
        processes and calls `sys.exit(1)`), so a pod stopped while Ray starts would end as a failure
        that counts against maxRestarts. Python's C-level signal handler writes each signal's number
        to the wakeup fd whichever Python handler then runs, which is how a SIGTERM in that window is
        seen; it then ends as Preempted, like one before or after ray.init."""
        import threading

        if threading.current_thread() is not threading.main_thread():  # no signals off the main thread
            yield
            self.rearm()
            return
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:  # Ray's handlers raise SystemExit from wherever ray.init was
            failure = exc
        finally:
            signal.set_wakeup_fd(previous)
            self.rearm()
            try:
                seen = signal.SIGTERM in os.read(read_end, 4096)
            except BlockingIOError:
                seen = False
            os.close(read_end)
            os.close(write_end)
        if seen:
            if self.requested_at is None:
                self.requested_at, self.reason = time.monotonic(), "SIGTERM"
            if not self.in_training:
                raise Preempted("SIGTERM while Ray started") from failure
        if failure is not None:
            raise failure

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)
            self._pid_file = None

    def _on_sigterm(self, signum, frame) -> None:
        if self.requested_at is not None:
            self.hurry = True
            return
        self.requested_at, self.reason = time.monotonic(), "SIGTERM"
        if not self.in_training:
            raise Preempted("SIGTERM before training started")

    def training(self) -> None:
        """The learners' train() calls are out: from now on a request stops them after a step."""
        self.in_training = True
        if self.requested_at is None and requested_since(self.started_wall):
            self.requested_at, self.reason = time.monotonic(), f"request file {request_file()}"

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def poll(self) -> bool:
        """Check for a request (signal or file); returns True once the driver should give up waiting."""
        if self.requested_at is None and requested_since(self.started_wall):
            self.requested_at, self.reason = time.monotonic(), f"request file {request_file()}"
        if self.requested_at is None:
            return False
        return self.hurry or time.monotonic() - self.requested_at >= self.grace

    def elapsed(self) -> float:
        return 0.0 if self.requested_at is None else time.monotonic() - self.requested_at


def _drivers_dir() -> Path:
    return base_dir() / "drivers"


def _write_pid_file() -> Path | None:
    try:
        folder = _drivers_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / str(os.getpid())
        path.write_bytes(_cmdline(os.getpid()))
        return path
    except OSError as exc:  # no writable /tmp: SIGTERM still works, only `preempt` cannot find us
        print(f"warning: no driver pid file ({exc}); `python -m empo_trainer preempt` will not find this driver",
              file=sys.stderr)
        return None


# ------------------------------------------------------------------------------------ learner side

def agree(flag: bool, device=None) -> bool:
    """Every learner rank's view of a stop request, made one (max over ranks): ranks that stopped
    at different steps would wait forever in the next step's collective. Called by every rank at
    every step end."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ------------------------------------------------------------------------------ the preStop command

def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def find_drivers() -> list[int]:
    """Live drivers that wrote a pid file here (a file whose process is gone, or whose pid now
    belongs to another program, is stale and removed)."""
    found = []
    try:
        entries = list(_drivers_dir().iterdir())
    except OSError:
        return []
    for path in entries:
        if not path.name.isdigit():
            continue
        pid = int(path.name)
        try:
            recorded = path.read_bytes()
        except OSError:
            continue
        if pid != os.getpid() and alive(pid) and (not recorded or _cmdline(pid) in (recorded, b"")):
            found.append(pid)
        else:
            path.unlink(missing_ok=True)
    return sorted(found)


def find_actors() -> dict[int, str]:
    """Ray worker processes of our learner and sampler actors on this machine: pid -> title."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        title = _cmdline(int(entry)).split(b"\0", 1)[0].decode(errors="replace")
        if title.startswith(ACTOR_TITLES) and alive(int(entry)):
            out[int(entry)] = title.split()[0]
    return out


def _say(msg: str) -> None:
    print(f"empo preempt: {msg}", flush=True)


def _wait_for_exit(pids, limit: float) -> tuple[float, list[int]]:
    """Poll until every one of `pids` has ended or `limit` s passed: (seconds waited, those still running)."""
    started = time.monotonic()
    while (left := [p for p in pids if alive(p)]) and time.monotonic() - started < limit:
        time.sleep(0.2)
    return time.monotonic() - started, left


def preempt_head(wait: float) -> int:
    drivers = find_drivers()
    if not drivers:
        _say(f"no EMPO driver on this host (no live pid file under {_drivers_dir()}); nothing to do")
        return 0
    for pid in drivers:
        try:
            os.kill(pid, signal.SIGTERM)
            command = _cmdline(pid).replace(b"\0", b" ").decode(errors="replace")[:120].strip()
            _say(f"sent SIGTERM to driver {pid} ({command})")
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            _say(f"cannot signal driver {pid}: {exc}; writing {write_request()} instead")
    _say(f"waiting up to {wait:.0f}s for it to checkpoint and exit")
    took, left = _wait_for_exit(drivers, wait)
    if left:
        _say(f"driver {', '.join(map(str, left))} still running after {took:.1f}s")
        return 1
    _say(f"driver exited after {took:.1f}s")
    return 0


def preempt_worker(wait: float) -> int:
    actors = find_actors()
    if not actors:
        _say("no learner or sampler actor on this pod; nothing to wait for")
        return 0
    if any(t.startswith("ray::LearnerActor") for t in actors.values()):
        # the learner here ends the run after its step, with a checkpoint (the head may not be told)
        _say(f"wrote {write_request()}: a learner on this pod stops the run after its step")
    names = sorted(set(actors.values()))
    _say(f"waiting up to {wait:.0f}s for {len(actors)} actor process(es) ({', '.join(names)}) to exit")
    took, left = _wait_for_exit(list(actors), wait)
    if left:
        _say(f"{len(left)} actor process(es) still running after {took:.1f}s")
        return 1
    _say(f"actors exited after {took:.1f}s")
    return 0


LINGER_SECONDS = 10.0  # after the driver's exit, for KubeRay to read the job's end from the dashboard


def stop_ray(linger: float) -> None:
    """End this pod's Ray processes, so its container exits now instead of at the grace period's
    SIGKILL (KubeRay's PID 1 is bash, which ignores SIGTERM): a drained node empties, and the
    next attempt's pods get its room, seconds after the checkpoint instead of minutes."""
    import subprocess

    if linger > 0:
        time.sleep(linger)
    try:
        done = subprocess.run(["ray", "stop"], capture_output=True, text=True, timeout=60)
        _say(f"ray stop: exit {done.returncode}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        _say(f"ray stop failed: {exc}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=float, default=None,
                        help=f"seconds to wait for the driver (or, with --worker, the actors) to exit "
                             f"(default: {GRACE_ENV} + 10)")
    parser.add_argument("--worker", action="store_true",
                        help="on a worker pod: ask a learner here to stop the run after its step, and wait "
                             "until no learner or sampler actor is left")
    parser.add_argument("--stop-ray", action="store_true",
                        help="then stop this pod's Ray processes (`ray stop`; on the head after "
                             f"{LINGER_SECONDS:.0f}s, for KubeRay to read the job's end), so the container exits "
                             "now: the preStop hook of the operator's pods")


def main(args: argparse.Namespace) -> int:
    wait = args.wait if args.wait is not None else grace_seconds() + 10
    if args.worker:
        code = preempt_worker(wait)
    else:
        had_driver = bool(find_drivers())
        code = preempt_head(wait)
    if args.stop_ray and code == 0:  # a driver still running keeps its pod until the SIGKILL
        stop_ray(0.0 if args.worker or not had_driver else LINGER_SECONDS)
    return code
