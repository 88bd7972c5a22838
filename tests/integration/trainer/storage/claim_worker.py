"""One claimer of test_claim_race's process races, run in a process of its own (multiprocessing's
spawn): per round, wait for the others, claim an attempt, wait again, then report the attempt and
whether this claimer still passes the fence (only the newest attempt may)."""

from __future__ import annotations

from empo_api.models import StorageSpec
from empo_trainer.storage import S3Options, SupersededError, open_run_storage


def claim_rounds(spec_json: str, run_name: str, rounds: int, claimer: int, barrier, results) -> None:
    try:
        store = open_run_storage(StorageSpec.model_validate_json(spec_json), "team-a", run_name,
                                 options=S3Options(max_attempts=3))
        for round_ in range(rounds):
            barrier.wait(120)
            attempt = store.claim_attempt(claimer=claimer)
            barrier.wait(120)  # every claim of the round is done before anyone checks the fence
            try:
                store.check_fence()
                newest = True
            except SupersededError:
                newest = False
            results.put((round_, claimer, attempt, newest))
            barrier.wait(120)  # nobody claims the next round before every fence check of this one
    except BaseException as exc:  # the parent reports it; a broken barrier frees the others
        results.put((-1, claimer, f"{type(exc).__name__}: {exc}", False))
        barrier.abort()
