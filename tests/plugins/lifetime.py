"""Servers the tests start end with the test process, however it ends."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` of a server's Popen: the kernel sends it SIGTERM when the process that started it
    dies (kill -9 of pytest included)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
