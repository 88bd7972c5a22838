"""One attempt of a run, as the driver and the learner of rank 0 write it, for the kill -9 and
zombie trials of test_fencing: claim an attempt, resume from LATEST, then per step append the
metrics line and commit a checkpoint, up to LIMIT. Exits 3 when a newer attempt supersedes it.

    python tests/integration/trainer/storage/attempt_worker.py STORAGE_SPEC_JSON WORK_DIR LIMIT STEP_SECONDS
"""

import json
import sys
import time
from pathlib import Path

from empo_api.models import StorageSpec
from empo_trainer.storage import S3Options, SupersededError, open_run_storage

if __name__ == "__main__":
    spec_json, work, limit, step_seconds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    options = S3Options(max_concurrency=2, max_attempts=3)
    run = open_run_storage(StorageSpec.model_validate_json(spec_json), "team-a", "run-1", options=options)
    attempt = run.claim_attempt()
    latest = run.checkpoints.latest()
    start = latest.step if latest else 0
    run.trim_metrics(start)
    print(json.dumps({"attempt": attempt, "resumed_from": start}), flush=True)
    try:
        for step in range(start + 1, limit + 1):
            time.sleep(step_seconds)  # "training"
            run.append_metrics({"step": step, "attempt": attempt})
            folder = work / f"a{attempt}-s{step}"
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"shard-{i}.bin").write_bytes(f"{attempt}:{step}:{i}".encode() * 20_000)
            run.checkpoints.commit(step, folder)
    except SupersededError as exc:
        print(f"superseded: {exc}", flush=True)
        sys.exit(3)
