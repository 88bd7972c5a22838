"""Symbolic equivalence with a per-call timeout that works from any thread.

Checks run in worker processes (symbolic_worker.py) over pipes. Each call waits at most its timeout
(plus a short grace for the pipe); a worker that overruns is killed by its PID and replaced on the
next call, and the pair counts as not equivalent. Workers start lazily (the first symbolic check
pays ~1-2 s of sympy import) and die with this process.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
import weakref

STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core box can take several seconds
GRACE_S = 0.5  # pipe round trip and the worker's own timer firing late


class WorkerError(RuntimeError):
    pass


class _Worker:
    def __init__(self) -> None:
        env = dict(os.environ)
        # The worker imports this package; make sure it finds the same copy as we did.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "empo_trainer.rewards.symbolic_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
        )
        self._buf = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        if self._readline(time.monotonic() + STARTUP_TIMEOUT_S) != b"ready":
            self.kill()
            raise WorkerError("symbolic worker did not start (is math-verify installed?)")

    def _readline(self, deadline: float) -> bytes | None:
        """One line from the worker, or None at the deadline; WorkerError if it died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerError(f"symbolic worker {self.proc.pid} exited with {self.proc.poll()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.strip()

    def check(self, a: str, b: str, timeout_s: float) -> tuple[bool, bool] | None:
        """(equal, timed_out), or None when the worker overran and must be killed."""
        self.proc.stdin.write(json.dumps({"a": a, "b": b, "timeout": timeout_s}).encode() + b"\n")
        self.proc.stdin.flush()
        line = self._readline(time.monotonic() + timeout_s + GRACE_S)
        if line is None:
            return None
        reply = json.loads(line)
        return bool(reply["equal"]), bool(reply["timed_out"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL by PID: a worker stuck in C ignores anything gentler
        self.proc.wait()
        self._selector.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class SymbolicChecker:
    """math-verify equivalence of two answers (LaTeX, without \\boxed) with a per-call timeout.

    Thread-safe: concurrent callers use up to max_workers worker processes.
    """

    def __init__(self, max_workers: int = 2) -> None:
        self.max_workers = max(1, max_workers)
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._started = 0
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Worker] = weakref.WeakSet()
        self.timeouts = 0  # calls that hit their time limit (monitoring)
        atexit.register(self.close)

    def _acquire(self) -> _Worker:
        with self._lock:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                start = self._started < self.max_workers
                if start:
                    self._started += 1
        if start:
            try:
                worker = _Worker()
            except Exception:
                with self._lock:
                    self._started -= 1
                raise
            self._all.add(worker)
            return worker
        return self._idle.get()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1

    def equivalent(self, a: str, b: str, timeout_s: float = 2.0) -> bool:
        """True when math-verify proves a and b equal (either direction) within timeout_s seconds."""
        worker = self._acquire()
        try:
            reply = worker.check(a, b, timeout_s)
        except (WorkerError, OSError, ValueError):
            self._discard(worker)  # crashed or garbled: a fresh worker next time
            return False
        if reply is None:
            self.timeouts += 1
            self._discard(worker)
            return False
        self._idle.put(worker)
        equal, timed_out = reply
        self.timeouts += int(timed_out)
        return equal

    def close(self) -> None:
        """Stop every worker (by PID); the checker starts new ones if used again."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            self._discard(worker)


_default: SymbolicChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> SymbolicChecker:
    """The process-wide checker (its workers are shared by every MathEquivalence)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SymbolicChecker(max_workers=min(4, os.cpu_count() or 1))
        return _default
