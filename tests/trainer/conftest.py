import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def empo_env(tmp_path_factory):
    """Environment for `empo` subprocesses: offline, the shared model cache, and a throwaway HOME
    so a test can tell that nothing (a Ray auth token, say) was written into the user's home."""
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ)
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               EMPO_CACHE_DIR=os.environ.get("EMPO_CACHE_DIR", str(REPO / ".cache" / "empo")),
               PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


def empo(args, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "empo_api.cli", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, **kwargs)
