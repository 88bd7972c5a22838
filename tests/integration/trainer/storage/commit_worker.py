"""A separate writer process for the kill test: commits one checkpoint to S3, then exits.

    python tests/integration/trainer/storage/commit_worker.py ENDPOINT BUCKET FOLDER STEP
Credentials come from the AWS_* environment, as in a trainer pod.
"""

import sys
from pathlib import Path

from empo_api.models import StorageSpec
from empo_trainer.storage import S3Options, open_run_storage

if __name__ == "__main__":
    endpoint, bucket, folder, step = sys.argv[1:5]
    options = S3Options(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, max_concurrency=2)
    run = open_run_storage(StorageSpec(uri=f"s3://{bucket}/runs", endpoint=endpoint), "team-a", "run-1", options=options)
    run.checkpoints.commit(int(step), Path(folder))
