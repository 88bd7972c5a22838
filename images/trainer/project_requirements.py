"""Prints the requirements of the project and of the given extras, one a line, from pyproject.toml.

The trainer image installs them (with the pinned set) before it copies the sources, so a change of
the sources only reruns the layer that installs the project itself:

    python project_requirements.py pyproject.toml trainer,vllm > requirements-extras.txt
"""

import sys
import tomllib


def requirements(pyproject: dict, extras: list[str]) -> list[str]:
    project = pyproject["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"project_requirements.py: no extra {extra!r} in pyproject.toml")
        reqs += optional[extra]
    return reqs


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        data = tomllib.load(f)
    extras = [e.strip() for e in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if e.strip()]
    print("\n".join(requirements(data, extras)))
