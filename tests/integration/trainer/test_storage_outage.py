"""`empo train` against a store that goes away (issue 28): the real SeaweedFS behind FlakyProxy,
which cuts every connection while it is "down". An outage shorter than the window
(EMPO_STORAGE_OUTAGE_SECONDS) costs nothing: the run waits it out, saying so, and ends with every
step and each metrics line once. A longer one ends the run with exit 2 and one line, no traceback
(Ray's included), and the run resumes with nothing lost. One run meets both: the longer outage ends
its first attempt, the shorter one hits the attempt that resumes it."""

import os
import time

import pytest

from tests.integration.trainer.storage.flaky_proxy import FlakyProxy
from tests.waiting import wait_for

from .train_process import observer, start_train, tiny_spec

pytestmark = pytest.mark.slow


STEPS = 4


@pytest.fixture(scope="module")
def outages(tmp_path_factory, empo_env, s3_server):
    """One run behind the proxy, through both outages: its first attempt (window 5 s) loses the store
    after its first step for good and ends; the same command run again (window 60 s) loses it for
    30 s mid-run, waits, and finishes. Each of the two tests below ran its own attempts before (three
    in all, about a minute each); the resumed attempt serves both."""
    tmp = tmp_path_factory.mktemp("outage")
    bucket, name = s3_server.new_bucket(), "outage"
    keys = {**s3_server.env(), "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    env = {**empo_env, **keys}
    got = {"bucket": bucket}
    with pytest.MonkeyPatch.context() as mp, FlakyProxy(s3_server.endpoint) as proxy:
        for key, value in keys.items():  # the observer's own S3 client
            mp.setenv(key, value)
        store = got["store"] = observer(bucket, s3_server.endpoint, name)
        spec = got["spec"] = tiny_spec(tmp, bucket, proxy.endpoint, name)

        # past the window: the first attempt ends
        proc = start_train(spec, STEPS, {**env, "EMPO_STORAGE_OUTAGE_SECONDS": "5"})
        wait_for(lambda: proc.poll() is not None or store.exists("metrics.jsonl"), 900, 0.1, "the first step")
        proxy.down = True
        down_at = time.monotonic()
        _, got["long_err"] = proc.communicate(timeout=900)
        got["long_waited"] = time.monotonic() - down_at
        proxy.down = False
        got["long_code"], logged = proc.returncode, len(store.read_metrics())

        # within the window, in the attempt that resumes it: waited out
        proc = start_train(spec, STEPS, {**env, "EMPO_STORAGE_OUTAGE_SECONDS": "60"})
        wait_for(lambda: proc.poll() is not None or len(store.read_metrics()) > logged, 900, 0.1,
                 f"a step past the {logged} the first attempt logged")
        got["short_running_at_outage"], cut = proc.poll() is None, proxy.cut
        proxy.down = True  # mid-run: the next metrics line, checkpoint upload or LATEST waits
        time.sleep(30)  # the outage itself
        proxy.down = False
        _, got["short_err"] = proc.communicate(timeout=900)
        got["short_code"], got["short_cut"] = proc.returncode, proxy.cut - cut
        got["metrics"] = [r["step"] for r in store.read_metrics()]
        got["latest"] = store.checkpoints.latest()
        got["uploads"] = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return got


def test_a_30s_outage_mid_run_costs_nothing(outages):
    err = outages["short_err"]
    assert outages["short_running_at_outage"], err[-3000:]
    assert outages["short_cut"] > 0, "the outage hit no request"
    assert outages["short_code"] == 0, err[-3000:]
    assert "retrying for up to" in err  # the wait is shown
    assert outages["metrics"] == list(range(1, STEPS + 1))
    assert outages["latest"].step == STEPS
    assert outages["uploads"] == []


def test_an_outage_longer_than_the_window_ends_the_run_with_one_line(outages):
    err, spec = outages["long_err"], outages["spec"]
    assert outages["long_code"] == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert not [ln for ln in lines if ln.lstrip().startswith(("Traceback", 'File "')) or "ray::" in ln], err[-3000:]
    message = lines[-1]
    assert message.startswith(f"{spec}: ") and "was unavailable for more than 5 s" in message, message
    assert "run again once the store is back" in message
    assert outages["long_waited"] < 60, outages["long_waited"]  # the window, not botocore's backoff or a hang, decided
    # run again (through the shorter outage above), it resumes with nothing lost
    assert outages["short_code"] == 0, outages["short_err"][-3000:]
    assert outages["metrics"] == list(range(1, STEPS + 1))
    assert outages["uploads"] == []
