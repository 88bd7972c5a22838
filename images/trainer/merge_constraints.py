"""Join the project's constraints.txt with the trainer image's GPU pins (requirements.txt).

pip refuses two different pins of one package, so every package pinned in requirements.txt
drops out of constraints.txt and the rest keep their tested versions.

    python merge_constraints.py constraints.txt images/trainer/requirements.txt > /tmp/constraints.txt
"""

from __future__ import annotations

import re
import sys


def _name(line: str) -> str | None:
    """The normalised project name of a requirement line (PEP 503), None for comments."""
    line = line.split("#", 1)[0].strip()
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else None


def merge(constraints: str, overrides: str) -> str:
    """constraints.txt lines whose package the overrides do not pin, then the overrides."""
    pinned = {_name(line) for line in overrides.splitlines()} - {None}
    kept = [line for line in constraints.splitlines() if _name(line) and _name(line) not in pinned]
    # Constraints files may not name extras: 'ray[default]==x' -> 'ray==x'.
    extra = [re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0].strip())
             for line in overrides.splitlines() if _name(line)]
    return "\n".join(kept + extra) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as c, open(sys.argv[2]) as o:
        sys.stdout.write(merge(c.read(), o.read()))
