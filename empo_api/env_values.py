"""Values read from environment variables, parsed one way for every part: the operator's settings
and the trainer's storage options take the same words and refuse the same values with the same
message, which names the variable and what it allows."""

from __future__ import annotations

import math
from collections.abc import Mapping


class EnvValueError(ValueError):
    """An environment variable holds a value its reader cannot use; the message names the variable."""


def seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration in seconds (0 or more, finite); unset or blank gives `default`. NaN and infinity
    are refused: a comparison with NaN is always false, so a deadline or window of NaN would never
    end or never start."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise EnvValueError(f"{name}={raw!r}: expected a number of seconds") from None
    if not math.isfinite(value):
        raise EnvValueError(f"{name}={raw!r}: expected a finite number of seconds")
    if value < 0:
        raise EnvValueError(f"{name}={raw!r}: must not be negative")
    return value
