"""`empo train` against a store that goes away (issue 28): the real SeaweedFS behind FlakyProxy,
which cuts every connection while it is "down". An outage shorter than the window
(EMPO_STORAGE_OUTAGE_SECONDS) costs nothing: the run waits it out, saying so, and ends with every
step and each metrics line once. A longer one ends the run with exit 2 and one line, no traceback
(Ray's included), and the run resumes with nothing lost."""

import subprocess
import sys
import time

import pytest
import yaml

from empo_api.models import StorageSpec
from empo_trainer.storage import S3Options, open_run_storage
from tests.storage.flaky_proxy import FlakyProxy
from tests.waiting import wait_for

from .conftest import REPO

pytestmark = pytest.mark.slow


def _run_files(tmp_path, bucket, endpoint, name):
    doc = yaml.safe_load((REPO / "examples/tiny.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["dataset"]["uri"] = str(REPO / "data/local/arith-train.jsonl")
    doc["spec"]["storage"] = {"uri": f"s3://{bucket}/runs", "endpoint": endpoint, "checkpointEvery": 2}
    doc["spec"]["eval"]["atEnd"] = False
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc))
    return spec


def _train(spec, steps, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "empo_api.cli", "train", str(spec), "--steps", str(steps),
                             "--no-progress"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _observer(s3_env, bucket, name):
    # reads the store directly, not through the proxy that is down
    return open_run_storage(StorageSpec(uri=f"s3://{bucket}/runs", endpoint=s3_env.endpoint), "default", name,
                            options=S3Options(outage_window_s=0))


def test_a_30s_outage_mid_run_costs_nothing(tmp_path, empo_env, s3_env):
    bucket, steps = s3_env.new_bucket(), 4
    store = _observer(s3_env, bucket, "outage-30")
    with FlakyProxy(s3_env.endpoint) as proxy:
        spec = _run_files(tmp_path, bucket, proxy.endpoint, "outage-30")
        proc = _train(spec, steps, {**empo_env, **s3_env.env(), "EMPO_STORAGE_OUTAGE_SECONDS": "60"})
        wait_for(lambda: proc.poll() is not None or store.exists("metrics.jsonl"), 900, 0.1, "the first step")
        proxy.down = True  # mid-run: the next metrics line, checkpoint upload or LATEST waits
        time.sleep(30)
        proxy.down = False
        out, err = proc.communicate(timeout=900)
    assert proxy.cut > 0, "the outage hit no request"
    assert proc.returncode == 0, err[-3000:]
    assert "retrying for up to" in err  # the wait is shown
    assert [r["step"] for r in store.read_metrics()] == list(range(1, steps + 1))
    assert store.checkpoints.latest().step == steps
    assert s3_env.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_outage_longer_than_the_window_ends_the_run_with_one_line(tmp_path, empo_env, s3_env):
    bucket, steps = s3_env.new_bucket(), 4
    store = _observer(s3_env, bucket, "outage-long")
    env = {**empo_env, **s3_env.env(), "EMPO_STORAGE_OUTAGE_SECONDS": "5"}
    with FlakyProxy(s3_env.endpoint) as proxy:
        spec = _run_files(tmp_path, bucket, proxy.endpoint, "outage-long")
        proc = _train(spec, steps, env)
        wait_for(lambda: proc.poll() is not None or store.exists("metrics.jsonl"), 900, 0.1, "the first step")
        proxy.down = True
        down_at = time.monotonic()
        out, err = proc.communicate(timeout=900)
        waited = time.monotonic() - down_at
        proxy.down = False
        assert proc.returncode == 2, err[-3000:]
        lines = err.strip().splitlines()
        assert not [ln for ln in lines if ln.lstrip().startswith(("Traceback", 'File "')) or "ray::" in ln], err[-3000:]
        message = lines[-1]
        assert message.startswith(f"{spec}: ") and "was unavailable for more than 5 s" in message, message
        assert "run again once the store is back" in message
        assert waited < 60, waited  # the window, not botocore's backoff or a hang, decided
        again = _train(spec, steps, env)
        out2, err2 = again.communicate(timeout=900)
    assert again.returncode == 0, err2[-3000:]
    assert [r["step"] for r in store.read_metrics()] == list(range(1, steps + 1))
    assert s3_env.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
