"""report.html from a run stored on S3 (real SeaweedFS), published into the run; the report itself is
tests/unit/trainer/evaluation/test_report.py."""

from __future__ import annotations

from empo_api.models import StorageSpec
from empo_trainer.evaluation.report import write_report
from empo_trainer.storage import open_run_storage
from tests.unit.trainer.evaluation.test_report import PNG_MAGIC, _check_report, stored_run  # noqa: F401  (fixture)


def test_report_from_an_s3_run(s3_env, stored_run, tmp_path):  # noqa: F811
    bucket = s3_env.new_bucket()
    remote = open_run_storage(StorageSpec(uri=f"s3://{bucket}/runs", endpoint=s3_env.endpoint), "team", "run-a")
    for key in stored_run.list():
        remote.write_bytes(key, stored_run.read_bytes(key))
    local = write_report(remote.uri, endpoint=s3_env.endpoint)  # publishes into the run
    _check_report(local)
    assert remote.read_bytes("report.html").decode() == local.read_text()
    assert remote.read_bytes("plots/reward.png").startswith(PNG_MAGIC)
