"""Shared test set-up. Server fixtures (SeaweedFS, the KMock emulator, Ray) live in tests/plugins/,
start once per session when a test asks for them, and are stopped by PID."""

import os
import signal
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
