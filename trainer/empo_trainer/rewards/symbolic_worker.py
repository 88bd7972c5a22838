"""Worker process for symbolic equivalence (math-verify), one request per JSON line on stdin.

math-verify's own timeout uses SIGALRM, which only works in a main thread; the reward function is
called from Ray actors and thread pools. So the check runs here, in this process's main thread,
with our own interval timer, and the parent kills this process if even that does not fire (sympy
stuck inside C, e.g. on 10^{10^{10}}).

Protocol: the worker prints "ready" once imported; then each line {"a": str, "b": str, "timeout": s}
is answered by {"equal": bool, "timed_out": bool}.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _die_with_parent() -> None:
    # Linux: get SIGKILL when the parent dies, so a worker stuck in C is never orphaned.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main() -> int:
    _die_with_parent()
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": we enforce our own
    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

    @functools.lru_cache(maxsize=16384)
    def parsed(answer: str):
        return parse("\\boxed{" + answer + "}", config, parsing_timeout=None)

    def equal(a: str, b: str) -> bool:
        pa, pb = parsed(a), parsed(b)
        if not pa or not pb:
            return False
        # verify is asymmetric (assignments, intervals): either direction counts (high recall).
        return bool(verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None))

    signal.signal(signal.SIGALRM, _on_alarm)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        timed_out = False
        result = False
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, float(request["timeout"]))
                result = equal(request["a"], request["b"])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            timed_out = True
        except Exception:
            result = False
        out.write(json.dumps({"equal": result, "timed_out": timed_out}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
