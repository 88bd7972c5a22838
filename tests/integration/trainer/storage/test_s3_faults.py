"""S3 failures a user meets, against the real SeaweedFS server: a writer killed mid-upload, bad
credentials, a missing bucket, no permission, an unreachable or throttling endpoint, and secrets
that must never show up in errors, logs, reprs or stored files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from tests.waiting import wait_for

from empo_api.models import StorageSpec
from empo_trainer.storage import (
    BucketNotFoundError,
    InvalidCredentialsError,
    PermissionDeniedError,
    S3Options,
    StorageUnavailableError,
    open_run_storage,
)

from .conftest import SMALL_CHECKPOINT, SMALL_PARTS, s3_spec, tree, write_checkpoint
from .flaky_proxy import FlakyProxy

REPO = Path(__file__).resolve().parents[4]




def test_writer_killed_mid_upload_leaves_previous_checkpoint_usable(s3_env, tmp_path):
    bucket = s3_env.new_bucket()
    run = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS)
    first = write_checkpoint(tmp_path / "step1", 1, SMALL_CHECKPOINT)
    run.checkpoints.commit(1, first)
    second = write_checkpoint(tmp_path / "step2", 2, {**SMALL_CHECKPOINT, "model.safetensors": 40 * 2**20})
    client = s3_env.client()

    def parts_uploaded() -> int:
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sum(
            len(client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
            for u in uploads
            if "/checkpoints/step-000002/" in u["Key"]
        )

    # The proxy slows every request down so the upload is reliably caught halfway (8 parts of 5 MiB).
    with FlakyProxy(s3_env.endpoint, delay_s=0.25) as proxy:
        env = {**os.environ, **s3_env.env(), "PYTHONPATH": os.pathsep.join(sys.path)}
        writer = subprocess.Popen(
            [sys.executable, str(REPO / "tests/integration/trainer/storage/commit_worker.py"), proxy.endpoint, bucket, str(second), "2"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: writer.poll() is not None or parts_uploaded() >= 2, 60, 0.02, "two uploaded parts")
            assert writer.poll() is None, f"writer finished before it could be killed: {writer.stdout.read()!r}"
            os.kill(writer.pid, signal.SIGKILL)
            assert writer.wait(timeout=10) == -signal.SIGKILL
        finally:
            if writer.poll() is None:
                os.kill(writer.pid, signal.SIGKILL)
                writer.wait()

    assert 2 <= parts_uploaded() < 8  # really halfway: the large file was never completed
    assert not run.exists("checkpoints/step-000002/empo-manifest.json")
    ref = run.checkpoints.latest()
    assert ref.step == 1
    got = tree(run.checkpoints.download(ref, tmp_path / "restore"))
    got.pop("empo-manifest.json")
    assert got == tree(first)
    # The restarted writer commits the same step over the debris, and it becomes LATEST.
    run.checkpoints.commit(2, second)
    assert run.checkpoints.latest().step == 2


def test_wrong_secret_is_a_credentials_error_naming_uri_and_fix(s3_env, monkeypatch):
    bucket = s3_env.new_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "WRONG-planted-secret-123")
    with pytest.raises(InvalidCredentialsError) as e:
        open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS)
    message = str(e.value)
    assert f"s3://{bucket}/runs/team-a/run-1" in message
    assert "SignatureDoesNotMatch" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "WRONG-planted-secret-123" not in message


def test_unknown_access_key_is_a_credentials_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
    with pytest.raises(InvalidCredentialsError, match="InvalidAccessKeyId"):
        open_run_storage(s3_spec(s3_env, s3_env.new_bucket()), "team-a", "run-1", options=SMALL_PARTS)


def test_no_credentials_at_all(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(InvalidCredentialsError, match="no usable S3 credentials"):
        open_run_storage(s3_spec(s3_env, "some-bucket"), "team-a", "run-1", options=SMALL_PARTS)


def test_missing_bucket_is_named_with_the_fix(s3_env):
    with pytest.raises(BucketNotFoundError) as e:
        open_run_storage(s3_spec(s3_env, "no-such-bucket-here"), "team-a", "run-1", options=SMALL_PARTS)
    assert "s3://no-such-bucket-here/runs/team-a/run-1" in str(e.value)
    assert "create it" in str(e.value)
    assert "no-such-bucket-here" not in {b["Name"] for b in s3_env.client().list_buckets()["Buckets"]}


def test_read_only_identity_can_read_but_not_commit(s3_env, monkeypatch, tmp_path):
    bucket = s3_env.new_bucket()
    writer = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS)
    writer.checkpoints.commit(1, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.read_only_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.read_only_secret_key)
    reader = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS)
    assert reader.checkpoints.latest().step == 1
    with pytest.raises(PermissionDeniedError, match="access denied .*s3:PutObject") as e:
        reader.checkpoints.commit(2, write_checkpoint(tmp_path / "b", 2, SMALL_CHECKPOINT))
    assert reader.uri in str(e.value)
    assert writer.checkpoints.latest().step == 1


def test_unreachable_endpoint_fails_after_retries(s3_env, unused_port):
    spec = StorageSpec(uri="s3://bucket/runs", endpoint=f"http://127.0.0.1:{unused_port}")
    options = S3Options(max_attempts=2, connect_timeout_s=1, outage_window_s=0)  # botocore's retries only
    with pytest.raises(StorageUnavailableError, match="did not answer after retries.*spec.storage.endpoint"):
        open_run_storage(spec, "team-a", "run-1", options=options)


def test_throttling_is_retried_with_backoff(s3_env):
    bucket = s3_env.new_bucket()
    with FlakyProxy(s3_env.endpoint, fail_first=2) as proxy:
        spec = StorageSpec(uri=f"s3://{bucket}/runs", endpoint=proxy.endpoint)
        run = open_run_storage(spec, "team-a", "run-1", options=S3Options(max_attempts=4))
        run.write_bytes("eval/a.json", b"{}")
        assert proxy.failed == 2
    assert run_read(s3_env, bucket, "runs/team-a/run-1/eval/a.json") == b"{}"


def test_endless_throttling_gives_up_with_unavailable_error(s3_env):
    bucket = s3_env.new_bucket()
    with FlakyProxy(s3_env.endpoint, fail_always=True) as proxy:
        spec = StorageSpec(uri=f"s3://{bucket}/runs", endpoint=proxy.endpoint)
        with pytest.raises(StorageUnavailableError, match="kept failing after retries \\(SlowDown\\)"):
            open_run_storage(spec, "team-a", "run-1", options=S3Options(max_attempts=3, outage_window_s=0))
        assert proxy.requests == 3  # without an outage window, botocore's retry mode made exactly max_attempts tries


def run_read(server, bucket: str, key: str) -> bytes:
    return server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_credentials_never_appear_in_outputs(s3_env, monkeypatch, tmp_path, caplog):
    """Plant recognisable credentials, exercise success and failure paths, then search everything."""
    caplog.set_level(logging.DEBUG)  # every logger, botocore's request logging included
    secret, key_id = s3_env.secret_key, s3_env.access_key
    bucket = s3_env.new_bucket()
    texts: list[str] = []
    run = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS)
    run.append_metrics({"step": 1, "reward/mean": 0.5})
    run.write_json("eval/step-000001.json", {"math500": 0.1})
    run.checkpoints.commit(1, write_checkpoint(tmp_path / "a", 1, SMALL_CHECKPOINT))
    ref = run.checkpoints.latest()
    dest = run.checkpoints.download(ref, tmp_path / "dl")
    texts += [repr(run), repr(run.backend), repr(run.checkpoints), repr(ref), str(run.uri)]

    def capture(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the point is to read every failure's text
            texts.extend([str(e), repr(e), "".join(traceback.format_exception(e))])
        else:
            raise AssertionError("expected a failure")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret + "-but-wrong")
    capture(lambda: open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS))
    unchecked = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1", options=SMALL_PARTS, check=False)
    capture(lambda: unchecked.write_bytes("eval/x.json", b"1"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    capture(lambda: open_run_storage(s3_spec(s3_env, "no-such-bucket-here"), "team-a", "run-1", options=SMALL_PARTS))

    stored = [run_read(s3_env, bucket, o["Key"]).decode("utf-8", "replace")
              for o in s3_env.client().list_objects_v2(Bucket=bucket)["Contents"] if o["Size"] < 10**6]
    local = [p.read_text("utf-8", "replace") for p in dest.rglob("*.json")]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("empo")]
    everything_logged = [r.getMessage() + repr(r.args) for r in caplog.records]
    assert ours and stored and texts and len(everything_logged) > 50  # the search is not vacuous
    assert any("checkpoints/LATEST" in t for t in stored) or run.exists("checkpoints/LATEST")
    for text in texts + stored + local + everything_logged:
        assert secret not in text
    for text in texts + stored + local + ours:
        assert key_id not in text

