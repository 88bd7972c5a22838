"""What the `empo` command prints when a subcommand fails: one message, exit status 2, no traceback
(EMPO_DEBUG=1 adds it). Errors raised inside Ray actors arrive wrapped (RayTaskError, or
ActorDiedError when an actor's constructor raised); the user is shown the original message."""

from __future__ import annotations

import re

EXIT_ERROR = 2
MAX_MESSAGE = 2000

# The last line of a Python traceback: "module.ErrorType: message".
_TRACEBACK_TAIL = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit)): (.+)$")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse prints the message and exits 2)."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value


def unwrap(exc: BaseException) -> BaseException:
    """The exception a Ray task or actor raised, out of Ray's wrappers (RayTaskError.cause)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException) and type(exc).__module__.startswith("ray"):
            exc = cause
            continue
        break
    return exc


def _from_traceback_text(text: str) -> str | None:
    """An ActorDiedError keeps only the text of its constructor's traceback: its last error line."""
    for line in reversed(text.splitlines()):
        m = _TRACEBACK_TAIL.match(line)
        if m:
            return m.group(2).strip()
    return None


def user_message(exc: BaseException) -> str:
    """One line or a few: what went wrong, in the words of whoever raised it."""
    inner = unwrap(exc)
    if type(inner).__module__.startswith("ray") and getattr(inner, "actor_init_failed", False):
        text = _from_traceback_text(str(inner))
        message = f"a Ray actor could not start: {text}" if text else str(inner)
    elif isinstance(inner, OSError) and inner.strerror:
        message = f"{inner.filename}: {inner.strerror}" if inner.filename else inner.strerror
    elif type(inner).__module__ == "builtins" and not isinstance(inner, (ValueError, OSError, RuntimeError)):
        message = f"{type(inner).__name__}: {inner}"  # e.g. a RecursionError says nothing without its name
    else:
        message = str(inner) or type(inner).__name__
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
    return message
