"""The layers of .importlinter hold (docs/architecture.md): empo_cli > empo_operator | empo_trainer >
empo_api, and the order inside the operator and the trainer. `lint-imports` reads every import,
those inside functions included; its report names the import that breaks a contract."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"  # installed with import-linter (the test extra)
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    out = subprocess.run([*command, "--no-cache", "--no-logo"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout
