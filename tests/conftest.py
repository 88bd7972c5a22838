"""Shared test set-up. Server fixtures (SeaweedFS, the KMock emulator, Ray) live in tests/plugins/,
start once per session when a test asks for them, and are stopped by PID."""

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

# Nothing may reach a model or data hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.plugins.seaweedfs",
    "tests.plugins.kmock_server",
    "tests.plugins.control_plane",
    "tests.plugins.kueue",
]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # SIGTERM (a CI timeout, `kill`) ends the session like Ctrl-C: fixtures tear down, so the
    # servers, the node's containers, its bridge and iptables rules go with it.
    signal.signal(signal.SIGTERM, _interrupt)


def pytest_terminal_summary(terminalreporter):
    # CI shows only the end of its output: say how much disk was left, since a machine short of
    # disk fails storage, image and node tests in ways that name other causes.
    places = {"checkout": REPO, "temp": Path(tempfile.gettempdir()), "caches": Path.home() / ".cache"}
    seen, parts = set(), []
    for name, path in places.items():
        if not path.exists():
            continue
        usage = shutil.disk_usage(path)
        if (usage.total, usage.used) in seen:
            continue
        seen.add((usage.total, usage.used))
        parts.append(f"{name} {path}: {usage.free / 2**30:.1f} GiB free")
    terminalreporter.write_line("disk at the end: " + "; ".join(parts))
