"""Storage outages against the real SeaweedFS, behind FlakyProxy: requests wait an outage out for
the configured window (a multipart upload continues where it was), a longer outage fails with one
clear line, and what interrupted writers leave behind is cleaned when the run starts again."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from empo_trainer.storage import S3Options, StorageUnavailableError, open_run_storage
from empo_trainer.storage.outage import ENV, default_window_s

from .conftest import SMALL_CHECKPOINT, s3_spec, tree, write_checkpoint
from .flaky_proxy import FlakyProxy

PARTS = dict(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, max_concurrency=2)


def _open(server, bucket, endpoint, **options):
    spec = s3_spec(server, bucket).model_copy(update={"endpoint": endpoint})
    return open_run_storage(spec, "team-a", "run-1", options=S3Options(**{**PARTS, **options}))


def _uploads(client, bucket) -> list[dict]:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_window_defaults_to_two_minutes_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert default_window_s() == 120 and S3Options().outage_window_s == 120
    monkeypatch.setenv(ENV, "7.5")
    assert S3Options().outage_window_s == 7.5
    monkeypatch.setenv(ENV, "soon")
    with pytest.raises(ValueError, match=ENV):
        S3Options()


def test_outage_mid_upload_is_waited_out_and_the_upload_continues(s3_env, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="empo_trainer.storage")
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    folder = write_checkpoint(tmp_path / "ckpt", 2, {**SMALL_CHECKPOINT, "model.safetensors": 30 * 2**20})
    with FlakyProxy(s3_env.endpoint, delay_s=0.2) as proxy:
        run = _open(s3_env, bucket, proxy.endpoint, outage_window_s=30)
        outage = {}

        def cut_mid_upload():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _uploads(client, bucket):
                time.sleep(0.05)
            time.sleep(0.3)  # a part or two in
            outage["start"] = time.monotonic()
            proxy.down = True
            time.sleep(6.0)
            proxy.down = False
            outage["end"] = time.monotonic()

        cutter = threading.Thread(target=cut_mid_upload)
        cutter.start()
        run.checkpoints.commit(2, folder)
        cutter.join()
    assert outage and proxy.cut > 0, "the outage never hit the upload"
    assert run.checkpoints.latest().step == 2
    got = tree(run.checkpoints.download(run.checkpoints.latest(), tmp_path / "back"))
    got.pop("empo-manifest.json")
    assert got == tree(folder)
    assert _uploads(client, bucket) == []  # the upload completed; nothing was left unfinished
    progress = [r.getMessage() for r in caplog.records if "retrying for up to" in r.getMessage()]
    assert progress and all(proxy.endpoint in m for m in progress)
    assert len(progress) <= 6 / 5 + 2  # at most one progress line every 5 s


def test_outage_longer_than_the_window_fails_with_one_clear_line(s3_env, caplog):
    caplog.set_level(logging.WARNING, logger="empo_trainer.storage")
    bucket = s3_env.new_bucket()
    with FlakyProxy(s3_env.endpoint) as proxy:
        run = _open(s3_env, bucket, proxy.endpoint, outage_window_s=4)
        proxy.down = True
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError) as e:
            run.append_metrics({"step": 1})
        waited = time.monotonic() - started
    message = str(e.value)
    assert 4 <= waited < 12, waited
    assert "\n" not in message
    assert f"s3://{bucket}/runs/team-a/run-1" in message and proxy.endpoint in message
    assert "unavailable for more than 4 s" in message and "EMPO_STORAGE_OUTAGE_SECONDS" in message
    assert "resumes from its latest checkpoint" in message
    assert any("retrying for up to" in r.getMessage() for r in caplog.records)


def test_throttling_for_longer_than_botocore_retries_is_waited_out(s3_env):
    """503 SlowDown for ~8 s: botocore's own 3 attempts give up after about 3 s, the window carries on."""
    bucket = s3_env.new_bucket()
    with FlakyProxy(s3_env.endpoint) as proxy:
        run = _open(s3_env, bucket, proxy.endpoint, outage_window_s=30, max_attempts=3)
        proxy.fail_always = True
        threading.Timer(8.0, lambda: setattr(proxy, "fail_always", False)).start()
        started = time.monotonic()
        run.write_bytes("eval/a.json", b"{}")
        assert time.monotonic() - started >= 7.5
        assert proxy.failed > 3
    assert s3_env.client().get_object(Bucket=bucket, Key="runs/team-a/run-1/eval/a.json")["Body"].read() == b"{}"


def test_unfinished_uploads_under_the_run_are_aborted_at_the_next_start(s3_env):
    bucket = s3_env.new_bucket()
    client = s3_env.client()
    run = open_run_storage(s3_spec(s3_env, bucket), "team-a", "run-1")
    mine = client.create_multipart_upload(Bucket=bucket, Key="runs/team-a/run-1/checkpoints/step-000004/model.safetensors")
    client.upload_part(Bucket=bucket, Key=mine["Key"], UploadId=mine["UploadId"], PartNumber=1, Body=b"x" * 2**20)
    other = client.create_multipart_upload(Bucket=bucket, Key="runs/team-a/run-10/checkpoints/step-000004/model.safetensors")
    assert run.clean_leftovers() == (1, 2**20)
    assert [u["Key"] for u in _uploads(client, bucket)] == [other["Key"]]  # another run's upload is not ours
    assert run.clean_leftovers() == (0, 0)


def test_temporary_files_in_a_local_run_are_removed_at_the_next_start(tmp_path):
    from empo_api.models import StorageSpec

    run = open_run_storage(StorageSpec(uri=str(tmp_path / "store")), "team-a", "run-1")
    folder = tmp_path / "store/team-a/run-1/checkpoints/step-000002"
    folder.mkdir(parents=True)
    (folder / ".empo-tmp-k1l2m3").write_bytes(b"\0" * 2**20)  # a writer killed mid-write
    (folder / "model.safetensors").write_bytes(b"kept")
    neighbour = tmp_path / "store/team-a/run-10"
    neighbour.mkdir(parents=True)
    (neighbour / ".empo-tmp-other").write_bytes(b"not this run's")
    assert run.clean_leftovers() == (1, 2**20)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert (neighbour / ".empo-tmp-other").exists()
